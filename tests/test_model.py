"""Evaluation: metric names per problem type, metric values against scikit-learn, the
fixed stratified hold-out, cross-validated scores, and model files that reload in a
fresh process and predict the dataset's own labels."""

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import DEMOS
from sklearn import metrics as skm

from atm.artifacts import load_metrics, save_metrics, save_model
from atm.constants import BINARY_METRICS, MULTICLASS_METRICS
from atm.exceptions import InvalidInputError
from atm.metrics import compute_metrics, judgment_metric_for, rank_accuracy
from atm.model import Model, holdout_split
from atm.models import Classifier

LOGREG = {"C": 1.0, "tol": 1e-4, "penalty": "l2", "dual": False, "fit_intercept": True,
          "solver": "liblinear", "class_weight": "balanced", "_scale": True}
DT = {"criterion": "gini", "max_features": 0.8, "max_depth": 4, "min_samples_split": 2,
      "min_samples_leaf": 1}


# -- metric names --------------------------------------------------------------------------


@pytest.mark.parametrize("metric, expected", [
    ("f1", "f1_macro"), ("roc_auc", "roc_auc_macro"), ("f1_micro", "f1_micro"),
    ("f1_macro", "f1_macro"), ("roc_auc_micro", "roc_auc_micro"), ("accuracy", "accuracy"),
    ("rank_accuracy", "rank_accuracy"), ("cohen_kappa", "cohen_kappa"),
])
def test_multiclass_metric_names(metric, expected):
    assert judgment_metric_for(metric, 3) == expected
    assert judgment_metric_for(metric, 7) == expected


@pytest.mark.parametrize("metric, expected", [
    ("f1", "f1"), ("f1_micro", "f1"), ("f1_macro", "f1"), ("roc_auc", "roc_auc"),
    ("roc_auc_micro", "roc_auc"), ("roc_auc_macro", "roc_auc"), ("ap", "ap"), ("mcc", "mcc"),
    ("accuracy", "accuracy"), ("cohen_kappa", "cohen_kappa"),
])
def test_binary_metric_aliases(metric, expected):
    assert judgment_metric_for(metric, 2) == expected


@pytest.mark.parametrize("metric, k, message", [
    ("mcc", 3, "metric 'mcc' is not defined for a problem with 3 classes; use one of: "
               "accuracy, f1_micro, f1_macro, roc_auc_micro, roc_auc_macro, rank_accuracy, "
               "cohen_kappa"),
    ("ap", 4, "metric 'ap' is not defined for a problem with 4 classes; use one of: "
              "accuracy, f1_micro, f1_macro, roc_auc_micro, roc_auc_macro, rank_accuracy, "
              "cohen_kappa"),
    ("rank_accuracy", 2, "metric 'rank_accuracy' is not defined for a binary problem; use one "
                         "of: accuracy, f1, roc_auc, ap, mcc, cohen_kappa"),
    ("precision", 2, "unknown metric 'precision'; known metrics are: accuracy, rank_accuracy, "
                     "cohen_kappa, f1, f1_micro, f1_macro, roc_auc, roc_auc_micro, "
                     "roc_auc_macro, ap, mcc"),
])
def test_metric_invalid_for_the_problem_type_raises(metric, k, message):
    with pytest.raises(InvalidInputError) as info:
        judgment_metric_for(metric, k)
    assert str(info.value) == message
    assert info.value.field == "metric"


# -- metric values -------------------------------------------------------------------------


