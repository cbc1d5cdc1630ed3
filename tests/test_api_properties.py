"""Property-based run against the generated OpenAPI document: requests built from the
documented operations and parameters (valid and not), with a bounded number of
examples. No response may be a 5xx, and every response must match the schema the
document gives for its status."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from api_support import api_settings, copy_demo, train
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atm.api import create_app
from atm.api.query import OPERATORS
from atm.database import Database

EXAMPLES_PER_OPERATION = 15


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A small ModelHub with a trained datarun, shared by the whole module (read mostly)."""
    home = tmp_path_factory.mktemp("props")
    db = Database(f"sqlite:///{home / 'atm.db'}")
    app = create_app(api_settings(db, home), db)
    client = app.test_client()
    copy_demo(home)
    assert client.post("/api/datasets", json={"train_path": str(home / "iris.csv"),
                                              "class_column": "class"}).status_code == 201
    assert client.post("/api/run", json={"dataset_id": 1, "budget": 2,
                                         "methods": ["dt"]}).status_code == 200
    train(db, home, max_classifiers=2)
    spec = client.get("/apispec.json").get_json()
    yield client, spec
    db.dispose()


def to_json_schema(schema: Any, components: dict[str, Any]) -> Any:
    """An OpenAPI 3.0 schema as plain JSON Schema: refs inlined, ``nullable`` as null."""
    if isinstance(schema, list):
        return [to_json_schema(s, components) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        return to_json_schema(components[schema["$ref"].rsplit("/", 1)[1]], components)
    out = {k: to_json_schema(v, components) for k, v in schema.items()
           if k not in ("nullable", "example", "format")}
    if schema.get("nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in spec["paths"].items()
            for method, op in item.items()]


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6)


def q_strategy(columns: list[str]) -> st.SearchStrategy[str]:
    names = st.one_of(st.sampled_from(columns), st.text(max_size=6))
    filters = st.lists(st.fixed_dictionaries(
        {"name": names, "op": st.sampled_from(OPERATORS)},
        optional={"val": st.one_of(json_scalars, st.lists(json_scalars, max_size=3))}),
        max_size=2)
    order = st.lists(st.fixed_dictionaries(
        {"field": names}, optional={"direction": st.sampled_from(["asc", "desc", "up"])}),
        max_size=2)
    structured = st.fixed_dictionaries({}, optional={"filters": filters, "order_by": order})
    return st.one_of(structured.map(json.dumps), st.text(max_size=10),
                     json_values.map(json.dumps))


def query_strategy(op: dict[str, Any], spec: dict[str, Any]) -> st.SearchStrategy[dict]:
    schemas = spec["components"]["schemas"]
    target = op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    item = schemas[target.rsplit("/", 1)[1]]["properties"]["objects"]["items"]["$ref"]
    columns = list(schemas[item.rsplit("/", 1)[1] + "Flat"]["properties"])
    numbers = st.one_of(st.integers(-3, 12).map(str), st.text(max_size=4))
    return st.fixed_dictionaries({}, optional={
        "page": numbers, "results_per_page": numbers, "q": q_strategy(columns)})


def body_strategy(op: dict[str, Any], spec: dict[str, Any]) -> st.SearchStrategy[Any]:
    content = op.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    if schema is None:
        return st.none()
    fields = {name: st.one_of(json_values, st.just(schema.get("example", {}).get(name)))
              for name in schema["properties"]}
    documented = st.fixed_dictionaries({}, optional=fields)
    return st.one_of(documented, documented.map(lambda d: {**d, "dataset_id": 1}),
                     st.just(schema.get("example")), json_values)


OPERATION_IDS = [
    "list_datasets", "get_dataset", "get_dataset_dataruns", "list_dataruns", "get_datarun",
    "get_datarun_dataset", "get_datarun_hyperpartitions", "get_datarun_classifiers",
    "list_hyperpartitions", "get_hyperpartition", "get_hyperpartition_datarun",
    "get_hyperpartition_classifiers", "list_classifiers", "get_classifier",
    "get_classifier_datarun", "get_classifier_hyperpartition", "create_dataset",
    "create_datarun", "stop_datarun", "download_model", "predict",
]


def test_every_operation_is_exercised(hub):
    _, spec = hub
    assert sorted(op["operationId"] for _, _, op in operations(spec)) == sorted(OPERATION_IDS)


@pytest.mark.parametrize("operation_id", OPERATION_IDS)
def test_operation_never_fails_and_matches_its_schema(hub, operation_id):
    client, spec = hub
    [(path, method, op)] = [o for o in operations(spec) if o[2]["operationId"] == operation_id]
    components = spec["components"]["schemas"]
    has_query = any(p["in"] == "query" for p in op.get("parameters", []))
    ids = st.one_of(st.integers(0, 4), st.integers(0, 2**70))
    queries = query_strategy(op, spec) if has_query else st.just({})
    bodies = body_strategy(op, spec) if method == "post" else st.none()

    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck), database=None)
    @given(row_id=ids, query=queries, body=bodies)
    def check(row_id: int, query: dict, body: Any) -> None:
        url = path.replace("{id}", str(row_id))
        kwargs: dict[str, Any] = {"query_string": query}
        if method == "post":
            kwargs["data"] = json.dumps(body)
            kwargs["content_type"] = "application/json"
        response = getattr(client, method)(url, **kwargs)
        status = str(response.status_code)
        assert response.status_code < 500, (url, query, body, response.get_data(as_text=True))
        documented = op["responses"].get(status) or op["responses"]["default"]
        [(mimetype, media)] = documented["content"].items()
        assert response.mimetype == mimetype, (url, status, response.mimetype)
        if mimetype.endswith("json"):
            schema = to_json_schema(media["schema"], components)
            jsonschema.validate(response.get_json(), schema)

    check()
