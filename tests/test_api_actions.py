"""Actions of the REST API: CSV upload, stop, model download and predict, against
classifiers trained by a real worker."""

from __future__ import annotations

import http.server
import io
import threading
from pathlib import Path

import pandas as pd
import pytest
from api_support import DEMOS, api_settings, assert_problem, copy_demo, snapshot, train

from atm.api import create_app
from atm.database import Database
from atm.model import Model

FEATURES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]


@pytest.fixture(scope="module")
def trained_hub(tmp_path_factory):
    """An iris datarun of three logistic regressions, trained once for this module."""
    home = tmp_path_factory.mktemp("hub")
    db = Database(f"sqlite:///{home / 'atm.db'}")
    client = create_app(api_settings(db, home), db).test_client()
    copy_demo(home)
    dataset = client.post("/api/datasets", json={"train_path": str(home / "iris.csv"),
                                                 "class_column": "class"})
    assert dataset.status_code == 201
    run = client.post("/api/run", json={"dataset_id": 1, "budget": 3, "methods": ["logreg"]})
    assert run.status_code == 200
    assert train(db, home, max_classifiers=3) == 3
    best = client.get("/api/dataruns/1").get_json()["progress"]["best_classifier_id"]
    assert best is not None
    yield client, db, best
    db.dispose()


def iris_frame() -> pd.DataFrame:
    return pd.read_csv(DEMOS / "iris.csv")


# -- predict ----------------------------------------------------------------------------

def test_predict_json_matches_model_predict(trained_hub):
    client, db, best = trained_hub
    frame = iris_frame().sample(25, random_state=3)
    rows = frame[FEATURES].to_dict(orient="records")
    response = client.post(f"/api/classifiers/{best}/predict", json={"rows": rows})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    model = Model.load(db.get_classifier(best).model_location)
    expected = model.predict(frame[FEATURES]).tolist()
    assert body["predictions"] == expected
    assert body["classifier_id"] == best
    assert sorted(body["classes"]) == ["setosa", "versicolor", "virginica"]
    assert len(body["probabilities"]) == 25
    for row, label in zip(body["probabilities"], expected, strict=True):
        assert set(row) == set(body["classes"])
        assert sum(row.values()) == pytest.approx(1.0)
        assert max(row, key=row.get) == label


def test_predict_csv_body_with_class_column(trained_hub):
    client, db, best = trained_hub
    frame = iris_frame().head(12)
    response = client.post(f"/api/classifiers/{best}/predict",
                           data=frame.to_csv(index=False), content_type="text/csv")
    assert response.status_code == 200, response.get_json()
    model = Model.load(db.get_classifier(best).model_location)
    assert response.get_json()["predictions"] == model.predict(frame[FEATURES]).tolist()


@pytest.mark.parametrize("payload, fragments", [
    pytest.param({"rows": [{"sepal_length_cm": 5.0}]},
                 ["missing column(s): sepal_width_cm, petal_length_cm, petal_width_cm"],
                 id="missing-columns"),
    pytest.param({"rows": [{**dict.fromkeys(FEATURES, 1.0), "colour": "red", "size": 2}]},
                 ["unknown column(s): colour, size"], id="extra-columns"),
    pytest.param({"rows": []}, ["non-empty list"], id="no-rows"),
    pytest.param({"rows": "all"}, ["non-empty list"], id="rows-not-a-list"),
    pytest.param({"data": []}, ["unknown field(s): data"], id="unknown-field"),
    pytest.param({"rows": [{**dict.fromkeys(FEATURES, 1.0), "petal_width_cm": [1]}]},
                 ["must be a number, a string or null"], id="nested-value"),
    pytest.param({"rows": [{**dict.fromkeys(FEATURES, 1.0), "petal_width_cm": "wide"}]},
                 ["do not fit the model"], id="text-for-a-number"),
])
def test_predict_bad_rows(trained_hub, payload, fragments):
    client, _, best = trained_hub
    response = client.post(f"/api/classifiers/{best}/predict", json=payload)
    assert_problem(response, 400, *fragments)


def test_predict_other_errors(trained_hub):
    client, db, best = trained_hub
    assert_problem(client.post("/api/classifiers/999/predict", json={"rows": [{}]}), 404,
                   "classifier 999 does not exist")
    assert_problem(client.post(f"/api/classifiers/{best}/predict", data=b"x",
                               content_type="application/octet-stream"), 415, "text/csv")
    assert_problem(client.post(f"/api/classifiers/{best}/predict", data=b"{",
                               content_type="application/json"), 400, "malformed JSON")
    assert_problem(client.post(f"/api/classifiers/{best}/predict", data=b"",
                               content_type="text/csv"), 400, "CSV body")


# -- model download -----------------------------------------------------------------------

def test_model_download_is_the_model_file(trained_hub, tmp_path):
    client, db, best = trained_hub
    response = client.get(f"/api/classifiers/{best}/model")
    assert response.status_code == 200
    assert response.mimetype == "application/octet-stream"
    location = Path(db.get_classifier(best).model_location)
    assert f"filename={location.name}" in response.headers["Content-Disposition"]
    assert response.data == location.read_bytes()
    saved = tmp_path / "downloaded.model"
    saved.write_bytes(response.data)  # our own server's file: trusted in this test
    frame = iris_frame().head(5)[FEATURES]
    assert Model.load(saved).predict(frame).tolist() == Model.load(location).predict(
        frame).tolist()
    assert_problem(client.get("/api/classifiers/999/model"), 404, "does not exist")


