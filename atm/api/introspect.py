"""What the REST API exposes, read from the SQLAlchemy models: one place for the
endpoints, the serializer and the OpenAPI document, so they cannot drift apart.

Adding a column or a table to :mod:`atm.models` (and :data:`atm.models.TABLES`)
is all it takes for it to appear in every endpoint and in the documentation.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Column, inspect

from atm.models import TABLES, Base

# Serialized next to every JSON column, for clients of the original ATM.
ENCODED_SUFFIX = "_64"


@dataclass(frozen=True)
class Relation:
    """A relationship of a model, as served one level deep."""

    name: str
    table: str
    model: type[Base]
    many: bool


@dataclass(frozen=True)
class Resource:
    """One table of the REST API: its columns and relationships."""

    table: str
    model: type[Base]
    columns: dict[str, Column]
    relations: dict[str, Relation]

    @property
    def singular(self) -> str:
        return self.table[:-1] if self.table.endswith("s") else self.table

    @property
    def schema_name(self) -> str:
        return self.model.__name__

    @functools.cached_property
    def json_columns(self) -> list[str]:
        """Columns that hold JSON; each is also served base64-pickled as ``<name>_64``."""
        return [name for name, column in self.columns.items() if is_json(column)]

    @functools.cached_property
    def converted_columns(self) -> list[str]:
        """Columns whose values need :func:`atm.api.serialize.plain_value` (times and
        floats); the others (ids, text, flags, JSON) are served as read."""
        plain = (int, str, bool, type(None))
        return [name for name in self.columns
                if not is_json(self.columns[name]) and self.python_type(name) not in plain]

    def python_type(self, name: str) -> type | None:
        """The Python type of a column's values, or None for JSON columns."""
        column = self.columns[name]
        if is_json(column):
            return None
        try:
            return column.type.python_type
        except NotImplementedError:
            return str


def is_json(column: Column) -> bool:
    return isinstance(column.type, JSON)


def _table_of(model: type[Base]) -> str:
    for table, candidate in TABLES.items():
        if candidate is model:
            return table
    return model.__tablename__


@functools.cache
def resources() -> dict[str, Resource]:
    """Every table of :data:`atm.models.TABLES`, keyed by its URL name."""
    found = {}
    for table, model in TABLES.items():
        mapper = inspect(model)
        columns = {attr.key: attr.columns[0] for attr in mapper.column_attrs}
        relations = {
            rel.key: Relation(rel.key, _table_of(rel.mapper.class_), rel.mapper.class_,
                              rel.uselist)
            for rel in mapper.relationships
        }
        found[table] = Resource(table, model, columns, relations)
    return found


def resource_of(model: type[Base]) -> Resource:
    """The resource serving a model."""
    return resources()[_table_of(model)]


def column_schema(column: Column) -> dict[str, Any]:
    """The OpenAPI 3.0 schema of a column's served value."""
    if is_json(column):
        schema: dict[str, Any] = {"description": "JSON value"}
    else:
        try:
            kind = column.type.python_type
        except NotImplementedError:
            kind = str
        if kind is bool:
            schema = {"type": "boolean"}
        elif kind is int:
            schema = {"type": "integer"}
        elif kind is float:
            schema = {"type": "number"}
        elif kind in (datetime, date):
            schema = {"type": "string", "format": "date-time" if kind is datetime else "date"}
        else:
            schema = {"type": "string"}
            length = getattr(column.type, "length", None)
            if length:
                schema["maxLength"] = length
    if column.nullable and not column.primary_key:
        schema["nullable"] = True
    return schema
