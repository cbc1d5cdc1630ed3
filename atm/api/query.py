"""The query string of collection endpoints: ``page``, ``results_per_page`` and ``q``.

Everything is checked against the model's columns before any SQL runs, and each
value is converted to its column's type, so a bad query is a 400, never a 500.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from atm.api.errors import invalid
from atm.api.introspect import Resource

DEFAULT_RESULTS_PER_PAGE = 10
MAX_RESULTS_PER_PAGE = 100
MAX_INTEGER = 2**63 - 1
MAX_IN_VALUES = 1000

VALUE_OPERATORS = ("eq", "neq", "lt", "le", "gt", "ge", "like")
LIST_OPERATORS = ("in", "not_in")
NULL_OPERATORS = ("is_null", "is_not_null")
OPERATORS = VALUE_OPERATORS + LIST_OPERATORS + NULL_OPERATORS
DIRECTIONS = ("asc", "desc")
Q_KEYS = ("filters", "order_by")


@dataclass
class ListQuery:
    """A checked collection query, ready for :meth:`atm.database.Database.page_rows`."""

    page: int = 1
    results_per_page: int = DEFAULT_RESULTS_PER_PAGE
    filters: list[tuple[str, str, Any]] = field(default_factory=list)
    order_by: list[tuple[str, str]] = field(default_factory=list)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.results_per_page

    def total_pages(self, num_results: int) -> int:
        return int(math.ceil(num_results / self.results_per_page))


def _positive_int(args: Mapping[str, str], name: str, default: int) -> int:
    raw = args.get(name)
    if raw is None:
        return default
    try:
        number = int(raw.strip())
    except ValueError:
        raise invalid(f"{name} must be a positive integer, got {raw!r}", name) from None
    if number < 1 or number > MAX_INTEGER:
        raise invalid(f"{name} must be a positive integer, got {raw!r}", name)
    return number


def _column_value(resource: Resource, name: str, value: Any, where: str) -> Any:
    """A filter value converted to the column's type, or a 400."""
    kind = resource.python_type(name)
    expected = {int: "an integer", float: "a number", datetime: "an ISO 8601 time",
                str: "a string"}.get(kind, "a string")
    if value is None:
        return None
    if kind is None:
        raise invalid(f"{where}: column {name!r} holds JSON and can only be tested "
                      "with is_null / is_not_null", "q")
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        if abs(value) <= MAX_INTEGER:
            return value
    elif kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isfinite(value) and abs(value) <= 1e300:
            return float(value)
    elif kind is datetime and isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:  # stored times are naive UTC
                parsed = parsed.astimezone(UTC).replace(tzinfo=None)
            return parsed
    elif kind not in (int, float, datetime) and isinstance(value, str) and "\x00" not in value:
        return value
    raise invalid(f"{where}: value {value!r} for column {name!r} must be {expected}", "q")


def _filter(resource: Resource, raw: Any, index: int) -> tuple[str, str, Any]:
    where = f"filter {index}"
    if not isinstance(raw, dict):
        raise invalid(f"{where} must be an object like "
                      '{"name": "status", "op": "eq", "val": "complete"}', "q")
    unknown = sorted(set(raw) - {"name", "op", "val"})
    if unknown:
        raise invalid(f"{where} has unknown key(s): {', '.join(unknown)}; "
                      "a filter has name, op and val", "q")
    name, op = raw.get("name"), raw.get("op", "eq")
    if not isinstance(name, str) or name not in resource.columns:
        raise invalid(f"{where}: {resource.table} has no column {name!r}; columns are: "
                      f"{', '.join(resource.columns)}", "q")
    if op not in OPERATORS:
        raise invalid(f"{where}: unknown op {op!r}; ops are: {', '.join(OPERATORS)}", "q")
    if op in NULL_OPERATORS:
        return name, op, None
    if "val" not in raw:
        raise invalid(f"{where}: op {op!r} needs a val", "q")
    value = raw["val"]
    if op in LIST_OPERATORS:
        if not isinstance(value, list) or len(value) > MAX_IN_VALUES:
            raise invalid(f"{where}: op {op!r} needs a list of at most {MAX_IN_VALUES} "
                          f"values as val, got {value!r}", "q")
        return name, op, [_column_value(resource, name, v, where) for v in value]
    if value is None and op not in ("eq", "neq"):
        raise invalid(f"{where}: op {op!r} cannot compare with null; use is_null", "q")
    if op == "like" and resource.python_type(name) is not str:
        raise invalid(f"{where}: op 'like' needs a text column; {name!r} is not one", "q")
    return name, op, _column_value(resource, name, value, where)


def _order(resource: Resource, raw: Any, index: int) -> tuple[str, str]:
    where = f"order_by {index}"
    if not isinstance(raw, dict) or set(raw) - {"field", "direction"}:
        raise invalid(f'{where} must be an object like {{"field": "id", "direction": "desc"}}',
                      "q")
    name, direction = raw.get("field"), raw.get("direction", "asc")
    if not isinstance(name, str) or name not in resource.columns:
        raise invalid(f"{where}: {resource.table} has no column {name!r}; columns are: "
                      f"{', '.join(resource.columns)}", "q")
    if resource.python_type(name) is None:
        raise invalid(f"{where}: column {name!r} holds JSON and cannot be ordered by", "q")
    if direction not in DIRECTIONS:
        raise invalid(f"{where}: direction must be asc or desc, got {direction!r}", "q")
    return name, direction


def parse_list_query(resource: Resource, args: Mapping[str, str]) -> ListQuery:
    """Check ``page``, ``results_per_page`` and ``q`` of a collection request."""
    query = ListQuery(
        page=_positive_int(args, "page", 1),
        results_per_page=min(MAX_RESULTS_PER_PAGE, _positive_int(
            args, "results_per_page", DEFAULT_RESULTS_PER_PAGE)),
    )
    raw = args.get("q")
    if raw is None or not raw.strip():
        return query
    try:
        q = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise invalid(f"q is not valid JSON: {e}", "q") from None
    if not isinstance(q, dict):
        raise invalid('q must be a JSON object like {"filters": [...], "order_by": [...]}', "q")
    unknown = sorted(set(q) - set(Q_KEYS))
    if unknown:
        raise invalid(f"q has unknown key(s): {', '.join(unknown)}; supported keys are: "
                      f"{', '.join(Q_KEYS)}", "q")
    filters, order_by = q.get("filters", []), q.get("order_by", [])
    if not isinstance(filters, list) or not isinstance(order_by, list):
        raise invalid("q: filters and order_by must be lists", "q")
    query.filters = [_filter(resource, f, i) for i, f in enumerate(filters, 1)]
    query.order_by = [_order(resource, o, i) for i, o in enumerate(order_by, 1)]
    return query
