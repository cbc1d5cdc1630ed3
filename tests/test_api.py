"""The generated REST endpoints and their errors, through the Flask test client,
(listing and children on every configured database backend)."""

from __future__ import annotations

import base64
import json
import pickle
from datetime import datetime

import pytest
from api_support import api_settings, assert_problem, copy_demo, snapshot, train

from atm.api import create_app
from atm.database import Database
from atm.models import Hyperpartition

DATASET_KEYS = {"id", "name", "class_column", "train_path", "test_path", "description",
                "n_examples", "k_classes", "d_features", "majority", "size_kb"}
DATARUN_KEYS = {"id", "dataset_id", "budget", "budget_type", "deadline", "description",
                "end_time", "gridding", "k_window", "metric", "priority", "r_minimum",
                "score_target", "selector", "start_time", "status", "tuner"}
HYPERPARTITION_KEYS = {"categorical_hyperparameters_64", "constant_hyperparameters_64",
                       "tunable_hyperparameters_64", "datarun_id", "id", "method", "status",
                       "categorical_hyperparameters", "constant_hyperparameters",
                       "tunable_hyperparameters"}
CLASSIFIER_KEYS = {"cv_judgment_metric", "cv_judgment_metric_stdev", "datarun_id", "end_time",
                   "error_message", "host", "hyperpartition_id", "id", "metrics_location",
                   "model_location", "start_time", "status", "test_judgment_metric",
                   "hyperparameter_values"}
PROGRESS_KEYS = {"classifiers_complete", "classifiers_errored", "classifiers_running",
                 "budget", "budget_type", "best_classifier_id", "best_score", "elapsed_seconds"}


@pytest.fixture
def backend_app(any_db, workdir):
    """The API over a fresh database of every configured backend."""
    return create_app(api_settings(any_db, workdir), any_db)


def register_iris(client, workdir) -> dict:
    response = client.post("/api/datasets",
                           json={"train_path": copy_demo(workdir), "class_column": "class"})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


@pytest.fixture
def iris(client, workdir):
    """A registered iris dataset (the response body)."""
    return register_iris(client, workdir)


@pytest.fixture
def trained(backend_app, workdir):
    """A datarun of two decision trees on iris, trained by a real worker."""
    client = backend_app.test_client()
    register_iris(client, workdir)
    response = client.post("/api/run", json={"dataset_id": 1, "budget": 2, "methods": ["dt"]})
    assert response.status_code == 200
    assert train(backend_app.extensions["atm"].db, workdir, max_classifiers=2) == 2
    return client, response.get_json()["datarun_ids"][0]


def is_iso_time(value: str) -> bool:
    datetime.fromisoformat(value)
    return True


def unpickle_trusted(value: str):
    """Decode a *_64 field the server produced (test-only: the server never unpickles)."""
    return pickle.loads(base64.b64decode(value))


# -- creating -------------------------------------------------------------------------

def test_post_dataset_returns_the_object_with_computed_metadata(iris, workdir):
    assert set(iris) == DATASET_KEYS | {"dataruns"}
    assert iris["id"] == 1
    assert iris["name"] == "iris"
    assert iris["class_column"] == "class"
    assert iris["train_path"] == str((workdir / "iris.csv").resolve())
    assert iris["test_path"] is None and iris["description"] is None
    assert iris["n_examples"] == 150
    assert iris["k_classes"] == 3
    assert iris["d_features"] == 4
    assert iris["majority"] == pytest.approx(1 / 3)
    assert isinstance(iris["size_kb"], int) and iris["size_kb"] >= 1
    assert iris["dataruns"] == []


def test_post_dataset_with_test_path_name_and_description(client, workdir):
    copy_demo(workdir)
    (workdir / "data").mkdir()
    copy_demo(workdir / "data", "iris")
    response = client.post("/api/datasets", json={
        "train_path": "iris.csv", "test_path": "data/iris.csv", "class_column": "class",
        "name": "flowers", "description": "Fisher's iris"})
    assert response.status_code == 201
    body = response.get_json()
    assert body["name"] == "flowers" and body["description"] == "Fisher's iris"
    assert body["test_path"] == str((workdir / "data" / "iris.csv").resolve())


