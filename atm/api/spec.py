"""The OpenAPI 3 document, generated from the same introspection as the endpoints,
and the flasgger Swagger UI that shows it at ``/`` (bundled assets, no network)."""

from __future__ import annotations

import copy
from typing import Any

from flasgger import Swagger
from flask import Flask

from atm import __version__
from atm import constants as C
from atm.api.introspect import ENCODED_SUFFIX, Resource, column_schema, resource_of, resources
from atm.api.query import DEFAULT_RESULTS_PER_PAGE, MAX_RESULTS_PER_PAGE, OPERATORS
from atm.models import Datarun

SPEC_ROUTE = "/apispec.json"
OPENAPI_VERSION = "3.0.3"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


PROBLEM_RESPONSE = {
    "description": "an error (RFC 9457 problem details)",
    "content": {"application/problem+json": {"schema": _ref("Problem")}},
}

PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "fields": {"type": "object", "additionalProperties": {"type": "string"},
                   "description": "the offending fields and what is wrong with each"},
    },
}

PROGRESS_SCHEMA = {
    "type": "object",
    "description": "how far a datarun got (computed when served)",
    "required": [f"classifiers_{s}" for s in C.CLASSIFIER_STATUSES]
    + ["budget", "budget_type", "best_classifier_id", "best_score", "elapsed_seconds"],
    "additionalProperties": False,
    "properties": {
        **{f"classifiers_{s}": {"type": "integer"} for s in C.CLASSIFIER_STATUSES},
        "budget": {"type": "integer"},
        "budget_type": {"type": "string", "enum": list(C.BUDGET_TYPES)},
        "best_classifier_id": {"type": "integer", "nullable": True},
        "best_score": {"type": "number", "nullable": True},
        "elapsed_seconds": {"type": "number", "nullable": True},
    },
}


def _flat_schema(resource: Resource) -> dict[str, Any]:
    """Columns, ``*_64`` fields and (for dataruns) ``progress``."""
    properties = {name: column_schema(column) for name, column in resource.columns.items()}
    for name in resource.json_columns:
        properties[name + ENCODED_SUFFIX] = {
            "type": "string", "nullable": True,
            "description": f"{name} as base64 of a pickled list of (name, value) pairs, for "
                           "clients of the original ATM (output only)"}
    if resource.model is Datarun:
        properties["progress"] = {"allOf": [_ref("Progress")], "nullable": True}
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}


def _full_schema(resource: Resource) -> dict[str, Any]:
    """A flat object plus its related objects, one level deep."""
    schema = _flat_schema(resource)
    for name, relation in resource.relations.items():
        target = resource_of(relation.model).schema_name + "Flat"
        schema["properties"][name] = ({"type": "array", "items": _ref(target)}
                                      if relation.many else _ref(target))
        schema["required"].append(name)
    return schema


def _collection_schema(resource: Resource) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["num_results", "objects", "page", "total_pages"],
        "additionalProperties": False,
        "properties": {
            "num_results": {"type": "integer"},
            "objects": {"type": "array", "items": _ref(resource.schema_name)},
            "page": {"type": "integer"},
            "total_pages": {"type": "integer"},
        },
    }


ID_PARAMETER = {"name": "id", "in": "path", "required": True,
                "schema": {"type": "integer", "minimum": 0}}
LIST_PARAMETERS = [
    {"name": "page", "in": "query", "required": False,
     "description": "page number, from 1", "schema": {"type": "integer", "minimum": 1}},
    {"name": "results_per_page", "in": "query", "required": False,
     "description": f"objects per page (default {DEFAULT_RESULTS_PER_PAGE}, at most "
                    f"{MAX_RESULTS_PER_PAGE})",
     "schema": {"type": "integer", "minimum": 1}},
    {"name": "q", "in": "query", "required": False,
     "description": 'JSON: {"filters": [{"name": <column>, "op": <op>, "val": <value>}], '
                    '"order_by": [{"field": <column>, "direction": "asc"|"desc"}]}; ops: '
                    + ", ".join(OPERATORS),
     "schema": {"type": "string"},
     "example": '{"filters":[{"name":"id","op":"ge","val":1}],'
                '"order_by":[{"field":"id","direction":"desc"}]}'},
]
ERRORS = {"default": PROBLEM_RESPONSE}
SECURED = [{}, {"bearerAuth": []}]


