"""`atm enter_data` as a user runs it: a real process in an empty directory. It prints the
new ids; every bad option gives one line on stderr, a non-zero exit and writes nothing.

Every invocation imports scikit-learn (seconds each), so the cases run concurrently in a
module fixture and the tests below check their recorded results.
"""

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest
from conftest import ATM_EXE, DEMOS
from sqlalchemy import func, select

from atm.database import Database
from atm.models import TABLES

KNOWN_METHODS = ("known methods are: logreg, svm, sgd, dt, et, rf, gnb, mnb, bnb, gp, pa, knn, "
                 "mlp, ada (or give a path to a method JSON file)")
MULTICLASS = ("accuracy, f1_micro, f1_macro, roc_auc_micro, roc_auc_macro, rank_accuracy, "
              "cohen_kappa")

# name -> (extra arguments, the one line expected on stderr)
INVALID = {
    "method": (["--methods", "logreg", "foo"], f"unknown method 'foo'; {KNOWN_METHODS}"),
    "tuner": (["--tuner", "bayes"],
              "unknown tuner 'bayes'; known tuners are: uniform, gp, gp_ei, gp_eivel"),
    "selector": (["--selector", "best"],
                 "unknown selector 'best'; known selectors are: uniform, ucb1, bestk, bestkvel, "
                 "purebestkvel, recentk, recentkvel, hieralg"),
    "metric": (["--metric", "precision"],
               "unknown metric 'precision'; known metrics are: accuracy, rank_accuracy, "
               "cohen_kappa, f1, f1_micro, f1_macro, roc_auc, roc_auc_micro, roc_auc_macro, ap, "
               "mcc"),
    "score_target": (["--score-target", "train"],
                     "unknown score_target 'train'; use one of: cv, test, mu_sigma"),
    "budget_type": (["--budget-type", "hours"],
                    "unknown budget_type 'hours'; use one of: classifier, walltime"),
    "deadline": (["--deadline", "next friday"],
                 "deadline 'next friday' is not a date; use 'YYYY-MM-DD HH:MM' (UTC)"),
    "metric_multiclass": (["--metric", "mcc"],
                          f"metric 'mcc' is not defined for a problem with 3 classes; use one "
                          f"of: {MULTICLASS}"),
    "budget": (["--budget", "0"], "budget must be at least 1, got 0"),
    "dataset_id": (["--dataset-id", "7"], "dataset 7 does not exist"),
}


def _train_args(name):
    return [] if name == "dataset_id" else ["--train-path", "iris.csv"]