def test_post_run_creates_a_datarun_with_its_hyperpartitions(client, iris, db):
    response = client.post("/api/run", json={"dataset_id": iris["id"]})
    assert response.status_code == 200
    assert response.get_json() == {"status": 200, "datarun_ids": [1]}
    run = client.get("/api/dataruns/1").get_json()
    # the engine's defaults
    assert run["budget"] == 100 and run["budget_type"] == "classifier"
    assert run["tuner"] == "uniform" and run["selector"] == "uniform"
    assert run["metric"] == "f1" and run["score_target"] == "cv_judgment_metric"
    assert run["status"] == "pending" and run["description"] == "uniform__uniform"
    assert {h["method"] for h in run["hyperpartitions"]} == {"logreg", "dt", "knn"}
    assert len(run["hyperpartitions"]) == db.count_rows(Hyperpartition)


def test_post_run_accepts_every_datarun_option(client, iris):
    response = client.post("/api/run", json={
        "dataset_id": iris["id"], "budget": 7, "budget_type": "classifier", "metric": "accuracy",
        "score_target": "test", "tuner": "gp", "selector": "ucb1", "methods": ["knn"],
        "k_window": 4, "r_minimum": 3, "gridding": 2, "priority": 5,
        "deadline": "2099-01-01 12:00", "description": "mine"})
    assert response.status_code == 200, response.get_json()
    run = client.get(f"/api/dataruns/{response.get_json()['datarun_ids'][0]}").get_json()
    assert run["budget"] == 7 and run["metric"] == "accuracy" and run["tuner"] == "gp"
    assert run["selector"] == "ucb1" and run["k_window"] == 4 and run["r_minimum"] == 3
    assert run["gridding"] == 2 and run["priority"] == 5 and run["description"] == "mine"
    assert run["score_target"] == "test_judgment_metric"
    assert run["deadline"] == "2099-01-01T12:00:00" and run["budget_type"] == "walltime"
    assert {h["method"] for h in run["hyperpartitions"]} == {"knn"}


# -- reading --------------------------------------------------------------------------

