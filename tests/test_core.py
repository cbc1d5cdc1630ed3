"""The Python API end to end on SQLite: a datarun runs to its budget, its results can be
read, exported and reloaded; failing fits, partitions with nothing to tune and walltime
budgets end the way a user expects."""

import json
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from atm import ATM, Model
from atm.exceptions import InvalidInputError, NotFoundError

IRIS_LABELS = {"setosa", "versicolor", "virginica"}


@pytest.fixture
def atm(workdir, sqlite_url):
    instance = ATM(sql_url=sqlite_url)
    yield instance
    instance.db.dispose()


def _features(path):
    frame = pd.read_csv(path)
    return frame.drop(columns=["class"]), frame["class"]


def test_run_end_to_end(atm, demo, workdir, capsys):
    path = demo("iris")
    run = atm.run(path, budget=8, methods=["logreg", "dt"])

    assert run.status == "complete"
    assert run.end_time is not None and run.start_time is not None
    classifiers = atm.db.get_classifiers(run.id)
    assert len(classifiers) == 8
    assert [c.status for c in classifiers] == ["complete"] * 8
    assert {atm.db.get_hyperpartition(c.hyperpartition_id).method for c in classifiers} <= {
        "logreg", "dt"}
    for c in classifiers:
        assert Path(c.model_location).is_file() and Path(c.metrics_location).is_file()
        assert Path(c.model_location).parent.name == "models"
        assert Path(c.metrics_location).parent.name == "metrics"
        metrics = json.loads(Path(c.metrics_location).read_text())
        assert len(metrics["cv"]) == 5 and "f1_macro" in metrics["test"]
        assert 0.0 <= c.cv_judgment_metric <= 1.0 and c.cv_judgment_metric_stdev >= 0.0

    text = run.describe()
    assert capsys.readouterr().out.strip() == text
    assert f"Datarun {run.id} on dataset {run.dataset_id} (iris): complete" in text
    assert "classifiers: 8 complete, 0 errored, 0 running" in text

    scores = run.get_scores()
    assert sorted(scores.index) == sorted(c.id for c in classifiers)
    assert list(scores["rank"]) == list(range(1, 9))
    cv = list(scores["cv_judgment_metric"])
    assert cv == sorted(cv, reverse=True)

    best = run.get_best_classifier()
    assert best.id == scores.index[0]
    assert best.cv_judgment_metric == max(c.cv_judgment_metric for c in classifiers)

    exported = run.export_best_classifier("best.model")
    assert exported == Path("best.model") and exported.is_file()
    with pytest.raises(InvalidInputError, match="'best.model' exists; pass force=True"):
        run.export_best_classifier("best.model")
    before = exported.stat().st_size
    exported.write_bytes(b"junk")
    run.export_best_classifier("best.model", force=True)
    assert exported.stat().st_size == before

    x, y = _features(path)
    for model in (Model.load("best.model"), atm.load_model(best.id)):
        predicted = model.predict(x)
        assert set(predicted) <= IRIS_LABELS
        assert (predicted == y).mean() > 0.8
    with pytest.raises(NotFoundError, match="classifier 999 does not exist"):
        atm.load_model(999)


def test_mu_sigma_target_picks_the_best_cv_minus_two_stdev(atm, demo):
    run = atm.run(demo("wine"), budget=4, methods=["dt"], score_target="mu_sigma",
                  metric="accuracy")
    assert run.score_target == "mu_sigma_judgment_metric"
    classifiers = atm.db.get_classifiers(run.id, ["complete"])
    assert len(classifiers) == 4
    lower_bound = {c.id: c.cv_judgment_metric - 2 * c.cv_judgment_metric_stdev
                   for c in classifiers}
    best = run.get_best_classifier()
    assert lower_bound[best.id] == pytest.approx(max(lower_bound.values()))


FAILING_MODULE = """
from sklearn.base import BaseEstimator, ClassifierMixin


class AlwaysFails(ClassifierMixin, BaseEstimator):
    def __init__(self, alpha=1.0):
        self.alpha = alpha

    def fit(self, X, y):
        raise ValueError("this classifier always fails (alpha=%r)" % self.alpha)
"""


