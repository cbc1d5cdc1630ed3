"""Helpers shared by the benchmark scripts (arguments, tables, JSON, data sets, catalog).

Each ``bench/<name>.py`` imports this module from its own folder, so the scripts
run alone as ``python bench/<name>.py [--quick] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

DEMOS_DIR = REPO / "atm" / "demos"


def parse_args(description: str, extra: Any = None) -> argparse.Namespace:
    """``--quick`` and ``--json PATH``, plus whatever ``extra(parser)`` adds."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a minutes-long version")
    parser.add_argument("--json", metavar="PATH", help="write the figures as one flat JSON object")
    if extra is not None:
        extra(parser)
    return parser.parse_args()


def machine() -> str:
    """One line about the machine the figures come from."""
    try:
        load = "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "load n/a"
    return (f"{platform.node()} · {os.cpu_count()} cores · Python {platform.python_version()}"
            f" · {platform.machine()} · {load} (shared machine: others run tests meanwhile)")


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), nearest rank."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return float(ordered[rank])


def print_table(title: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A plain aligned text table."""
    text_rows = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in text_rows)) if text_rows else len(str(h))
              for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in text_rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
    return str(value)


def write_json(path: str | None, figures: dict[str, Any]) -> None:
    """Write the flat figures object (NaN becomes null) when ``--json`` was given."""
    if not path:
        return
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
             for k, v in figures.items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(clean, indent=2, sort_keys=True) + "\n")
    print(f"\nfigures written to {path}")


class Stopwatch:
    """``with Stopwatch() as w: ...; w.seconds``."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start


# -- data sets -----------------------------------------------------------------

def wait_http(url: str, timeout: float = 60.0) -> None:
    """Return once ``url`` answers an HTTP GET; raise after ``timeout`` seconds."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                response.read()
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:g} s")


def synthetic_csv(path: Path, seed: int, n_samples: int = 300, n_features: int = 10) -> Path:
    """A ``make_classification`` set written as a CSV with a ``class`` column."""
    import pandas as pd
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=n_samples, n_features=n_features, n_informative=5,
                               n_redundant=2, n_classes=2, flip_y=0.05, random_state=seed)
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(n_features)])
    frame["class"] = y
    frame.to_csv(path, index=False)
    return path


# -- the method catalog as an Optuna space ---------------------------------------

def catalog(methods: Sequence[str]) -> list[Any]:
    """The hyperpartitions of ``methods`` exactly as a datarun enumerates them."""
    from atm.methods import load_method

    return [p for code in methods for p in load_method(code).get_hyperpartitions()]


def suggest_partition_params(trial: Any, partitions: Sequence[Any]) -> tuple[Any, dict[str, Any]]:
    """Suggest a hyperpartition and its tunables on an Optuna trial.

    The conditional space is the catalog's own: the method, then the categorical
    choices of that method (one categorical over its hyperpartitions), then each
    tunable of the chosen hyperpartition, log-scaled where the catalog says ``*_exp``.
    """
    by_method: dict[str, list[int]] = {}
    for index, partition in enumerate(partitions):
        by_method.setdefault(partition.method, []).append(index)
    method = trial.suggest_categorical("method", sorted(by_method))
    choices = by_method[method]
    index = choices[0]
    if len(choices) > 1:
        index = trial.suggest_categorical(f"{method}:partition", choices)
    partition = partitions[index]
    params = dict(partition.categoricals)
    params.update(partition.constants)
    for name, spec in partition.tunables:
        key = f"{method}:{index}:{name}"
        if "values" in spec:
            params[name] = trial.suggest_categorical(key, list(spec["values"]))
            continue
        low, high = spec["range"]
        kind = spec["type"]
        if kind == "int":
            params[name] = trial.suggest_int(key, int(low), int(high))
        elif kind == "int_exp":
            params[name] = trial.suggest_int(key, int(low), int(high), log=True)
        elif kind == "float_exp":
            params[name] = trial.suggest_float(key, float(low), float(high), log=True)
        else:
            params[name] = trial.suggest_float(key, float(low), float(high))
    return partition, params


def quiet_optuna() -> None:
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)


def have_optuna() -> bool:
    try:
        import optuna  # noqa: F401
    except ImportError:
        print("optuna is not installed: pip install -e '.[bench]' (the Optuna side is skipped)")
        return False
    return True