def test_list_item_and_children_key_by_key(trained):
    client, trained = trained
    datasets = client.get("/api/datasets")
    assert datasets.status_code == 200 and datasets.mimetype == "application/json"
    page = datasets.get_json()
    assert set(page) == {"num_results", "objects", "page", "total_pages"}
    assert page["num_results"] == 1 and page["page"] == 1 and page["total_pages"] == 1
    dataset = page["objects"][0]
    assert set(dataset) == DATASET_KEYS | {"dataruns"}
    assert client.get("/api/datasets/1").get_json() == dataset
    # a dataset embeds its dataruns, without their children
    [embedded] = dataset["dataruns"]
    assert set(embedded) >= DATARUN_KEYS | {"progress"}
    assert not {"dataset", "hyperpartitions", "classifiers"} & set(embedded)

    run = client.get(f"/api/dataruns/{trained}").get_json()
    assert set(run) >= DATARUN_KEYS | {"dataset", "hyperpartitions", "classifiers", "progress"}
    assert run["dataset"] == {k: dataset[k] for k in DATASET_KEYS}
    assert run["status"] == "complete" and is_iso_time(run["start_time"])
    assert is_iso_time(run["end_time"])
    assert set(run["progress"]) == PROGRESS_KEYS
    assert run["progress"]["classifiers_complete"] + run["progress"]["classifiers_errored"] == 2
    assert run["progress"]["budget"] == 2
    assert isinstance(run["progress"]["elapsed_seconds"], (int, float))

    partition = run["hyperpartitions"][0]
    assert set(partition) == HYPERPARTITION_KEYS
    assert partition["method"] == "dt" and partition["datarun_id"] == trained
    for name in ("categorical", "constant", "tunable"):
        readable = partition[f"{name}_hyperparameters"]
        assert unpickle_trusted(partition[f"{name}_hyperparameters_64"]) == [
            tuple(pair) for pair in readable]

    classifiers = client.get(f"/api/dataruns/{trained}/classifiers").get_json()
    assert classifiers["num_results"] == 2 and len(classifiers["objects"]) == 2
    classifier = classifiers["objects"][0]
    assert set(classifier) >= CLASSIFIER_KEYS | {"datarun", "hyperpartition",
                                                 "hyperparameter_values_64"}
    assert classifier["datarun_id"] == trained and classifier["datarun"]["id"] == trained
    assert classifier["hyperpartition"]["id"] == classifier["hyperpartition_id"]
    assert isinstance(classifier["hyperparameter_values"], dict)
    assert dict(unpickle_trusted(classifier["hyperparameter_values_64"])) == classifier[
        "hyperparameter_values"]
    if classifier["status"] == "complete":
        assert isinstance(classifier["cv_judgment_metric"], float)
        assert classifier["model_location"].endswith(".model")
    best = run["progress"]["best_classifier_id"]
    scores = {c["id"]: c["cv_judgment_metric"] for c in classifiers["objects"]
              if c["status"] == "complete"}
    assert best == max(scores, key=lambda i: (scores[i], -i))
    assert run["progress"]["best_score"] == pytest.approx(scores[best])

    # children of a dataset, to-one relations, and the other collections
    children = client.get("/api/datasets/1/dataruns").get_json()
    assert children["num_results"] == 1 and children["objects"][0]["id"] == trained
    assert client.get(f"/api/dataruns/{trained}/dataset").get_json()["id"] == 1
    partitions = client.get(f"/api/dataruns/{trained}/hyperpartitions").get_json()
    assert partitions["num_results"] == len(run["hyperpartitions"])
    listed = client.get("/api/classifiers").get_json()
    assert listed["num_results"] == 2
    assert client.get(f"/api/classifiers/{classifier['id']}").get_json() == classifier
    owned = client.get(f"/api/hyperpartitions/{classifier['hyperpartition_id']}/classifiers")
    assert classifier["id"] in [c["id"] for c in owned.get_json()["objects"]]
    assert client.get(f"/api/hyperpartitions/{partition['id']}/datarun").get_json()[
        "id"] == trained
    assert client.get("/api/hyperpartitions").get_json()["num_results"] == len(
        run["hyperpartitions"])


def test_pagination_filters_and_ordering(backend_app, workdir):
    client = backend_app.test_client()
    register_iris(client, workdir)
    for _ in range(3):
        assert client.post("/api/run", json={"dataset_id": 1, "methods": ["dt"]}).status_code \
            == 200
    page = client.get("/api/hyperpartitions?results_per_page=4&page=2").get_json()
    total = page["num_results"]
    assert total == 6 and page["page"] == 2 and page["total_pages"] == 2
    assert [o["id"] for o in page["objects"]] == [5, 6]
    beyond = client.get(f"/api/hyperpartitions?results_per_page=4&page={total}").get_json()
    assert beyond["objects"] == [] and beyond["num_results"] == total
    capped = client.get("/api/hyperpartitions?results_per_page=1000").get_json()
    assert len(capped["objects"]) == min(total, 100)
    assert len(client.get("/api/hyperpartitions").get_json()["objects"]) == min(total, 10)

    def query(q, table="dataruns"):
        response = client.get(f"/api/{table}", query_string={"q": json.dumps(q)})
        assert response.status_code == 200, response.get_json()
        return [o["id"] for o in response.get_json()["objects"]]

    assert query({"order_by": [{"field": "id", "direction": "desc"}]}) == [3, 2, 1]
    assert query({"filters": [{"name": "id", "op": "neq", "val": 2}]}) == [1, 3]
    assert query({"filters": [{"name": "id", "op": "lt", "val": 2}]}) == [1]
    assert query({"filters": [{"name": "id", "op": "le", "val": 2}]}) == [1, 2]
    assert query({"filters": [{"name": "id", "op": "gt", "val": 2}]}) == [3]
    assert query({"filters": [{"name": "id", "op": "ge", "val": 2}]}) == [2, 3]
    assert query({"filters": [{"name": "id", "op": "in", "val": [1, 3]}]}) == [1, 3]
    assert query({"filters": [{"name": "id", "op": "not_in", "val": [1, 3]}]}) == [2]
    assert query({"filters": [{"name": "status", "op": "eq", "val": "pending"}]}) == [1, 2, 3]
    assert query({"filters": [{"name": "tuner", "op": "like", "val": "uni%"}]}) == [1, 2, 3]
    assert query({"filters": [{"name": "deadline", "op": "is_null"}]}) == [1, 2, 3]
    assert query({"filters": [{"name": "deadline", "op": "is_not_null"}]}) == []
    assert query({"filters": [{"name": "start_time", "op": "lt",
                               "val": "2000-01-01T00:00:00Z"}]}) == []
    assert query({"filters": [{"name": "majority", "op": "gt", "val": 0.3}]},
                 "datasets") == [1]
    children = client.get("/api/datasets/1/dataruns", query_string={
        "q": json.dumps({"filters": [{"name": "id", "op": "ge", "val": 2}],
                         "order_by": [{"field": "id", "direction": "desc"}]}),
        "results_per_page": 1}).get_json()
    assert children["num_results"] == 2 and [o["id"] for o in children["objects"]] == [3]
    assert children["total_pages"] == 2