def _resource_paths(resource: Resource) -> dict[str, Any]:
    name, table = resource.schema_name, resource.table
    paths: dict[str, Any] = {
        f"/api/{table}": {"get": {
            "tags": [table], "summary": f"List {table}",
            "operationId": f"list_{table}",
            "parameters": LIST_PARAMETERS,
            "responses": {"200": _json(_ref(name + "Collection"), f"a page of {table}"),
                          "400": PROBLEM_RESPONSE, **ERRORS},
        }},
        f"/api/{table}/{{id}}": {"get": {
            "tags": [table], "summary": f"Get one {resource.singular}",
            "operationId": f"get_{resource.singular}",
            "parameters": [ID_PARAMETER],
            "responses": {"200": _json(_ref(name), f"the {resource.singular}"),
                          "404": PROBLEM_RESPONSE, **ERRORS},
        }},
    }
    for relation_name, relation in resource.relations.items():
        target = resource_of(relation.model)
        if relation.many:
            operation = {
                "summary": f"List the {relation_name} of a {resource.singular}",
                "parameters": [ID_PARAMETER, *LIST_PARAMETERS],
                "responses": {"200": _json(_ref(target.schema_name + "Collection"),
                                           f"a page of the {relation_name}"),
                              "400": PROBLEM_RESPONSE, "404": PROBLEM_RESPONSE, **ERRORS},
            }
        else:
            operation = {
                "summary": f"Get the {relation_name} of a {resource.singular}",
                "parameters": [ID_PARAMETER],
                "responses": {"200": _json(_ref(target.schema_name), f"the {relation_name}"),
                              "404": PROBLEM_RESPONSE, **ERRORS},
            }
        operation["tags"] = [table]
        operation["operationId"] = f"get_{resource.singular}_{relation_name}"
        paths[f"/api/{table}/{{id}}/{relation_name}"] = {"get": operation}
    return paths


def _action_paths() -> dict[str, Any]:
    dataset_body = {
        "type": "object", "required": ["train_path", "class_column"],
        "additionalProperties": False,
        "properties": {
            "train_path": {"type": "string", "description": "CSV path on the server, inside "
                           "the allowed data directories"},
            "class_column": {"type": "string"},
            "test_path": {"type": "string", "nullable": True},
            "name": {"type": "string", "nullable": True},
            "description": {"type": "string", "nullable": True},
        },
        "example": {"train_path": "demos/iris.csv", "class_column": "class"},
    }
    upload_body = {
        "type": "object", "required": ["file", "class_column"],
        "properties": {
            "file": {"type": "string", "format": "binary"},
            "class_column": {"type": "string"},
            "name": {"type": "string"},
            "description": {"type": "string"},
        },
    }
    defaults = {k: v for k, v in C.DATARUN_DEFAULTS.items()}
    run_body = {
        "type": "object", "required": ["dataset_id"], "additionalProperties": False,
        "properties": {
            "dataset_id": {"type": "integer"},
            "budget": {"type": "integer", "minimum": 1, "default": defaults["budget"]},
            "budget_type": {"type": "string", "enum": list(C.BUDGET_TYPES),
                            "default": defaults["budget_type"]},
            "metric": {"type": "string", "enum": list(C.METRICS),
                       "default": defaults["metric"]},
            "score_target": {"type": "string", "default": defaults["score_target"],
                             "enum": list(C.SCORE_TARGETS) + list(C.SCORE_TARGETS.values())},
            "tuner": {"type": "string", "enum": list(C.TUNERS), "default": defaults["tuner"]},
            "selector": {"type": "string", "enum": list(C.SELECTORS),
                         "default": defaults["selector"]},
            "methods": {"type": "array", "items": {"type": "string"},
                        "default": defaults["methods"]},
            "k_window": {"type": "integer", "minimum": 1, "default": defaults["k_window"]},
            "r_minimum": {"type": "integer", "minimum": 1, "default": defaults["r_minimum"]},
            "gridding": {"type": "integer", "minimum": 0, "default": defaults["gridding"]},
            "priority": {"type": "integer", "default": defaults["priority"]},
            "deadline": {"type": "string", "nullable": True,
                         "description": "'YYYY-MM-DD HH:MM' (UTC); makes it a walltime run"},
            "description": {"type": "string", "nullable": True},
        },
        "example": {"dataset_id": 1, "budget": 20},
    }
    run_response = {
        "type": "object", "required": ["status", "datarun_ids"],
        "properties": {"status": {"type": "integer"},
                       "datarun_ids": {"type": "array", "items": {"type": "integer"}}},
    }
    predict_body = {
        "type": "object", "required": ["rows"], "additionalProperties": False,
        "properties": {"rows": {"type": "array", "minItems": 1,
                                "items": {"type": "object"}}},
        "example": {"rows": [{"sepal_length_cm": 5.1, "sepal_width_cm": 3.5,
                              "petal_length_cm": 1.4, "petal_width_cm": 0.2}]},
    }
    predict_response = {
        "type": "object", "required": ["classifier_id", "predictions"],
        "properties": {
            "classifier_id": {"type": "integer"},
            "predictions": {"type": "array", "items": {}},
            "classes": {"type": "array", "items": {}},
            "probabilities": {"type": "array", "items": {
                "type": "object", "additionalProperties": {"type": "number", "nullable": True}}},
        },
    }
    return {
        "/api/datasets": {"post": {
            "tags": ["datasets"], "summary": "Register a dataset (server path or CSV upload)",
            "operationId": "create_dataset", "security": SECURED,
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": dataset_body},
                "multipart/form-data": {"schema": upload_body}}},
            "responses": {"201": _json(_ref("Dataset"), "the new dataset"),
                          "400": PROBLEM_RESPONSE, "401": PROBLEM_RESPONSE,
                          "413": PROBLEM_RESPONSE, "415": PROBLEM_RESPONSE, **ERRORS},
        }},
        "/api/run": {"post": {
            "tags": ["dataruns"], "summary": "Start a datarun on a dataset",
            "operationId": "create_datarun", "security": SECURED,
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": run_body}}},
            "responses": {"200": _json(run_response, "the new datarun's id"),
                          "400": PROBLEM_RESPONSE, "401": PROBLEM_RESPONSE,
                          "404": PROBLEM_RESPONSE, "415": PROBLEM_RESPONSE, **ERRORS},
        }},
        "/api/dataruns/{id}/stop": {"post": {
            "tags": ["dataruns"], "summary": "Stop a datarun (running classifiers finish)",
            "operationId": "stop_datarun", "security": SECURED,
            "parameters": [ID_PARAMETER],
            "responses": {"200": _json(_ref("Datarun"), "the stopped datarun"),
                          "401": PROBLEM_RESPONSE, "404": PROBLEM_RESPONSE,
                          "409": PROBLEM_RESPONSE, **ERRORS},
        }},
        "/api/classifiers/{id}/model": {"get": {
            "tags": ["classifiers"], "summary": "Download a classifier's model file",
            "operationId": "download_model", "parameters": [ID_PARAMETER],
            "responses": {"200": {"description": "the model file (a pickle: load it with "
                                                 "atm.Model.load, only if you trust the server)",
                                  "content": {"application/octet-stream": {
                                      "schema": {"type": "string", "format": "binary"}}}},
                          "404": PROBLEM_RESPONSE, **ERRORS},
        }},
        "/api/classifiers/{id}/predict": {"post": {
            "tags": ["classifiers"], "summary": "Predict labels with a classifier",
            "operationId": "predict", "security": SECURED, "parameters": [ID_PARAMETER],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": predict_body},
                "text/csv": {"schema": {"type": "string"}}}},
            "responses": {"200": _json(predict_response, "the predicted labels"),
                          "400": PROBLEM_RESPONSE, "401": PROBLEM_RESPONSE,
                          "404": PROBLEM_RESPONSE, "415": PROBLEM_RESPONSE, **ERRORS},
        }},
    }


