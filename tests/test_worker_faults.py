"""Fits that hang, die or fail cost one classifier each, never the worker."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest
from sqlalchemy import update
from sqlalchemy.exc import OperationalError

from atm import database as database_module
from atm import registry
from atm.database import Database
from atm.isolation import FitFailed, FitProcess
from atm.models import Datarun
from atm.worker import Worker, WorkerOptions

FAULTY_MODULE = textwrap.dedent("""
    import os
    import signal
    import time

    from sklearn.tree import DecisionTreeClassifier


    class HangingTree(DecisionTreeClassifier):
        def fit(self, X, y, **kwargs):
            time.sleep(600)


    class SuicidalTree(DecisionTreeClassifier):
        def fit(self, X, y, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.fixture
def faulty(workdir):
    (workdir / "faulty.py").write_text(FAULTY_MODULE)
    sys.path.insert(0, str(workdir))

    def method_file(class_name: str) -> str:
        path = workdir / f"{class_name}.json"
        path.write_text(json.dumps({
            "name": class_name, "class": f"faulty.{class_name}",
            "hyperparameters": {"max_depth": {"type": "int", "range": [2, 6]}},
            "root_hyperparameters": ["max_depth"],
        }))
        return str(path)

    yield method_file
    sys.path.remove(str(workdir))
    sys.modules.pop("faulty", None)


def run_worker(db, workdir, timeout):
    options = WorkerOptions(models_dir=str(workdir / "models"),
                            metrics_dir=str(workdir / "metrics"), classifier_timeout=timeout,
                            poll_interval=0.2)
    return Worker(db, options).run()


def test_a_hanging_fit_is_stopped_at_the_time_limit_and_the_worker_goes_on(
        db, workdir, demo, faulty):
    dataset = registry.add_dataset(db, demo("iris"))
    run = registry.add_datarun(db, dataset.id, budget=2, methods=[faulty("HangingTree")])
    assert run_worker(db, workdir, timeout=1.5) == 2
    classifiers = db.get_classifiers(run.id)
    assert [c.status for c in classifiers] == ["errored", "errored"]
    assert all(c.error_message.startswith("timed out after 1.5 s") for c in classifiers)
    assert db.get_datarun(run.id).status == "complete"
    # no model or metrics file, whole or partial, was left behind
    assert not list(workdir.glob("models/*")) and not list(workdir.glob("metrics/*"))


def test_a_fit_that_kills_its_process_errors_its_classifier_only(db, workdir, demo, faulty):
    dataset = registry.add_dataset(db, demo("iris"))
    run = registry.add_datarun(db, dataset.id, budget=3,
                               methods=[faulty("SuicidalTree"), "gnb"])
    run_worker(db, workdir, timeout=60)
    by_method = {}
    for c in db.get_classifiers(run.id):
        by_method.setdefault(db.get_hyperpartition(c.hyperpartition_id).method, []).append(c)
    # the uniform selector picks at random: gnb (nothing to tune) is trained at most once
    assert [c.status for c in by_method.pop("gnb", [])] in ([], ["complete"])
    (killed,) = by_method.values()
    assert len(killed) in (2, 3)
    assert all(c.status == "errored" and "killed by SIGKILL" in c.error_message
               for c in killed)
    assert db.get_datarun(run.id).status == "complete"


def test_a_dataset_file_replaced_at_the_same_path_is_read_again(db, workdir, demo):
    # In-process (timeout 0) the dataset cache lives as long as this test process.
    dataset = registry.add_dataset(db, demo("iris"))
    first = registry.add_datarun(db, dataset.id, budget=1, methods=["dt"])
    assert run_worker(db, workdir, timeout=0) == 1
    assert [c.status for c in db.get_classifiers(first.id)] == ["complete"]
    path = workdir / "iris.csv"
    path.write_text("not,the,same\n1,2,3\n")  # replaced: same path, other content
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    second = registry.add_datarun(db, dataset.id, budget=1, methods=["dt"])
    with db.session_scope(write=True) as session:  # the same hold-out seed: a cache hit
        session.execute(update(Datarun).where(Datarun.id == second.id)
                        .values(random_seed=first.random_seed))
    assert run_worker(db, workdir, timeout=0) == 1
    [classifier] = db.get_classifiers(second.id)
    assert classifier.status == "errored"  # the new content, not the cached frames
    assert "has no column 'class'" in classifier.error_message


def test_a_fit_that_raises_records_its_traceback_in_process_too(db, workdir, demo):
    # timeout 0 runs the fit in the worker's own process: same outcome for a plain error
    dataset = registry.add_dataset(db, demo("iris"))
    run = registry.add_datarun(db, dataset.id, budget=2, methods=["logreg"])
    (workdir / "iris.csv").write_text("not,the,same\n1,2,3\n")  # the file changed under us
    run_worker(db, workdir, timeout=0)
    classifiers = db.get_classifiers(run.id)
    assert [c.status for c in classifiers] == ["errored", "errored"]
    assert all("Traceback" in c.error_message and "has no column 'class'" in c.error_message
               for c in classifiers)


def test_an_unwritable_models_directory_hands_classifiers_back_and_pauses(
        db, workdir, demo, caplog):
    dataset = registry.add_dataset(db, demo("iris"))
    run = registry.add_datarun(db, dataset.id, budget=2, methods=["dt"])
    (workdir / "blocker").write_text("a file where the models directory should be")
    options = WorkerOptions(models_dir=str(workdir / "blocker" / "models"),
                            metrics_dir=str(workdir / "metrics"), poll_interval=0.1)
    worker = Worker(db, options)
    assert worker.run(total_time=2) == 0
    failed = db.get_classifiers(run.id)
    assert failed and all(c.status == "errored" for c in failed)
    assert all(c.error_message.startswith("storage error: cannot write model file")
               for c in failed)
    # the budget was not spent on the broken disk, the partitions are not blamed, and
    # every failure doubled the pause instead of spinning
    assert db.get_datarun(run.id).n_started == 0
    assert {p.status for p in db.get_hyperpartitions(run.id)} == {"incomplete"}
    assert worker._storage_backoff == min(0.1 * 2 ** (len(failed) - 1), 60)
    assert "fix the models/metrics directories" in caplog.text

    (workdir / "blocker").unlink()  # the operator fixes the disk: the run completes
    assert Worker(db, options).run() == 2
    assert db.count_classifiers(run.id)["complete"] == 2
    assert db.get_datarun(run.id).status == "complete"


def test_a_failed_classifier_insert_gives_its_budget_slot_back(sqlite_url, workdir, demo,
                                                               monkeypatch):
    db = Database(sqlite_url, max_attempts=2)
    dataset = registry.add_dataset(db, demo("iris"))
    run = registry.add_datarun(db, dataset.id, budget=3, methods=["dt"])
    failures = []
    real_insert = database_module._insert_running

    def flaky_insert(session, *args):
        # The budget slot is already taken in this transaction when the insert fails,
        # as in an outage: every attempt of the first claim fails.
        if len(failures) < db.max_attempts:
            failures.append(session.get(Datarun, run.id).n_started)
            raise OperationalError("INSERT INTO classifiers", {}, Exception("injected"))
        return real_insert(session, *args)

    monkeypatch.setattr(database_module, "_insert_running", flaky_insert)
    run_worker(db, workdir, timeout=0)
    assert failures == [1, 1]  # each attempt had taken the slot before the insert failed
    assert db.count_classifiers(run.id) == {"running": 0, "errored": 0, "complete": 3}
    assert db.get_datarun(run.id).n_started == 3


def test_a_retried_claim_whose_first_commit_went_through_adds_no_second_row(db, demo):
    dataset = registry.add_dataset(db, demo("iris"))
    run = registry.add_datarun(db, dataset.id, budget=3, methods=["dt"])
    partition = run.hyperpartitions[0].id
    first = db.claim_classifier(run.id, partition, {"max_depth": 3}, "h", "w1", 1)
    again = db.claim_classifier(run.id, partition, {"max_depth": 3}, "h", "w1", 1)
    other = db.claim_classifier(run.id, partition, {"max_depth": 4}, "h", "w2", 2)
    assert again == first and other != first
    assert db.count_classifiers(run.id)["running"] == 2
    assert db.get_datarun(run.id).n_started == 2  # the retry took no second slot


def _double(value):
    return value * 2


def test_a_fit_process_that_died_fails_the_task_instead_of_forking_again():
    fitter = FitProcess(_double)
    with pytest.raises(FitFailed, match="no fit process to send the task to: it was never"):
        fitter.run(1, timeout=10)
    fitter.ensure_started()
    assert fitter.run(21, timeout=10) == 42
    child = fitter._process
    child.kill()
    child.join(10)
    # A worker's heartbeat thread runs by now: forking here could copy its held locks.
    with pytest.raises(FitFailed, match="killed by SIGKILL .*a new one starts with the next"):
        fitter.run(2, timeout=10)
    assert fitter._process is child  # nothing was forked
    fitter.ensure_started()  # the next classifier, before its heartbeat thread starts
    assert fitter.run(5, timeout=10) == 10
    fitter.close()