def test_empty_collection(client):
    assert client.get("/api/classifiers").get_json() == {
        "num_results": 0, "objects": [], "page": 1, "total_pages": 0}


# -- errors: nothing is written ---------------------------------------------------------

BAD_DATASETS = [
    pytest.param(b'{"train_path": "iris.csv", ', "application/json", 400,
                 ["malformed JSON body"], None, id="malformed-json"),
    pytest.param(b"[1, 2]", "application/json", 400, ["must be an object"], "body",
                 id="not-an-object"),
    pytest.param(b'{"train_path": "iris.csv"}', "application/json", 400,
                 ["missing required field(s)", "class_column"], "class_column",
                 id="missing-field"),
    pytest.param(b'{"train_path": "iris.csv", "class_column": "class", "colour": 1}',
                 "application/json", 400, ["unknown field(s)", "colour"], "colour",
                 id="unknown-field"),
    pytest.param(b'{"train_path": 7, "class_column": "class"}', "application/json", 400,
                 ["train_path must be a string, got 7"], "train_path", id="wrong-type"),
    pytest.param(b'{"train_path": "iris.csv", "class_column": "clas"}', "application/json",
                 400, ["has no column 'clas'", "sepal_length_cm"], "class_column",
                 id="engine-rejects-class-column"),
    pytest.param(b'{"train_path": "one_class.csv", "class_column": "class"}',
                 "application/json", 400, ["has 1 class(es)", "needs at least 2"],
                 "class_column", id="engine-rejects-one-class"),
    pytest.param(b'{"train_path": "empty.csv", "class_column": "class"}',
                 "application/json", 400, ["is empty"], "train_path", id="engine-rejects-empty"),
    pytest.param(b'{"train_path": "missing.csv", "class_column": "class"}',
                 "application/json", 400, ["does not exist"], "train_path", id="no-such-file"),
    pytest.param(b'{"train_path": "../../etc/passwd", "class_column": "class"}',
                 "application/json", 400, ["outside the allowed data directories"],
                 "train_path", id="dotdot-escape"),
    pytest.param(b'{"train_path": "/etc/passwd", "class_column": "class"}',
                 "application/json", 400, ["outside the allowed data directories"],
                 "train_path", id="absolute-elsewhere"),
    pytest.param(b'{"train_path": "link.csv", "class_column": "class"}',
                 "application/json", 400, ["outside the allowed data directories"],
                 "train_path", id="symlink-out"),
    pytest.param(b'{"train_path": "iris.csv", "test_path": "/etc/hosts", "class_column": "c"}',
                 "application/json", 400, ["test_path", "outside"], "test_path",
                 id="test-path-escape"),
    pytest.param(b'{"train_path": "http://example.com/x.csv", "class_column": "class"}',
                 "application/json", 400, ["is a URL", "does not fetch URLs"], "train_path",
                 id="url-not-fetched"),
    pytest.param(b'{"train_path": "iris.csv", "class_column": "class", "name": "' + b"n" * 101
                 + b'"}', "application/json", 400, ["name must be at most 100 characters"],
                 "name", id="name-too-long"),
    pytest.param(b'{"train_path": "iris\\u0000.csv", "class_column": "class"}',
                 "application/json", 400, ["NUL"], "train_path", id="nul-character"),
    pytest.param(b"train_path=iris.csv", "application/x-www-form-urlencoded", 415,
                 ["Content-Type: application/json"], None, id="wrong-content-type"),
]