def build_openapi() -> dict[str, Any]:
    """The OpenAPI 3 document of every endpoint, from the models and the action table."""
    schemas: dict[str, Any] = {"Problem": PROBLEM_SCHEMA, "Progress": PROGRESS_SCHEMA}
    paths: dict[str, Any] = {}
    for resource in resources().values():
        schemas[resource.schema_name + "Flat"] = _flat_schema(resource)
        schemas[resource.schema_name] = _full_schema(resource)
        schemas[resource.schema_name + "Collection"] = _collection_schema(resource)
        paths.update(_resource_paths(resource))
    for path, operations in _action_paths().items():
        paths.setdefault(path, {}).update(operations)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "ATM REST API",
            "version": __version__,
            "description": "Auto Tune Models: register datasets, start dataruns, browse "
                           "classifiers and predict with them. Collections use the "
                           "flask-restless 0.17 format; errors are application/problem+json.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }


def init_swagger(app: Flask) -> Swagger:
    """Serve the document at ``/apispec.json`` and the Swagger UI at ``/``."""
    config = {
        "openapi": OPENAPI_VERSION,
        "title": "ATM REST API",
        "uiversion": 3,
        "headers": [],
        "specs": [{
            "endpoint": "apispec",
            "route": SPEC_ROUTE,
            # The document comes whole from build_openapi(); no docstring parsing.
            "rule_filter": lambda rule: False,
            "model_filter": lambda tag: False,
        }],
        "static_url_path": "/flasgger_static",
        "swagger_ui": True,
        "specs_route": "/",
    }
    return Swagger(app, config=config, template=copy.deepcopy(build_openapi()))