def test_no_model_for_a_classifier_without_one(client, db, workdir):
    client.post("/api/datasets", json={"train_path": copy_demo(workdir), "class_column": "class"})
    client.post("/api/run", json={"dataset_id": 1, "methods": ["dt"]})
    partition = client.get("/api/hyperpartitions/1").get_json()
    classifier_id = db.claim_classifier(1, partition["id"], {}, "host", "w1", 1)
    assert_problem(client.get(f"/api/classifiers/{classifier_id}/model"), 404,
                   "has no model file (status running)")
    assert_problem(client.post(f"/api/classifiers/{classifier_id}/predict",
                               json={"rows": [{}]}), 404, "has no model file")


# -- stop ---------------------------------------------------------------------------------

def test_stop_a_datarun(client, db, workdir):
    client.post("/api/datasets", json={"train_path": copy_demo(workdir), "class_column": "class"})
    run_id = client.post("/api/run", json={"dataset_id": 1, "methods": ["dt"], "budget": 5}
                         ).get_json()["datarun_ids"][0]
    response = client.post(f"/api/dataruns/{run_id}/stop")
    assert response.status_code == 200
    body = response.get_json()
    assert body["id"] == run_id and body["status"] == "stopped" and body["end_time"]
    assert body["progress"]["classifiers_complete"] == 0
    # a stopped run gets no new classifier
    assert train(db, workdir, max_classifiers=2) == 0
    assert client.get(f"/api/dataruns/{run_id}").get_json()["classifiers"] == []
    assert_problem(client.post(f"/api/dataruns/{run_id}/stop"), 409, "already stopped")
    assert_problem(client.post("/api/dataruns/77/stop"), 404, "datarun 77 does not exist")


# -- upload -------------------------------------------------------------------------------

def test_upload_a_csv(client, workdir):
    data = {"file": (io.BytesIO((DEMOS / "wine.csv").read_bytes()), "my wine.csv"),
            "class_column": "class", "description": "uploaded"}
    response = client.post("/api/datasets", data=data, content_type="multipart/form-data")
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["name"] == "my wine" and body["description"] == "uploaded"
    stored = Path(body["train_path"])
    assert stored.parent == (workdir / "uploads").resolve()
    assert stored.read_bytes() == (DEMOS / "wine.csv").read_bytes()
    assert body["k_classes"] == 3 and body["n_examples"] > 100


@pytest.mark.parametrize("data, status, fragments", [
    pytest.param({"class_column": "class"}, 400, ["needs a 'file' part"], id="no-file"),
    pytest.param({"file": (io.BytesIO(b"a,class\n1,x\n"), "x.csv")}, 400,
                 ["missing required field(s) for a dataset: class_column"], id="no-class-column"),
    pytest.param({"file": (io.BytesIO(b"a,class\n" + b"1,x\n" * 9), "x.csv"),
                  "class_column": "class"}, 400, ["has 1 class(es)"], id="engine-rejects"),
    pytest.param({"file": (io.BytesIO(b"a,b\n1,2\n"), "x.csv"), "class_column": "class",
                  "colour": "red"}, 400, ["unknown form field(s): colour"], id="unknown-field"),
    pytest.param({"file": (io.BytesIO(b"\x00\x01binary" * 10), "x.csv"),
                  "class_column": "class"}, 400, [], id="binary-file"),
])
def test_bad_upload_writes_nothing(client, db, workdir, data, status, fragments):
    before = snapshot(db, workdir)
    response = client.post("/api/datasets", data=data, content_type="multipart/form-data")
    assert_problem(response, status, *fragments)
    assert snapshot(db, workdir) == before


def test_upload_over_the_limit_is_413(db, workdir):
    client = create_app(api_settings(db, workdir, max_upload_mb=0.001), db).test_client()
    before = snapshot(db, workdir)
    data = {"file": (io.BytesIO(b"a,class\n" + b"1,x\n" * 2000), "big.csv"),
            "class_column": "class"}
    assert_problem(client.post("/api/datasets", data=data, content_type="multipart/form-data"),
                   413)
    big_json = {"train_path": "x" * 5000, "class_column": "class"}
    assert_problem(client.post("/api/datasets", json=big_json), 413)
    assert snapshot(db, workdir) == before


# -- URLs -------------------------------------------------------------------------------

@pytest.fixture
def csv_server():
    """A local HTTP server serving the demo directory."""
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(DEMOS), **k)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_urls_fetched_only_when_allowed(db, workdir, csv_server):
    url = f"{csv_server}/iris.csv"
    closed = create_app(api_settings(db, workdir), db).test_client()
    assert_problem(closed.post("/api/datasets", json={"train_path": url, "class_column": "class"}),
                   400, "does not fetch URLs")
    assert snapshot(db, workdir)["datasets"] == 0
    open_app = create_app(api_settings(db, workdir, allow_urls=True), db).test_client()
    response = open_app.post("/api/datasets", json={"train_path": url, "class_column": "class"})
    assert response.status_code == 201, response.get_json()
    assert Path(response.get_json()["train_path"]).parent == (workdir / "uploads").resolve()
    before = snapshot(db, workdir)
    assert_problem(open_app.post("/api/datasets", json={"train_path": f"{csv_server}/nope.csv",
                                                        "class_column": "class"}),
                   400, "could not be fetched")
    assert_problem(open_app.post("/api/datasets", json={"train_path": "ftp://x/y.csv",
                                                        "class_column": "class"}),
                   400, "only http and https")
    assert snapshot(db, workdir) == before
