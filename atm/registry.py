"""Registering datasets and dataruns, with every option checked first.

Shared by the CLI, the Python API and the REST API, so the three accept and
reject exactly the same input with the same messages. Nothing is written
unless every check passed.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from atm import constants as C
from atm.data import summarize_dataset
from atm.database import Database
from atm.exceptions import InvalidInputError
from atm.methods import load_method
from atm.metrics import judgment_metric_for
from atm.models import Datarun, Dataset
from atm.tuning import check_selector, check_tuner

DATARUN_OPTIONS = tuple(C.DATARUN_DEFAULTS)
MAX_OPTION_INTEGER = 2**31 - 1


def add_dataset(db: Database, train_path: str, test_path: str | None = None,
                class_column: str = "class", name: str | None = None,
                description: str | None = None,
                max_decompressed_mb: float | None = C.MAX_DECOMPRESSED_MB) -> Dataset:
    """Check a CSV (and optional test CSV), compute its metadata, insert a row."""
    summary = summarize_dataset(train_path, test_path, class_column, name, description,
                                max_decompressed_mb)
    if len(summary.name) > 100:
        raise InvalidInputError("name must be at most 100 characters", field="name")
    if summary.description and len(summary.description) > 1000:
        raise InvalidInputError("description must be at most 1000 characters",
                                field="description")
    return db.create_dataset(**summary.as_row())


def _integer(options: Mapping[str, Any], name: str, minimum: int) -> int:
    value = options[name]
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidInputError(f"{name} must be an integer, got {value!r}", field=name)
    try:
        number = int(value)
    except ValueError:
        raise InvalidInputError(f"{name} must be an integer, got {value!r}", field=name) from None
    if number < minimum:
        raise InvalidInputError(f"{name} must be at least {minimum}, got {number}", field=name)
    if number > MAX_OPTION_INTEGER:  # the columns are 32-bit integers
        raise InvalidInputError(f"{name} must be at most {MAX_OPTION_INTEGER}, got {number}",
                                field=name)
    return number


def _text(options: Mapping[str, Any], name: str) -> str:
    value = options[name]
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be a string, got {value!r}", field=name)
    return value


def parse_deadline(value: Any) -> datetime | None:
    """``YYYY-MM-DD HH:MM`` (or ISO 8601), UTC."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"deadline must be a string, got {value!r}", field="deadline")
    for form in ("%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(value, form)
        except ValueError:
            pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(
            f"deadline {value!r} is not a date; use 'YYYY-MM-DD HH:MM' (UTC)", field="deadline"
        ) from None
    if parsed.tzinfo is not None:
        # Stored naive in UTC, as the database clock it is compared with.
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def check_datarun_options(options: Mapping[str, Any], k_classes: int) -> dict[str, Any]:
    """Validate datarun options (unknown names included) and fill in defaults.

    Returns the datarun's column values plus ``partitions`` (the hyperpartition rows).
    """
    unknown = sorted(set(options) - set(DATARUN_OPTIONS))
    if unknown:
        raise InvalidInputError(
            f"unknown datarun option(s): {', '.join(unknown)}; known options are: "
            f"{', '.join(DATARUN_OPTIONS)}",
            field=unknown[0],
        )
    merged = {**C.DATARUN_DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    tuner = check_tuner(_text(merged, "tuner"))
    selector = check_selector(_text(merged, "selector"))
    metric = _text(merged, "metric")
    judgment_metric_for(metric, k_classes)
    target = _text(merged, "score_target")
    if target.endswith("_judgment_metric"):
        target = target[: -len("_judgment_metric")]
    if target not in C.SCORE_TARGETS:
        raise InvalidInputError(
            f"unknown score_target {merged['score_target']!r}; use one of: "
            f"{', '.join(C.SCORE_TARGETS)}",
            field="score_target",
        )
    budget_type = _text(merged, "budget_type")
    if budget_type not in C.BUDGET_TYPES:
        raise InvalidInputError(
            f"unknown budget_type {budget_type!r}; use one of: {', '.join(C.BUDGET_TYPES)}",
            field="budget_type",
        )
    deadline = parse_deadline(merged["deadline"])
    if deadline is not None:
        budget_type = C.BUDGET_WALLTIME
    methods = merged["methods"]
    if isinstance(methods, str):
        methods = [methods]
    if not isinstance(methods, Sequence) or not methods or not all(
        isinstance(m, str) for m in methods
    ):
        raise InvalidInputError(
            f"methods must be a non-empty list of method names, got {methods!r}", field="methods"
        )
    partitions = []
    for code in dict.fromkeys(methods):
        method = load_method(code)
        for partition in method.get_hyperpartitions():
            partitions.append({
                "method": method.code,
                "categorical_hyperparameters": [list(p) for p in partition.categoricals],
                "constant_hyperparameters": [list(p) for p in partition.constants],
                "tunable_hyperparameters": [list(p) for p in partition.tunables],
            })
    description = merged["description"]
    if description is not None and not isinstance(description, str):
        raise InvalidInputError(f"description must be a string, got {description!r}",
                                field="description")
    return {
        "description": (description or f"{tuner}__{selector}")[:200],
        "tuner": tuner,
        "selector": selector,
        "metric": metric,
        "score_target": C.SCORE_TARGETS[target],
        "budget_type": budget_type,
        "budget": _integer(merged, "budget", 1),
        "deadline": deadline,
        "k_window": _integer(merged, "k_window", 1),
        "r_minimum": _integer(merged, "r_minimum", 1),
        "gridding": _integer(merged, "gridding", 0),
        "priority": _integer(merged, "priority", -(10**9)),
        "partitions": partitions,
    }


def add_datarun(db: Database, dataset_id: int, **options: Any) -> Datarun:
    """Check the options, then create a datarun and its hyperpartitions."""
    dataset = db.get_dataset(dataset_id)
    checked = check_datarun_options(options, dataset.k_classes)
    partitions = checked.pop("partitions")
    return db.create_datarun(
        partitions,
        dataset_id=dataset.id,
        random_seed=random.SystemRandom().randrange(2**31 - 1),
        **checked,
    )