@pytest.fixture
def bad_files(workdir, tmp_path_factory):
    copy_demo(workdir)
    (workdir / "one_class.csv").write_text("a,class\n" + "1,x\n" * 10)
    (workdir / "empty.csv").write_text("")
    outside = tmp_path_factory.mktemp("outside") / "secret.csv"
    outside.write_text((workdir / "iris.csv").read_text())
    (workdir / "link.csv").symlink_to(outside)


@pytest.mark.parametrize("body, content_type, status, fragments, field", BAD_DATASETS)
def test_bad_dataset_is_refused_and_nothing_written(client, db, workdir, bad_files, body,
                                                    content_type, status, fragments, field):
    before = snapshot(db, workdir)
    response = client.post("/api/datasets", data=body, content_type=content_type)
    assert_problem(response, status, *fragments, field=field)
    assert snapshot(db, workdir) == before


BAD_RUNS = [
    pytest.param({}, 400, ["missing required field: dataset_id"], "dataset_id", id="missing"),
    pytest.param({"dataset_id": "1"}, 400, ["dataset_id must be an integer"], "dataset_id",
                 id="wrong-type"),
    pytest.param({"dataset_id": 99}, 404, ["dataset 99 does not exist"], None,
                 id="unknown-dataset"),
    pytest.param({"dataset_id": 10**30}, 404, ["does not exist"], None, id="huge-dataset-id"),
    pytest.param({"dataset_id": 1, "methods": ["svn"]}, 400, ["unknown method 'svn'"],
                 "method", id="unknown-method"),
    pytest.param({"dataset_id": 1, "methods": ["/etc/x.json"]}, 400, ["outside"], "methods",
                 id="method-file-outside"),
    pytest.param({"dataset_id": 1, "tuner": "bayes"}, 400, ["unknown tuner 'bayes'"], "tuner",
                 id="unknown-tuner"),
    pytest.param({"dataset_id": 1, "selector": "best"}, 400, ["unknown selector 'best'"],
                 "selector", id="unknown-selector"),
    pytest.param({"dataset_id": 1, "metric": "auc"}, 400, ["unknown metric 'auc'"], "metric",
                 id="unknown-metric"),
    pytest.param({"dataset_id": 1, "metric": "mcc"}, 400, ["not defined for a problem with 3"],
                 "metric",
                 id="metric-wrong-for-multiclass"),
    pytest.param({"dataset_id": 1, "budget": "lots"}, 400, ["budget must be an integer"],
                 "budget", id="budget-wrong-type"),
    pytest.param({"dataset_id": 1, "budget": 0}, 400, ["budget must be at least 1"], "budget",
                 id="budget-zero"),
    pytest.param({"dataset_id": 1, "budget": 2**40}, 400, ["budget must be at most"], "budget",
                 id="budget-too-big"),
    pytest.param({"dataset_id": 1, "deadline": "soon"}, 400, ["deadline 'soon' is not a date"],
                 "deadline", id="bad-deadline"),
    pytest.param({"dataset_id": 1, "colour": "red"}, 400, ["unknown datarun option(s): colour"],
                 "colour", id="unknown-option"),
    pytest.param({"dataset_id": 1, "db": "x"}, 400, ["unknown datarun option(s): db"], "db",
                 id="option-named-like-a-parameter"),
]


@pytest.mark.parametrize("body, status, fragments, field", BAD_RUNS)
def test_bad_run_is_refused_and_nothing_written(client, db, iris, body, status, fragments,
                                                field):
    before = snapshot(db)
    response = client.post("/api/run", json=body)
    assert_problem(response, status, *fragments, field=field)
    assert snapshot(db) == before