def test_binary_metrics_match_scikit_learn():
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 0])
    p1 = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.9, 0.2, 0.6, 0.55, 0.3])
    y_pred = (p1 >= 0.5).astype(int)
    result = compute_metrics(y_true, y_pred, np.column_stack([1 - p1, p1]), 2)
    assert set(result) == set(BINARY_METRICS)
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert result["f1"] == pytest.approx(skm.f1_score(y_true, y_pred))
    assert result["mcc"] == pytest.approx(skm.matthews_corrcoef(y_true, y_pred))
    assert result["cohen_kappa"] == pytest.approx(skm.cohen_kappa_score(y_true, y_pred))
    assert result["roc_auc"] == pytest.approx(skm.roc_auc_score(y_true, p1))
    assert result["ap"] == pytest.approx(skm.average_precision_score(y_true, p1))
    # hand-checked anchors, so a shared mistake with sklearn's call cannot hide
    assert result["accuracy"] == pytest.approx(0.8)
    assert result["roc_auc"] == pytest.approx(18 / 25)  # pairs ranked right


def test_multiclass_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    y_true = np.repeat(np.arange(3), 10)
    proba = rng.dirichlet(np.ones(3), size=30)
    proba[np.arange(30), y_true] += 0.4  # informative but imperfect
    proba /= proba.sum(axis=1, keepdims=True)
    y_pred = proba.argmax(axis=1)
    result = compute_metrics(y_true, y_pred, proba, 3)
    assert set(result) == set(MULTICLASS_METRICS)
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert result["f1_micro"] == pytest.approx(skm.f1_score(y_true, y_pred, average="micro"))
    assert result["f1_macro"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    assert result["cohen_kappa"] == pytest.approx(skm.cohen_kappa_score(y_true, y_pred))
    assert result["roc_auc_macro"] == pytest.approx(
        skm.roc_auc_score(y_true, proba, multi_class="ovr", average="macro"))
    assert result["roc_auc_micro"] == pytest.approx(
        skm.roc_auc_score(np.eye(3)[y_true], proba, average="micro"))
    # k = 3: the top round(0.33 * 3) = 1 class, i.e. plain accuracy
    assert result["rank_accuracy"] == pytest.approx(result["accuracy"])


def test_rank_accuracy_is_a_fraction_not_truncated():
    # 6 classes: the true class must be among the top round(0.33 * 6) = 2 scores
    scores = np.array([
        [0.5, 0.3, 0.1, 0.05, 0.03, 0.02],  # truth 1: 2nd -> hit
        [0.5, 0.3, 0.1, 0.05, 0.03, 0.02],  # truth 2: 3rd -> miss
        [0.1, 0.1, 0.6, 0.1, 0.05, 0.05],   # truth 2: 1st -> hit
        [0.05, 0.05, 0.1, 0.1, 0.3, 0.4],   # truth 4: 2nd -> hit
    ])
    y_true = np.array([1, 2, 2, 4])
    assert rank_accuracy(y_true, scores) == pytest.approx(0.75)
    result = compute_metrics(y_true, scores.argmax(axis=1), scores, 6)
    assert result["rank_accuracy"] == pytest.approx(0.75)
    assert 0 < result["rank_accuracy"] < 1


def test_score_metrics_are_nan_without_scores_and_labels_still_count():
    y_true = np.array([0, 1, 2, 0, 1, 2])
    y_pred = np.array([0, 1, 1, 0, 1, 2])
    result = compute_metrics(y_true, y_pred, None, 3)
    assert result["accuracy"] == pytest.approx(5 / 6)
    assert math.isnan(result["roc_auc_macro"]) and math.isnan(result["rank_accuracy"])
    binary = compute_metrics(np.array([0, 1, 0, 1]), np.array([0, 1, 1, 1]), None, 2)
    assert binary["accuracy"] == 0.75 and math.isnan(binary["roc_auc"])


# -- the hold-out ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wine():
    frame = pd.read_csv(DEMOS / "wine.csv")
    return frame.drop(columns=["class"]), frame["class"]


def test_holdout_is_stratified_and_fixed_by_its_seed(wine):
    x, y = wine
    x_train, x_test, y_train, y_test = holdout_split(x, y, seed=11)
    assert len(x_test) == round(0.3 * len(x)) or len(x_test) == math.ceil(0.3 * len(x))
    assert len(x_train) + len(x_test) == len(x)
    assert set(x_train.index).isdisjoint(x_test.index)
    for label, total in y.value_counts().items():
        assert abs((y_test == label).sum() - 0.3 * total) <= 1, label
    again = holdout_split(x, y, seed=11)
    assert list(again[1].index) == list(x_test.index)
    assert list(again[3]) == list(y_test)
    other = holdout_split(x, y, seed=12)
    assert set(other[1].index) != set(x_test.index)


# -- training and scoring -----------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_wine(wine):
    x, y = wine
    x_train, x_test, y_train, y_test = holdout_split(x, y, seed=5)
    model = Model("logreg", dict(LOGREG), "f1_macro", random_state=5)
    scores = model.train_test(x_train, y_train, x_test, y_test)
    return model, scores, (x_train, x_test, y_train, y_test)


def test_train_test_cv_mean_and_std_come_from_the_folds(trained_wine):
    model, scores, _ = trained_wine
    assert len(model.cv_scores) == 5
    folds = [fold["f1_macro"] for fold in model.cv_scores]
    assert scores["cv"] == pytest.approx(sum(folds) / 5)
    mean = sum(folds) / 5
    assert scores["cv_stdev"] == pytest.approx(math.sqrt(sum((f - mean) ** 2 for f in folds) / 5))
    assert scores["test"] == pytest.approx(model.test_scores["f1_macro"])
    assert 0.85 < scores["cv"] <= 1.0 and 0.85 < scores["test"] <= 1.0
    for fold in model.cv_scores:
        assert set(fold) == set(MULTICLASS_METRICS)


def test_test_score_is_the_final_models_score_on_the_hold_out(trained_wine):
    model, scores, (_, x_test, _, y_test) = trained_wine
    predicted = model.predict(x_test)
    assert scores["test"] == pytest.approx(skm.f1_score(y_test, predicted, average="macro"))


def test_train_test_is_reproducible_for_a_seed(wine):
    x, y = wine
    parts = holdout_split(x, y, seed=8)
    first = Model("dt", dict(DT), "accuracy", random_state=8).train_test(*_order(parts))
    second = Model("dt", dict(DT), "accuracy", random_state=8).train_test(*_order(parts))
    assert first == second


def _order(parts):
    x_train, x_test, y_train, y_test = parts
    return x_train, y_train, x_test, y_test


def test_mu_sigma_is_cv_minus_two_stdev(trained_wine):
    _, scores, _ = trained_wine
    classifier = Classifier(cv_judgment_metric=scores["cv"],
                            cv_judgment_metric_stdev=scores["cv_stdev"])
    assert classifier.mu_sigma_judgment_metric == pytest.approx(
        scores["cv"] - 2 * scores["cv_stdev"])
    assert Classifier(cv_judgment_metric=0.9, cv_judgment_metric_stdev=0.05) \
        .mu_sigma_judgment_metric == pytest.approx(0.8)
    assert Classifier(cv_judgment_metric=None).mu_sigma_judgment_metric is None


def test_predict_needs_the_feature_columns(trained_wine):
    model, _, (_, x_test, _, _) = trained_wine
    with pytest.raises(InvalidInputError, match="missing feature column\\(s\\): alcohol;"):
        model.predict(x_test.drop(columns=["alcohol"]))
    # extra columns and another column order are fine
    shuffled = x_test[list(reversed(x_test.columns))].assign(extra=1)
    assert list(model.predict(shuffled)) == list(model.predict(x_test))


def test_metrics_file_holds_every_fold_and_the_test_scores(trained_wine, tmp_path):
    model, scores, _ = trained_wine
    path = save_metrics(model, tmp_path / "metrics", "wine-1-1")
    assert path.endswith("wine-1-1.metric")

    def no_nan(token):
        raise AssertionError(f"metrics file holds the non-JSON token {token}")

    with open(path) as handle:
        content = json.loads(handle.read(), parse_constant=no_nan)
    assert content == load_metrics(path)
    assert len(content["cv"]) == 5
    assert [fold["f1_macro"] for fold in content["cv"]] == pytest.approx(
        [fold["f1_macro"] for fold in model.cv_scores])
    assert set(content["test"]) == set(MULTICLASS_METRICS)
    assert content["test"]["f1_macro"] == pytest.approx(scores["test"])
    assert not list((tmp_path / "metrics").glob(".*"))  # no temporary file left behind


def test_nan_metrics_are_written_as_null(tmp_path):
    model = Model("dt", dict(DT), "accuracy")
    model.cv_scores = [{"accuracy": 0.5, "roc_auc": float("nan")}]
    model.test_scores = {"accuracy": 0.5, "roc_auc": float("nan")}
    path = save_metrics(model, tmp_path, "nan")
    with open(path) as handle:
        text = handle.read()
    assert "NaN" not in text
    assert json.loads(text)["test"] == {"accuracy": 0.5, "roc_auc": None}


# -- model files reload in a fresh process --------------------------------------------------

RELOAD = """
import json, sys
import pandas as pd
from atm import Model
predictions = {}
for model_path, csv_path in zip(sys.argv[1::2], sys.argv[2::2]):
    rows = pd.read_csv(csv_path).drop(columns=["class"])
    predictions[model_path] = list(Model.load(model_path).predict(rows))
print(json.dumps(predictions))
"""


def _train_and_save(tmp_path, labels):
    frame = pd.read_csv(DEMOS / "iris.csv")
    if labels == "integers":
        codes = {"setosa": 10, "versicolor": 20, "virginica": 30}
        frame["class"] = frame["class"].map(codes)
        # a row without a label makes pandas read the column as floats: 10.0, 20.0...
        frame = pd.concat([frame, frame.iloc[:1].assign(**{"class": None})])
    csv_path = tmp_path / f"{labels}.csv"
    frame.to_csv(csv_path, index=False)
    from atm.data import load_dataset_frames

    x, y, _, _ = load_dataset_frames(str(csv_path), None, "class")  # as a worker reads it
    model = Model("dt", dict(DT), "f1_macro", random_state=1)
    model.train_test(*_order(holdout_split(x, y, seed=1)))
    path = save_model(model, tmp_path / "models", f"iris-{labels}")
    return model, path, csv_path, x, y


def test_saved_models_reload_in_a_fresh_process_and_predict_original_labels(tmp_path):
    cases = {labels: _train_and_save(tmp_path, labels) for labels in ("strings", "integers")}
    arguments = [str(item) for case in cases.values() for item in case[1:3]]
    done = subprocess.run([sys.executable, "-c", RELOAD, *arguments],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    predictions = json.loads(done.stdout)
    for labels, (model, path, _, x, y) in cases.items():
        predicted = predictions[path]
        assert len(predicted) == len(x) + (1 if labels == "integers" else 0)
        predicted = predicted[:len(x)]
        assert predicted == list(model.predict(x))
        assert set(predicted) <= set(y)  # the CSV's own labels...
        kind = int if labels == "integers" else str
        assert all(type(p) is kind for p in predicted), predicted[:3]  # ...and their type
        assert np.mean(np.array(predicted) == y.to_numpy()) > 0.9


def test_model_save_and_load_round_trip(trained_wine, tmp_path):
    model, _, (_, x_test, _, _) = trained_wine
    model.save(tmp_path / "m.model")
    loaded = Model.load(tmp_path / "m.model")
    assert list(loaded.predict(x_test)) == list(model.predict(x_test))
    assert loaded.cv_scores == model.cv_scores
    proba = loaded.predict_proba(x_test)
    assert list(proba.columns) == ["class_0", "class_1", "class_2"]
    assert np.allclose(proba.sum(axis=1), 1.0)


def test_loading_a_file_that_is_not_a_model_fails_clearly(tmp_path):
    import pickle

    (tmp_path / "x.model").write_bytes(pickle.dumps({"not": "a model"}))
    with pytest.raises(InvalidInputError, match="does not hold an ATM model"):
        Model.load(tmp_path / "x.model")
