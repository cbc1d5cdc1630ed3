"""Reading request bodies: JSON objects checked field by field before anything is written."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flask import request
from sqlalchemy import String

from atm.api.errors import ApiError, invalid
from atm.api.introspect import Resource

JSON_TYPES = ("application/json",)


def is_json_request() -> bool:
    mimetype = request.mimetype or ""
    return mimetype in JSON_TYPES or mimetype.endswith("+json")


def _check_no_nul(value: Any, where: str = "body") -> None:
    """Databases refuse NUL characters in text; refuse them here, with a 400."""
    if isinstance(value, str) and "\x00" in value:
        raise invalid(f"{where} contains a NUL character", where.split(".")[0])
    if isinstance(value, dict):
        for key, item in value.items():
            _check_no_nul(key, where)
            _check_no_nul(item, key if where == "body" else where)
    elif isinstance(value, list):
        for item in value:
            _check_no_nul(item, where)


def read_json_object() -> dict[str, Any]:
    """The request's JSON object body, or a 415 / 400 saying what is wrong with it."""
    if not is_json_request():
        raise ApiError(415, f"send a JSON body with Content-Type: application/json "
                            f"(got {request.mimetype or 'no Content-Type'!r})")
    raw = request.get_data(cache=True)
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise ApiError(400, f"malformed JSON body: {e}", "Malformed JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the JSON body must be an object, got {type(body).__name__}",
                       "Invalid input", {"body": "must be a JSON object"})
    _check_no_nul(body)
    return body


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def check_fields(body: Mapping[str, Any], spec: Mapping[str, tuple[type, bool]],
                 what: str) -> None:
    """Every field known, present when required, and of its type (``(type, required)``)."""
    unknown = sorted(set(body) - set(spec))
    if unknown:
        raise ApiError(400, f"unknown field(s) for {what}: {', '.join(unknown)}; known fields "
                            f"are: {', '.join(spec)}", "Invalid input",
                       {name: "unknown field" for name in unknown})
    missing = [name for name, (_, required) in spec.items()
               if required and body.get(name) is None]
    if missing:
        raise ApiError(400, f"missing required field(s) for {what}: {', '.join(missing)}",
                       "Invalid input", {name: "required" for name in missing})
    for name, (kind, _) in spec.items():
        value = body.get(name)
        if value is None:
            continue
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise invalid(f"{name} must be an integer, got {value!r}", name)
        if kind is str and not isinstance(value, str):
            raise invalid(f"{name} must be a string, got {value!r}", name)


def check_lengths(resource: Resource, values: Mapping[str, Any]) -> None:
    """Text values fit their columns (a database would refuse them later)."""
    for name, value in values.items():
        column = resource.columns.get(name)
        if column is None or not isinstance(value, str):
            continue
        length = getattr(column.type, "length", None) if isinstance(column.type, String) else None
        if length and len(value) > length:
            raise invalid(f"{name} must be at most {length} characters, got {len(value)}", name)