def test_malformed_run_body(client, db, iris):
    before = snapshot(db)
    assert_problem(client.post("/api/run", data=b"{nope", content_type="application/json"),
                   400, "malformed JSON body")
    assert_problem(client.post("/api/run", data=b'{"dataset_id": NaN}',
                               content_type="application/json"), 400, "NaN")
    assert_problem(client.post("/api/run", data=b"dataset_id=1"), 415, "application/json")
    assert snapshot(db) == before


BAD_QUERIES = [
    pytest.param("page=two", ["page must be a positive integer, got 'two'"], "page",
                 id="page-not-integer"),
    pytest.param("page=0", ["page must be a positive integer"], "page", id="page-zero"),
    pytest.param("page=1.5", ["page must be a positive integer"], "page", id="page-float"),
    pytest.param("results_per_page=x", ["results_per_page must be a positive integer"],
                 "results_per_page", id="per-page-not-integer"),
    pytest.param("q={nope", ["q is not valid JSON"], "q", id="q-not-json"),
    pytest.param("q=[1]", ["q must be a JSON object"], "q", id="q-not-object"),
    pytest.param('q={"limit":1}', ["unknown key(s): limit"], "q", id="q-unknown-key"),
    pytest.param('q={"filters":[{"name":"colour","op":"eq","val":1}]}',
                 ["datasets has no column 'colour'", "class_column"], "q", id="unknown-column"),
    pytest.param('q={"filters":[{"name":"id","op":"almost","val":1}]}',
                 ["unknown op 'almost'", "is_not_null"], "q", id="unknown-op"),
    pytest.param('q={"filters":[{"name":"id","op":"eq","val":"one"}]}',
                 ["value 'one' for column 'id' must be an integer"], "q", id="wrong-val-type"),
    pytest.param('q={"filters":[{"name":"name","op":"eq","val":5}]}',
                 ["must be a string"], "q", id="number-for-text"),
    pytest.param('q={"filters":[{"name":"id","op":"in","val":1}]}',
                 ["needs a list"], "q", id="in-without-list"),
    pytest.param('q={"filters":[{"name":"id","op":"eq"}]}', ["needs a val"], "q",
                 id="missing-val"),
    pytest.param('q={"filters":[{"name":"id","op":"lt","val":null}]}', ["cannot compare"],
                 "q", id="lt-null"),
    pytest.param('q={"filters":[{"name":"id","op":"like","val":"1%"}]}', ["text column"], "q",
                 id="like-on-number"),
    pytest.param('q={"filters":[{"name":"id","op":"eq","val":99999999999999999999999}]}',
                 ["must be an integer"], "q", id="integer-overflow"),
    pytest.param('q={"order_by":[{"field":"id","direction":"up"}]}',
                 ["direction must be asc or desc"], "q", id="bad-direction"),
    pytest.param('q={"order_by":[{"field":"nope"}]}', ["no column 'nope'"], "q",
                 id="order-unknown-column"),
    pytest.param('q={"filters":{"name":"id"}}', ["must be lists"], "q", id="filters-not-list"),
]


@pytest.mark.parametrize("query, fragments, field", BAD_QUERIES)
def test_bad_query_is_a_400(client, iris, query, fragments, field):
    response = client.get(f"/api/datasets?{query}")
    assert_problem(response, 400, *fragments, field=field)


def test_bad_query_on_children_and_json_columns(client, iris):
    client.post("/api/run", json={"dataset_id": 1, "methods": ["dt"]})
    assert_problem(client.get("/api/datasets/1/dataruns?page=x"), 400, "page")
    q = json.dumps({"filters": [{"name": "constant_hyperparameters", "op": "eq", "val": "x"}]})
    assert_problem(client.get("/api/hyperpartitions", query_string={"q": q}), 400, "holds JSON")