@pytest.fixture
def failing_method(tmp_path, monkeypatch):
    module_dir = tmp_path / "plugins"
    module_dir.mkdir()
    (module_dir / "atm_test_failing.py").write_text(textwrap.dedent(FAILING_MODULE))
    monkeypatch.syspath_prepend(str(module_dir))
    path = tmp_path / "failing.json"
    path.write_text(json.dumps({
        "name": "failing",
        "class": "atm_test_failing.AlwaysFails",
        "hyperparameters": {"alpha": {"type": "float", "range": [0.0, 1.0]}},
        "root_hyperparameters": ["alpha"],
        "conditional_hyperparameters": {},
    }))
    return str(path)


def test_failing_fits_error_their_classifiers_and_then_their_partition(atm, demo,
                                                                        failing_method):
    run = atm.run(demo("iris"), budget=10, methods=[failing_method, "gnb"])

    assert run.status == "complete"
    partitions = {p.method: p for p in atm.db.get_hyperpartitions(run.id)}
    assert set(partitions) == {failing_method, "gnb"}
    assert partitions[failing_method].status == "errored"
    assert partitions["gnb"].status == "gridding_done"

    classifiers = atm.db.get_classifiers(run.id)
    errored = [c for c in classifiers if c.status == "errored"]
    complete = [c for c in classifiers if c.status == "complete"]
    # more than 3 errors end the partition: exactly 4 tries; gnb trains once
    assert len(errored) == 4 and len(complete) == 1 and len(classifiers) == 5
    for c in errored:
        assert c.hyperpartition_id == partitions[failing_method].id
        assert c.error_message.startswith("Traceback (most recent call last):")
        assert "ValueError: this classifier always fails (alpha=" in c.error_message
        assert c.model_location is None and c.cv_judgment_metric is None
        assert 0.0 <= c.hyperparameter_values["alpha"] <= 1.0
    assert complete[0].hyperpartition_id == partitions["gnb"].id
    assert run.get_best_classifier().id == complete[0].id
    assert "classifiers: 1 complete, 4 errored, 0 running" in run.describe()


def test_a_partition_with_nothing_to_tune_trains_exactly_once(atm, demo):
    run = atm.run(demo("wine"), budget=5, methods=["gnb"])
    assert run.status == "complete"
    [partition] = atm.db.get_hyperpartitions(run.id)
    assert partition.tunables == [] and partition.status == "gridding_done"
    [classifier] = atm.db.get_classifiers(run.id)
    assert classifier.status == "complete"
    assert classifier.hyperparameter_values == {"_scale_minmax": True}
    assert atm.load_model(classifier.id).predict(_features("wine.csv")[0]).isin(
        {"class_0", "class_1", "class_2"}).all()


def test_a_walltime_budget_ends_the_datarun(atm, demo):
    deadline = datetime.now(UTC).replace(tzinfo=None, microsecond=0) + \
        timedelta(seconds=3)
    run = atm.run(demo("iris"), methods=["dt"], deadline=deadline.strftime("%Y-%m-%d %H:%M:%S"))

    assert run.budget_type == "walltime"
    assert run.status == "complete"
    assert run.end_time >= deadline  # it ended because time was up (dt never runs out)
    counts = atm.db.count_classifiers(run.id)
    assert counts["running"] == 0
    assert counts["complete"] >= 1


def test_dataruns_can_be_added_and_worked_separately(atm, demo):
    dataset = atm.add_dataset(demo("iris"), name="flowers")
    assert dataset.name == "flowers"
    first = atm.add_datarun(dataset.id, budget=2, methods=["knn"], tuner="gp", priority=5)
    second = atm.add_datarun(dataset.id, budget=2, methods=["dt"])
    assert first.status == second.status == "pending"
    assert atm.work([second.id]) == 2
    assert atm.get_datarun(second.id).status == "complete"
    assert atm.get_datarun(first.id).status == "pending"  # not asked for
    assert atm.work() == 2
    assert atm.get_datarun(first.id).status == "complete"
    with pytest.raises(NotFoundError):
        atm.get_datarun(99)
    with pytest.raises(InvalidInputError, match="unknown tuner 'bogus'"):
        atm.add_datarun(dataset.id, tuner="bogus")