def _run(cwd, args, env=None):
    return subprocess.run([ATM_EXE, "enter_data", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def _row_counts(directory):
    db = Database(f"sqlite:///{directory / 'atm.db'}")
    try:
        with db.session_scope() as session:
            return {name: session.scalar(select(func.count()).select_from(model))
                    for name, model in TABLES.items()}
    finally:
        db.dispose()


def _valid_session(cwd):
    """Register iris with every default, then a second datarun on the same dataset, then a
    bad option on that dataset (which must add nothing)."""
    first = _run(cwd, ["--train-path", "iris.csv"])
    second = _run(cwd, ["--dataset-id", "1", "--budget", "3", "--tuner", "gp",
                        "--methods", "dt", "--metric", "accuracy", "--score-target", "mu_sigma"])
    counts = _row_counts(cwd)
    third = _run(cwd, ["--dataset-id", "1", "--selector", "best"])
    return first, second, counts, third


def _deadline_session(cwd):
    return _run(cwd, ["--train-path", "iris.csv", "--deadline", "2030-01-02T12:00:00+00:00"],
                env={"TZ": "America/New_York"})


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    jobs = {}
    with ThreadPoolExecutor(max_workers=4) as pool:
        for name, (args, _) in INVALID.items():
            cwd = tmp_path_factory.mktemp(f"invalid_{name}")
            shutil.copyfile(DEMOS / "iris.csv", cwd / "iris.csv")
            jobs[name] = (cwd, pool.submit(_run, cwd, _train_args(name) + args))
        for name, session in (("valid", _valid_session), ("utc_deadline", _deadline_session)):
            cwd = tmp_path_factory.mktemp(name)
            shutil.copyfile(DEMOS / "iris.csv", cwd / "iris.csv")
            jobs[name] = (cwd, pool.submit(session, cwd))
        return {name: (cwd, future.result()) for name, (cwd, future) in jobs.items()}


EMPTY = {"datasets": 0, "dataruns": 0, "hyperpartitions": 0, "classifiers": 0}


@pytest.mark.parametrize("name", list(INVALID))
def test_invalid_option_gives_one_line_and_writes_nothing(results, name):
    cwd, done = results[name]
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert lines == [f"atm enter_data: error: {INVALID[name][1]}"]
    assert "Traceback" not in done.stderr
    assert _row_counts(cwd) == EMPTY
    assert not (cwd / "models").exists()


def test_defaults_register_the_dataset_and_a_datarun_and_print_their_ids(results):
    cwd, (first, _, _, _) = results["valid"]
    assert first.returncode == 0, first.stderr
    lines = first.stdout.strip().splitlines()
    assert len(lines) == 2
    dataset_id = int(re.match(r"dataset (\d+) \(iris\): 150 rows, 4 features, 3 classes$",
                              lines[0]).group(1))
    match = re.match(r"datarun (\d+) on dataset (\d+): 32 hyperpartitions, budget 100 "
                     r"classifier, uniform tuner, uniform selector, metric f1$", lines[1])
    assert match, lines[1]
    assert int(match.group(2)) == dataset_id
    db = Database(f"sqlite:///{cwd / 'atm.db'}")
    run = db.get_datarun(int(match.group(1)))
    assert run.dataset.name == "iris"
    assert run.dataset.train_path == str((cwd / "iris.csv").resolve())  # workers elsewhere
    assert (run.status, run.budget, run.budget_type, run.metric) == (
        "pending", 100, "classifier", "f1")
    assert (run.tuner, run.selector, run.description) == ("uniform", "uniform", "uniform__uniform")
    assert (run.k_window, run.r_minimum, run.gridding, run.priority, run.deadline) == (
        3, 2, 0, 1, None)
    assert run.score_target == "cv_judgment_metric"
    methods = [p.method for p in db.get_hyperpartitions(run.id)]
    assert {m: methods.count(m) for m in set(methods)} == {"logreg": 6, "dt": 2, "knn": 24}
    db.dispose()


def test_dataset_id_starts_another_datarun_on_an_existing_dataset(results):
    cwd, (_, second, counts, _) = results["valid"]
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip().splitlines() == [
        "datarun 2 on dataset 1: 2 hyperpartitions, budget 3 classifier, gp tuner, uniform "
        "selector, metric accuracy"]
    assert counts == {"datasets": 1, "dataruns": 2, "hyperpartitions": 34, "classifiers": 0}
    db = Database(f"sqlite:///{cwd / 'atm.db'}")
    run = db.get_datarun(2)
    assert (run.dataset_id, run.score_target) == (1, "mu_sigma_judgment_metric")
    db.dispose()


def test_a_bad_option_with_dataset_id_adds_nothing(results):
    cwd, (_, _, counts, third) = results["valid"]
    assert third.returncode != 0
    assert third.stderr.strip().splitlines() == [
        f"atm enter_data: error: {INVALID['selector'][1]}"]
    assert _row_counts(cwd) == counts


def test_deadline_is_stored_in_utc_whatever_the_local_time_zone(results):
    cwd, done = results["utc_deadline"]
    assert done.returncode == 0, done.stderr
    assert "budget 100 walltime" in done.stdout  # a deadline implies a walltime budget
    db = Database(f"sqlite:///{cwd / 'atm.db'}")
    assert db.get_datarun(1).deadline == datetime(2030, 1, 2, 12, 0)
    db.dispose()