@pytest.mark.parametrize("method, url, status, fragment", [
    ("get", "/api/nothing", 404, "no resource at /api/nothing"),
    ("get", "/nothing/at/all", 404, "no resource"),
    ("get", "/api/datasets/42", 404, "dataset 42 does not exist"),
    ("get", "/api/dataruns/42/classifiers", 404, "datarun 42 does not exist"),
    ("get", "/api/dataruns/42/dataset", 404, "datarun 42 does not exist"),
    ("get", "/api/datasets/1/colours", 404, "relations are: dataruns"),
    ("get", "/api/datasets/99999999999999999999999", 404, "does not exist"),
    ("get", "/api/datasets/-1", 404, "no resource"),
    ("delete", "/api/datasets/1", 405, "DELETE is not allowed"),
    ("put", "/api/datasets", 405, "PUT is not allowed"),
    ("post", "/api/classifiers", 405, "POST is not allowed"),
    ("get", "/api/run", 405, "GET is not allowed"),
    ("get", "/api/dataruns/1/stop", 405, "use POST"),
    ("get", "/api/classifiers/1/predict", 405, "use POST"),
])
def test_routing_errors_are_problem_json(client, iris, method, url, status, fragment):
    response = getattr(client, method)(url)
    body = assert_problem(response, status, fragment)
    assert "Traceback" not in json.dumps(body)
    if status == 405:
        assert response.headers["Allow"]


# -- safety -----------------------------------------------------------------------------

@pytest.fixture
def guarded(db, workdir):
    settings = api_settings(db, workdir, api_token="s3cret",
                            cors_origins=["https://ui.example"])
    return create_app(settings, db).test_client()


def test_token_needed_on_post_only(guarded, db, workdir):
    copy_demo(workdir)
    body = {"train_path": "iris.csv", "class_column": "class"}
    before = snapshot(db)
    response = guarded.post("/api/datasets", json=body)
    assert_problem(response, 401, "Authorization: Bearer")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert_problem(guarded.post("/api/datasets", json=body,
                                headers={"Authorization": "Bearer wrong"}), 401)
    assert_problem(guarded.post("/api/run", json={"dataset_id": 1}), 401)
    assert snapshot(db) == before
    assert guarded.get("/api/datasets").status_code == 200
    ok = guarded.post("/api/datasets", json=body, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 201


def test_protect_reads(db, workdir):
    settings = api_settings(db, workdir, api_token="t", protect_reads=True)
    client = create_app(settings, db).test_client()
    assert_problem(client.get("/api/datasets"), 401)
    assert client.get("/api/datasets", headers={"Authorization": "Bearer t"}).status_code == 200
    assert client.get("/").status_code == 200  # the documentation stays readable


def test_cors_only_for_configured_origins_with_credentials(guarded):
    allowed = guarded.get("/api/datasets", headers={"Origin": "https://ui.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://ui.example"
    assert allowed.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in allowed.headers["Vary"]
    other = guarded.get("/api/datasets", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = guarded.options("/api/datasets", headers={
        "Origin": "https://ui.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type"})
    assert preflight.status_code == 200  # no token needed for a preflight
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]


def test_cors_wildcard_never_with_credentials(db, workdir):
    client = create_app(api_settings(db, workdir, cors_origins=["*"]), db).test_client()
    response = client.get("/api/datasets", headers={"Origin": "https://any.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers
    none = create_app(api_settings(db, workdir), db).test_client()
    assert "Access-Control-Allow-Origin" not in none.get(
        "/api/datasets", headers={"Origin": "https://any.example"}).headers


def test_create_app_defaults_to_loaded_settings(workdir, monkeypatch):
    monkeypatch.setenv("ATM_SQL_URL", f"sqlite:///{workdir / 'env.db'}")
    app = create_app()
    assert app.extensions["atm"].settings.sql_url.endswith("env.db")
    assert app.test_client().get("/api/datasets").get_json()["num_results"] == 0
    assert (workdir / "env.db").exists()


def test_an_unreachable_database_answers_503_with_retry_after(workdir):
    gone = Database(f"sqlite:///{workdir / 'no' / 'such' / 'dir' / 'atm.db'}", create=False,
                    max_attempts=1)
    client = create_app(api_settings(gone, workdir), gone).test_client()
    response = client.get("/api/datasets")
    assert_problem(response, 503, "the database is unavailable; try again later")
    assert response.headers["Retry-After"] == "5"
