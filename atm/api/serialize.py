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

from atm import constants as C
from atm.api.context import api_context
from atm.api.introspect import ENCODED_SUFFIX, Resource, resource_of
from atm.database import Database
from atm.models import Datarun

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

    def flat(self, resource: Resource, row: dict[str, Any]) -> dict[str, Any]:
        """Columns (and encoded JSON columns) of a row, without relations."""
        data = {name: row[name] for name in resource.columns}
        for name in resource.converted_columns:
            data[name] = plain_value(data[name])
        for name in resource.json_columns:
            data[name + ENCODED_SUFFIX] = encode_pairs_64(data[name])
        if resource.model is Datarun:
            self._dataruns.append(data)
        return data

    def full(self, resource: Resource, row: dict[str, Any]) -> dict[str, Any]:
        """Columns plus related objects one level deep."""
        data = self.flat(resource, row)
        for name, relation in resource.relations.items():
            target = resource_of(relation.model)
            related = row[name]
            if relation.many:
                data[name] = [self.flat(target, item) for item in related]
            else:
                data[name] = None if related is None else self.flat(target, related)
        return data

    def finish(self) -> None:
        """Attach ``progress`` to every datarun object built so far."""
        if not self._dataruns:
            return
        # The progress of a complete datarun never changes (it ends only when nothing of
        # it runs, and nothing starts after), so each app computes it once: list pages of
        # classifiers embed their datarun, and this spares most of them four queries.
        final = api_context().final_progress
        wanted = {d["id"] for d in self._dataruns if d["id"] not in final}
        progress = self.db.datarun_progress(sorted(wanted)) if wanted else {}
        for data in self._dataruns:
            run_id = data["id"]
            figures = final.get(run_id) or progress.get(run_id)
            if data["status"] == C.DATARUN_COMPLETE and figures is not None:
                _remember(final, run_id, figures)
            data["progress"] = None if figures is None else dict(figures)  # flat figures
        self._dataruns = []


MAX_FINAL_PROGRESS = 10_000


def _remember(final: dict[int, dict[str, Any]], run_id: int, figures: dict[str, Any]) -> None:
    if run_id not in final and len(final) >= MAX_FINAL_PROGRESS:
        final.pop(next(iter(final)))  # the oldest entry
    final[run_id] = figures


def serialize_one(db: Database, resource: Resource, row: dict[str, Any]) -> dict[str, Any]:
    """One object of the item format, from a row of :meth:`Database.get_row`."""
    serializer = Serializer(db)
    data = serializer.full(resource, row)
    serializer.finish()
    return data


def serialize_many(db: Database, resource: Resource,
                   rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``objects`` of the collection format, from rows of :meth:`Database.page_rows`."""
    serializer = Serializer(db)
    data = [serializer.full(resource, row) for row in rows]
    serializer.finish()
    return data
