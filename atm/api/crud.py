"""Generated read endpoints for every table of :data:`atm.models.TABLES`.

``GET /api/<table>`` (collection), ``GET /api/<table>/<id>`` (object) and
``GET /api/<table>/<id>/<relation>`` (children as a collection, or the related
object for a to-one relation), in the flask-restless 0.17 wire format.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from atm.api.actions import ACTION_METHODS
from atm.api.context import api_context
from atm.api.errors import ApiError
from atm.api.introspect import Resource, resource_of, resources
from atm.api.query import MAX_INTEGER, ListQuery, parse_list_query
from atm.api.serialize import serialize_many, serialize_one
from atm.exceptions import NotFoundError

API_PREFIX = "/api"


def _check_id(resource: Resource, row_id: int) -> None:
    if row_id > MAX_INTEGER:
        raise NotFoundError(f"{resource.singular} {row_id} does not exist")


def collection(resource: Resource, query: ListQuery, num_results: int,
               objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The collection format: ``num_results``, ``objects``, ``page``, ``total_pages``."""
    return {
        "num_results": num_results,
        "objects": objects,
        "page": query.page,
        "total_pages": query.total_pages(num_results),
    }


def list_view(table: str) -> ResponseReturnValue:
    """A page of a table's objects, filtered and ordered by ``q``."""
    resource = resources()[table]
    query = parse_list_query(resource, request.args)
    db = api_context().db
    total, rows = db.page_rows(resource.model, query.filters, query.order_by,
                               query.offset, query.results_per_page)
    return jsonify(collection(resource, query, total, serialize_many(db, resource, rows)))


def item_view(table: str, row_id: int) -> ResponseReturnValue:
    """One object with its related objects."""
    resource = resources()[table]
    _check_id(resource, row_id)
    db = api_context().db
    return jsonify(serialize_one(db, resource, db.get_row(resource.model, row_id)))


def relation_view(table: str, row_id: int, relation: str) -> ResponseReturnValue:
    """The children of one object (collection format), or its to-one related object."""
    resource = resources()[table]
    if relation not in resource.relations:
        allowed = ACTION_METHODS.get((table, relation))
        if allowed:
            raise ApiError(405, f"{request.method} is not allowed on {request.path}; use "
                                f"{', '.join(allowed)}", headers={"Allow": ", ".join(allowed)})
        raise ApiError(404, f"{table} have no relation {relation!r}; relations are: "
                            f"{', '.join(resource.relations)}")
    _check_id(resource, row_id)
    db = api_context().db
    target = resource_of(resource.relations[relation].model)
    if not resource.relations[relation].many:
        parent = db.get_row(resource.model, row_id)
        related = parent[relation]
        if related is None:
            raise NotFoundError(f"{resource.singular} {row_id} has no {relation}")
        return jsonify(serialize_one(db, target, db.get_row(target.model, related["id"])))
    query = parse_list_query(target, request.args)
    total, rows = db.page_rows(target.model, query.filters, query.order_by, query.offset,
                               query.results_per_page,
                               parent=(resource.model, row_id, relation))
    return jsonify(collection(target, query, total, serialize_many(db, target, rows)))


def build_crud_blueprint() -> Blueprint:
    """A blueprint with the three read endpoints of every resource."""
    blueprint = Blueprint("crud", __name__, url_prefix=API_PREFIX)
    for table in resources():
        blueprint.add_url_rule(f"/{table}", f"list_{table}", list_view,
                               methods=["GET"], defaults={"table": table})
        blueprint.add_url_rule(f"/{table}/<int:row_id>", f"item_{table}", item_view,
                               methods=["GET"], defaults={"table": table})
        blueprint.add_url_rule(f"/{table}/<int:row_id>/<relation>", f"relation_{table}",
                               relation_view, methods=["GET"], defaults={"table": table})
    return blueprint
