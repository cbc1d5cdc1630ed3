"""Rows as the JSON objects of the wire format (flask-restless 0.17 shape).

An object carries its columns, ``<json column>_64`` for old clients, and its
related objects one level deep; datarun objects also carry ``progress``.
"""

from __future__ import annotations

import base64
import math
import pickle
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from atm.api.introspect import ENCODED_SUFFIX, Resource, resource_of
from atm.database import Database
from atm.models import Base, Datarun

# Protocol 3 is what the original ATM served (values start with "gAN").
PICKLE_PROTOCOL = 3


def plain_value(value: Any) -> Any:
    """A column value as JSON: ISO 8601 times, numbers as numbers, no NaN."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def encode_pairs_64(value: Any) -> str | None:
    """Base64 of a pickled list of ``(name, value)`` pairs (output only, never read)."""
    if value is None:
        return None
    if isinstance(value, dict):
        pairs = list(value.items())
    else:
        pairs = [tuple(item) if isinstance(item, list) else item for item in value]
    return base64.b64encode(pickle.dumps(pairs, protocol=PICKLE_PROTOCOL)).decode("ascii")


class Serializer:
    """Builds the objects of one response, then adds datarun progress in one query."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._dataruns: list[dict[str, Any]] = []

    def flat(self, resource: Resource, row: Base) -> dict[str, Any]:
        """Columns (and encoded JSON columns) of a row, without relations."""
        data = {name: plain_value(getattr(row, name)) for name in resource.columns}
        for name in resource.json_columns:
            data[name + ENCODED_SUFFIX] = encode_pairs_64(data[name])
        if resource.model is Datarun:
            self._dataruns.append(data)
        return data

    def full(self, resource: Resource, row: Base) -> dict[str, Any]:
        """Columns plus related objects one level deep."""
        data = self.flat(resource, row)
        for name, relation in resource.relations.items():
            target = resource_of(relation.model)
            related = getattr(row, name)
            if relation.many:
                data[name] = [self.flat(target, item) for item in related]
            else:
                data[name] = None if related is None else self.flat(target, related)
        return data

    def finish(self) -> None:
        """Attach ``progress`` to every datarun object built so far."""
        if not self._dataruns:
            return
        progress = self.db.datarun_progress([d["id"] for d in self._dataruns])
        for data in self._dataruns:
            data["progress"] = progress.get(data["id"])
        self._dataruns = []


def serialize_one(db: Database, resource: Resource, row: Base) -> dict[str, Any]:
    """One object of the item format."""
    serializer = Serializer(db)
    data = serializer.full(resource, row)
    serializer.finish()
    return data


def serialize_many(db: Database, resource: Resource, rows: Iterable[Base]) -> list[dict[str, Any]]:
    """The ``objects`` of the collection format."""
    serializer = Serializer(db)
    data = [serializer.full(resource, row) for row in rows]
    serializer.finish()
    return data
