"""Property-based runs against the generated OpenAPI document: requests built from the
documented operations and parameters (valid and not), with a bounded number of
examples. No response may be a 5xx, and every response must match the schema the
document gives for its status.

The second part (``slow``) is stateful: a Hypothesis state machine drives a fresh ModelHub
through random sequences of registrations (server paths and uploads, good and hostile),
dataruns, stops, training steps, lists, items, children, predictions and downloads, and
checks after every step that the API's totals match what it created. Its size is set by
``ATM_PROPERTY_EXAMPLES`` (sequences) and ``ATM_PROPERTY_STEPS`` (steps per sequence);
``ATM_PROPERTY_RANDOM=1`` draws new sequences instead of the fixed CI ones.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from api_support import DEMOS, PROBLEM, api_settings, copy_demo, train
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from atm import constants as C
from atm.api import create_app
from atm.api.query import OPERATORS
from atm.database import Database
from atm.worker import Worker, WorkerOptions

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


# -- a long stateful run (slow) -----------------------------------------------------------

STATEFUL_EXAMPLES = int(os.environ.get("ATM_PROPERTY_EXAMPLES", "15"))
STATEFUL_STEPS = int(os.environ.get("ATM_PROPERTY_STEPS", "80"))
STATEFUL_RANDOM = os.environ.get("ATM_PROPERTY_RANDOM") == "1"
TABLES = ("datasets", "dataruns", "hyperpartitions", "classifiers")
RELATIONS = {"datasets": ("dataruns",), "dataruns": ("dataset", "hyperpartitions", "classifiers"),
             "hyperpartitions": ("datarun", "classifiers"),
             "classifiers": ("datarun", "hyperpartition")}
SINGULAR = {"datasets": "dataset", "dataruns": "datarun", "hyperpartitions": "hyperpartition",
            "classifiers": "classifier"}
FAST_METHODS = ("dt", "gnb", "knn")
IRIS_COLUMNS = ("sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm")
GOOD_FILES = ("iris.csv", "iris.csv.gz")
MAX_DECOMPRESSED_MB = 1  # the machine's server: a 3 MB bomb is past it


@functools.cache
def hostile_files() -> dict[str, bytes]:
    """Files a client may name or upload: two good ones and hostile ones (all refused)."""
    iris = (DEMOS / "iris.csv").read_bytes()
    rows = "".join(f"{i},{i % 3},{'ab'[i % 2]}\n" for i in range(20))
    bomb = io.BytesIO()
    with gzip.GzipFile(fileobj=bomb, mode="wb", mtime=0) as handle:
        for _ in range(3):
            handle.write(b"0," * 500_000 + b"0\n")
    return {
        "iris.csv": iris,
        "iris.csv.gz": gzip.compress(iris, mtime=0),
        "one_class.csv": ("a,b,class\n" + rows.replace(",b\n", ",a\n")).encode(),
        "garbage.csv": random.Random(3).randbytes(3000),
        "bomb.csv.gz": bomb.getvalue(),
        "huge_number.csv": ("a,b,class\n" + rows + "1e999,1,a\n").encode(),
        "fake.csv.gz": iris,
        "empty.csv": b"",
    }


PATHS = [*hostile_files(), "missing.csv", "../outside.csv", "/etc/passwd", "uploads",
         "http://127.0.0.1:9/x.csv", "", " ", "iris.csv\x00.txt", "a" * 2000]
UPLOAD_NAMES = [*hostile_files(), "IRIS.CSV.GZ", "../../escape.csv", "名前.csv", "x" * 300,
                "no_suffix", ".csv", "a/b.csv"]
# half of the draws are valid, so sequences get deep (datasets, runs, trained classifiers)
class_columns = st.one_of(st.just("class"), st.one_of(
    st.sampled_from(["", "a", "clas", "x" * 200]), st.text(max_size=12)))
train_paths = st.one_of(st.sampled_from(GOOD_FILES), st.sampled_from(PATHS))
optional_texts = st.one_of(st.none(), st.text(max_size=30), st.text(min_size=101, max_size=110))
ids = st.one_of(st.integers(-2, 30), st.integers(2**31, 2**70))


def run_options() -> st.SearchStrategy[dict[str, Any]]:
    """Datarun options: half valid and cheap to train, half of every kind (wrong ones too)."""
    cheap = st.fixed_dictionaries({"budget": st.integers(1, 3), "methods": st.lists(
        st.sampled_from(FAST_METHODS), min_size=1, max_size=2)})
    return st.one_of(cheap, st.fixed_dictionaries({}, optional={
        "budget": st.one_of(st.integers(1, 3), st.integers(-2, 0), st.just(2**40), json_values),
        "budget_type": st.sampled_from(["classifier", "walltime", "seconds"]),
        "methods": st.one_of(st.lists(st.sampled_from(FAST_METHODS), min_size=1, max_size=2),
                             st.just(["bogus"]), st.just("dt"), st.just("../m.json"),
                             json_values),
        "tuner": st.sampled_from([*C.TUNERS, "bayes"]),
        "selector": st.sampled_from([*C.SELECTORS, ""]),
        "metric": st.sampled_from(["f1", "accuracy", "roc_auc", "f1_macro", "nope"]),
        "score_target": st.sampled_from(["cv", "test", "mu_sigma", "cv_judgment_metric", "x"]),
        "priority": st.one_of(st.integers(-3, 3), json_values),
        "gridding": st.one_of(st.integers(0, 3), json_values),
        "k_window": st.integers(-1, 5),
        "r_minimum": st.integers(-1, 5),
        "deadline": st.sampled_from(["2030-01-01 00:00", "yesterday", 5, ""]),
        "description": optional_texts,
        "surprise": json_values,
    }))


def predict_rows() -> st.SearchStrategy[Any]:
    number = st.one_of(st.floats(-10, 10), st.integers(-5, 5), st.none(), st.text(max_size=3))
    good = st.lists(st.fixed_dictionaries({c: st.floats(0, 8) for c in IRIS_COLUMNS}),
                    min_size=1, max_size=3)
    loose = st.lists(st.dictionaries(st.sampled_from([*IRIS_COLUMNS, "class", "z"]), number),
                     max_size=3)
    return st.one_of(good.map(lambda rows: {"rows": rows}), loose.map(lambda r: {"rows": r}),
                     json_values)


class StatefulReport:
    """What the run did, for RELIABILITY.md (printed at the end; run with -s to see it)."""

    def __init__(self) -> None:
        self.sequences = 0
        self.steps = 0
        self.statuses: Counter[int] = Counter()
        self.operations: Counter[str] = Counter()  # "operation status"
        self.trained = 0

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    def summary(self, seconds: float) -> str:
        server_errors = sum(n for status, n in self.statuses.items() if status >= 500)
        return (f"stateful API run: {self.sequences} sequences, {self.steps} steps, "
                f"{self.requests} requests in {seconds:.0f} s, 5xx: {server_errors}, "
                f"classifiers trained: {self.trained}; "
                f"statuses {dict(sorted(self.statuses.items()))}; "
                f"operations {dict(sorted(self.operations.items()))}")


def step(rule_body: Any) -> Any:
    """Count a rule's runs in the report."""
    @functools.wraps(rule_body)
    def counted(self: ApiMachine, **kwargs: Any) -> None:
        self.report.steps += 1
        rule_body(self, **kwargs)
    return counted


class ApiMachine(RuleBasedStateMachine):
    """A fresh ModelHub per sequence; the model is what the API must report back."""

    spec: dict[str, Any] = {}
    report = StatefulReport()
    base: Path = Path(tempfile.gettempdir())

    def __init__(self) -> None:
        super().__init__()
        self.home = Path(tempfile.mkdtemp(dir=self.base))
        for name, content in hostile_files().items():
            (self.home / name).write_bytes(content)
        self.db = Database(f"sqlite:///{self.home / 'atm.db'}")
        settings_ = api_settings(self.db, self.home, max_decompressed_mb=MAX_DECOMPRESSED_MB)
        self.client = create_app(settings_, self.db).test_client()
        self.options = WorkerOptions(models_dir=str(self.home / "models"),
                                     metrics_dir=str(self.home / "metrics"),
                                     classifier_timeout=0)
        self.dataset_ids: list[int] = []
        self.runs: dict[int, str] = {}  # datarun id -> last status seen
        self.budgets: dict[int, int] = {}  # classifier budgets of the runs
        self.stopped: set[int] = set()
        self.complete_classifiers: list[int] = []
        self.uploads = 0
        self.report.sequences += 1

    def teardown(self) -> None:
        self.db.dispose()
        shutil.rmtree(self.home, ignore_errors=True)

    # -- one request, checked against the document -----------------------------------

    def call(self, operation_id: str | None, method: str, url: str, **kwargs: Any) -> Any:
        response = self.client.open(url, method=method.upper(), **kwargs)
        self.report.statuses[response.status_code] += 1
        self.report.operations[f"{operation_id or 'undocumented'} {response.status_code}"] += 1
        text = response.get_data(as_text=True) if response.mimetype != "application/octet-stream" \
            else ""
        assert response.status_code < 500, (method, url, kwargs.get("json"), text[:2000])
        if operation_id is None:
            if response.status_code >= 400 and method.upper() != "HEAD":
                body = json.loads(text)
                assert response.mimetype == PROBLEM and set(body) >= {
                    "type", "title", "status", "detail"}, text
            return response
        [(_, _, op)] = [o for o in operations(self.spec) if o[2]["operationId"] == operation_id]
        documented = op["responses"].get(str(response.status_code)) or op["responses"]["default"]
        [(mimetype, media)] = documented["content"].items()
        assert response.mimetype == mimetype, (url, response.status_code, response.mimetype)
        if mimetype.endswith("json"):
            schema = to_json_schema(media["schema"], self.spec["components"]["schemas"])
            jsonschema.validate(json.loads(text), schema)
        return response

    def server_path(self, name: str) -> str:
        """Names of files are relative to the machine's home (the server's data directory)."""
        if name.startswith(("/", "http")) or not name.strip():
            return name
        return str(self.home / name)

    def draw_id(self, data: st.DataObject, known: list[int]) -> int:
        """Mostly an id the sequence created, sometimes any id."""
        if not known:
            return data.draw(ids)
        return data.draw(st.one_of(st.sampled_from(known), st.sampled_from(known), ids))

    # -- rules ------------------------------------------------------------------------

    @initialize()
    @step
    def register_iris_and_train_a_tree(self) -> None:
        """Every sequence starts with a dataset, a datarun and a complete classifier."""
        response = self.call("create_dataset", "post", "/api/datasets",
                             json={"train_path": self.server_path("iris.csv"),
                                   "class_column": "class"})
        assert response.status_code == 201
        self.dataset_ids.append(response.get_json()["id"])
        response = self.call("create_datarun", "post", "/api/run", json={
            "dataset_id": self.dataset_ids[0], "budget": 2, "methods": ["dt"]})
        assert response.status_code == 200
        [run_id] = response.get_json()["datarun_ids"]
        self.runs[run_id], self.budgets[run_id] = C.DATARUN_PENDING, 2
        self.train_one_classifier()
        assert self.complete_classifiers

    @rule(train_path=train_paths, class_column=class_columns,
          extra=st.one_of(st.just({}), st.fixed_dictionaries({}, optional={
              "name": optional_texts, "description": optional_texts,
              "test_path": st.sampled_from(PATHS), "owner": json_values})))
    @step
    def register_by_path(self, train_path: str, class_column: str, extra: dict) -> None:
        body = {"train_path": self.server_path(train_path), "class_column": class_column,
                **extra}
        if isinstance(extra.get("test_path"), str):
            body["test_path"] = self.server_path(extra["test_path"])
        response = self.call("create_dataset", "post", "/api/datasets", json=body)
        if train_path in GOOD_FILES and class_column == "class" and not extra:
            assert response.status_code == 201, response.get_json()
        if response.status_code == 201:
            self.dataset_ids.append(response.get_json()["id"])
        elif train_path in ("bomb.csv.gz", "huge_number.csv") and class_column == "class" \
                and not extra:
            assert response.status_code == 400
            assert ("max_decompressed_mb" if "bomb" in train_path else "float range") in \
                response.get_json()["detail"]

    @rule(content=train_paths.filter(lambda p: p in hostile_files()), data=st.data(),
          class_column=class_columns,
          extra=st.one_of(st.just({}), st.fixed_dictionaries({}, optional={
              "name": optional_texts, "description": optional_texts,
              "train_path": st.just("iris.csv")})))
    @step
    def register_by_upload(self, content: str, data: st.DataObject, class_column: str,
                           extra: dict) -> None:
        filename = data.draw(st.one_of(st.just(content), st.sampled_from(UPLOAD_NAMES),
                                       st.text(max_size=20)))
        form = {"file": (io.BytesIO(hostile_files()[content]), filename),
                "class_column": class_column,
                **{k: v for k, v in extra.items() if v is not None}}
        response = self.call("create_dataset", "post", "/api/datasets", data=form,
                             content_type="multipart/form-data")
        if content == filename and content in GOOD_FILES and class_column == "class" \
                and not extra:
            assert response.status_code == 201, response.get_json()
        if response.status_code == 201:
            self.dataset_ids.append(response.get_json()["id"])
            self.uploads += 1

    @rule(data=st.data(), options=run_options())
    @step
    def start_datarun(self, data: st.DataObject, options: dict) -> None:
        dataset_id = self.draw_id(data, self.dataset_ids)
        body = {"dataset_id": dataset_id, **options}
        response = self.call("create_datarun", "post", "/api/run", json=body)
        cheap = set(options) <= {"budget", "methods"} and \
            isinstance(options.get("budget", 1), int) and 1 <= options.get("budget", 1) <= 3 \
            and isinstance(options.get("methods"), list) and set(options["methods"]) <= set(
                FAST_METHODS)
        if dataset_id in self.dataset_ids and cheap:
            assert response.status_code == 200, response.get_json()
        if response.status_code == 200:
            [run_id] = response.get_json()["datarun_ids"]
            self.runs[run_id] = C.DATARUN_PENDING
            if options.get("budget_type", "classifier") == "classifier" and "deadline" not in \
                    options:
                self.budgets[run_id] = options.get("budget", C.DATARUN_DEFAULTS["budget"])

    @rule(data=st.data())
    @step
    def stop_datarun(self, data: st.DataObject) -> None:
        run_id = self.draw_id(data, list(self.runs))
        response = self.call("stop_datarun", "post", f"/api/dataruns/{run_id}/stop")
        if run_id not in self.runs:
            assert response.status_code == 404
            return
        before = self.runs[run_id]
        if before in (C.DATARUN_COMPLETE, C.DATARUN_STOPPED):
            assert response.status_code == 409, response.get_json()
        else:
            assert response.status_code == 200, response.get_json()
            self.runs[run_id] = C.DATARUN_STOPPED
            self.stopped.add(run_id)

    @rule()
    @step
    def train_one_classifier(self) -> None:
        """A worker (fits in this process) trains one classifier of the top datarun."""
        self.report.trained += Worker(self.db, self.options).run(max_classifiers=1)
        self.refresh_runs()

    def refresh_runs(self) -> None:
        """Every run's status from the API: finished runs stay finished, budgets hold."""
        for run_id, before in list(self.runs.items()):
            run = self.call("get_datarun", "get", f"/api/dataruns/{run_id}").get_json()
            if before in (C.DATARUN_COMPLETE, C.DATARUN_STOPPED):
                assert run["status"] == before, (run_id, before, run["status"])
            self.runs[run_id] = run["status"]
            if run_id in self.budgets:
                assert run["n_started"] <= self.budgets[run_id]
                assert len(run["classifiers"]) <= self.budgets[run_id]
            for classifier in run["classifiers"]:
                if classifier["status"] == C.CLASSIFIER_COMPLETE and \
                        classifier["id"] not in self.complete_classifiers:
                    self.complete_classifiers.append(classifier["id"])

    @rule(table=st.sampled_from(TABLES), data=st.data())
    @step
    def list_table(self, table: str, data: st.DataObject) -> None:
        op = [o for _, _, o in operations(self.spec) if o["operationId"] == f"list_{table}"][0]
        query = data.draw(query_strategy(op, self.spec))
        response = self.call(f"list_{table}", "get", f"/api/{table}", query_string=query)
        if response.status_code == 200 and "q" not in query:
            expected = {"datasets": len(self.dataset_ids), "dataruns": len(self.runs)}
            if table in expected:
                assert response.get_json()["num_results"] == expected[table]

    @rule(table=st.sampled_from(TABLES), data=st.data())
    @step
    def get_item(self, table: str, data: st.DataObject) -> None:
        known = {"datasets": self.dataset_ids, "dataruns": list(self.runs),
                 "classifiers": self.complete_classifiers}.get(table, [])
        row_id = self.draw_id(data, known)
        response = self.call(f"get_{SINGULAR[table]}", "get", f"/api/{table}/{row_id}")
        if row_id in known:
            assert response.status_code == 200
        elif row_id <= 0 or row_id > 2**31:
            assert response.status_code == 404

    @rule(table=st.sampled_from(TABLES), data=st.data())
    @step
    def get_children(self, table: str, data: st.DataObject) -> None:
        relation = data.draw(st.sampled_from(RELATIONS[table]))
        known = {"datasets": self.dataset_ids, "dataruns": list(self.runs)}.get(table, [])
        row_id = self.draw_id(data, known)
        query = data.draw(st.fixed_dictionaries({}, optional={
            "page": st.one_of(st.integers(-1, 3).map(str), st.text(max_size=3)),
            "results_per_page": st.integers(-1, 200).map(str)}))
        response = self.call(f"get_{SINGULAR[table]}_{relation}", "get",
                             f"/api/{table}/{row_id}/{relation}", query_string=query)
        if row_id in known and not query:
            assert response.status_code == 200

    @rule(data=st.data(), rows=predict_rows(), as_csv=st.booleans())
    @step
    def predict(self, data: st.DataObject, rows: Any, as_csv: bool) -> None:
        classifier_id = self.draw_id(data, self.complete_classifiers)
        url = f"/api/classifiers/{classifier_id}/predict"
        good = isinstance(rows, dict) and isinstance(rows.get("rows"), list) and rows["rows"] \
            and all(set(r) == set(IRIS_COLUMNS) for r in rows["rows"])
        if as_csv:
            header = ",".join(IRIS_COLUMNS) + "\n"
            csv_text = header + "".join(",".join(str(r[c]) for c in IRIS_COLUMNS) + "\n"
                                        for r in rows["rows"]) if good else data.draw(
                st.sampled_from([header + "1e999,1,1,1\n", header + "inf,-inf,nan,1\n",
                                 header, "", "\x00\xff,\n", header + "1,2\n1,2,3,4,5\n",
                                 header.replace(",", ";") + "1;2;3;4\n"]))
            response = self.call("predict", "post", url, data=csv_text, content_type="text/csv")
        else:
            response = self.call("predict", "post", url, json=rows)
        if classifier_id in self.complete_classifiers and good:
            assert response.status_code == 200, response.get_json()
            assert len(response.get_json()["predictions"]) == len(rows["rows"])

    @rule(data=st.data())
    @step
    def download_model(self, data: st.DataObject) -> None:
        classifier_id = self.draw_id(data, self.complete_classifiers)
        response = self.call("download_model", "get", f"/api/classifiers/{classifier_id}/model")
        if classifier_id in self.complete_classifiers:
            assert response.status_code == 200 and response.data

    @rule(method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
          path=st.one_of(st.sampled_from(["/api/datasets", "/api/run", "/api/dataruns/1/stop",
                                          "/api/classifiers/1/predict", "/api/datasets/1"]),
                         st.text(alphabet="abc/%.?=&1é", max_size=25).map(lambda p: "/api/" + p)),
          body=st.one_of(st.binary(max_size=40), json_values.map(json.dumps)),
          content_type=st.sampled_from(["application/json", "text/csv", "multipart/form-data",
                                        "application/x-www-form-urlencoded", "text/plain", ""]))
    @step
    def anything(self, method: str, path: str, body: Any, content_type: str) -> None:
        """Any method, path and body: never a 5xx, errors always problem+json."""
        response = self.call(None, method, path, data=body, content_type=content_type or None)
        if method == "POST" and response.status_code < 300:  # it changed something
            created = response.get_json()
            if path.endswith("/stop"):
                self.runs[created["id"]] = C.DATARUN_STOPPED
                self.stopped.add(created["id"])
            for run_id in created.get("datarun_ids", []):
                self.runs[run_id] = C.DATARUN_PENDING
            if path == "/api/datasets":
                self.dataset_ids.append(created["id"])

    # -- after every step ---------------------------------------------------------------

    @invariant()
    def totals_match_what_was_created(self) -> None:
        datasets = self.call("list_datasets", "get", "/api/datasets",
                             query_string={"results_per_page": "1"}).get_json()
        assert datasets["num_results"] == len(self.dataset_ids)
        dataruns = self.call("list_dataruns", "get", "/api/dataruns",
                             query_string={"results_per_page": "1"}).get_json()
        assert dataruns["num_results"] == len(self.runs)
        stopped_q = json.dumps({"filters": [{"name": "status", "op": "eq", "val": "stopped"}]})
        stopped = self.call("list_dataruns", "get", "/api/dataruns", query_string={
            "q": stopped_q, "results_per_page": "100"}).get_json()
        assert {run["id"] for run in stopped["objects"]} == self.stopped
        uploads = self.home / "uploads"
        kept = len(list(uploads.iterdir())) if uploads.exists() else 0
        assert kept == self.uploads  # a refused upload leaves no file


@pytest.mark.slow
def test_a_long_stateful_api_run_never_fails(hub, tmp_path):
    """ATM_PROPERTY_EXAMPLES sequences of up to ATM_PROPERTY_STEPS steps: no 5xx, every
    response as documented, and the API's totals always what the sequence created."""
    _, spec = hub
    ApiMachine.spec, ApiMachine.base, ApiMachine.report = spec, tmp_path, StatefulReport()
    started = time.monotonic()
    try:
        run_state_machine_as_test(ApiMachine, settings=settings(
            max_examples=STATEFUL_EXAMPLES, stateful_step_count=STATEFUL_STEPS, deadline=None,
            derandomize=not STATEFUL_RANDOM, database=None, print_blob=True,
            suppress_health_check=list(HealthCheck)))
    finally:
        print(ApiMachine.report.summary(time.monotonic() - started))
    report = ApiMachine.report
    assert report.sequences >= 1 and report.requests > report.steps
