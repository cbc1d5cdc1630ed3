"""The ModelHub contract, run on every configured backend: finders, compare-and-set state
changes, the budget-slot counter, heartbeats and reaping on the database clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from atm import constants as C
from atm.database import Refused
from atm.exceptions import NotFoundError
from atm.methods import load_method
from atm.scoreboard import Scoreboard

PARTITIONS = [
    {
        "method": p.method,
        "categorical_hyperparameters": [list(x) for x in p.categoricals],
        "constant_hyperparameters": [list(x) for x in p.constants],
        "tunable_hyperparameters": [list(x) for x in p.tunables],
    }
    for p in load_method("dt").get_hyperpartitions()
]


def make_dataset(db, **changes):
    fields = dict(name="iris", description=None, train_path="iris.csv", test_path=None,
                  class_column="class", n_examples=150, k_classes=3, d_features=4,
                  majority=1 / 3, size_kb=4)
    fields.update(changes)
    return db.create_dataset(**fields)


def make_datarun(db, budget=3, budget_type=C.BUDGET_CLASSIFIER, **changes):
    dataset = make_dataset(db)
    fields = dict(dataset_id=dataset.id, description="uniform__uniform", tuner="uniform",
                  selector="uniform", metric="f1", score_target="cv_judgment_metric",
                  budget_type=budget_type, budget=budget, deadline=None, k_window=3,
                  r_minimum=2, gridding=0, priority=1, random_seed=7)
    fields.update(changes)
    return db.create_datarun(PARTITIONS, **fields)


def claim(db, run, worker="w1", partition=0, **kwargs):
    return db.claim_classifier(run.id, run.hyperpartitions[partition].id, {"max_depth": 3},
                               "host-a", worker, 1234, **kwargs)


def scores_of(db, run, score_target=None):
    board = Scoreboard(db, run.id, score_target or run.score_target)
    board.refresh()
    return board.scores()


def start(db, run, worker="w1", partition=0):
    classifier_id = claim(db, run, worker, partition)
    assert isinstance(classifier_id, int)
    return classifier_id


def test_rows_round_trip_with_json_hyperparameters_and_readable_errors(any_db):
    run = make_datarun(any_db)
    assert [p.method for p in run.hyperpartitions] == ["dt", "dt"]
    partition = any_db.get_hyperpartition(run.hyperpartitions[0].id)
    assert partition.categoricals == [("criterion", "entropy")]
    assert ("max_depth", {"type": "int", "range": [2, 10]}) in partition.tunables
    fetched = any_db.get_datarun(run.id)
    assert (fetched.status, fetched.n_started, fetched.dataset.name) == ("pending", 0, "iris")
    with pytest.raises(NotFoundError, match="^datarun 999 does not exist$"):
        any_db.get_datarun(999)
    with pytest.raises(NotFoundError, match="^dataset 42 does not exist$"):
        make_datarun(any_db, dataset_id=42)
    classifier_id = start(any_db, run)
    classifier = any_db.get_classifier(classifier_id)
    assert classifier.hyperparameter_values == {"max_depth": 3}
    assert (classifier.status, classifier.host, classifier.pid) == ("running", "host-a", 1234)
    assert classifier.datarun.dataset.name == "iris"


def test_database_clock_is_utc(any_db):
    now = any_db.now()
    assert now.tzinfo is None
    utc = datetime.now(UTC).replace(tzinfo=None)
    assert abs((utc - now).total_seconds()) < 120  # same zone, not hours apart


def test_budget_slots_never_exceed_the_budget_and_can_be_given_back(any_db):
    run = make_datarun(any_db, budget=3)
    claims = [claim(any_db, run, worker=f"w{i}") for i in range(5)]
    assert all(isinstance(c, int) for c in claims[:3])
    assert claims[3:] == [Refused.NO_BUDGET] * 2
    assert any_db.count_classifiers(run.id)["running"] == 3  # a refusal writes nothing
    assert any_db.hand_back_classifier(claims[0], "w0", "stopping")
    assert any_db.get_datarun(run.id).n_started == 2
    assert isinstance(claim(any_db, run, worker="w5"), int)
    assert claim(any_db, run, worker="w6") is Refused.NO_BUDGET
    # a worker's retried claim (its first commit went through) returns that same row
    assert claim(any_db, run, worker="w5") == any_db.get_classifiers(run.id, ["running"])[-1].id


def test_no_slot_on_a_stopped_or_expired_run(any_db):
    run = make_datarun(any_db, budget=10)
    assert any_db.stop_datarun(run.id)
    assert not any_db.stop_datarun(run.id)  # already stopped: the second caller loses
    assert claim(any_db, run) is Refused.NO_BUDGET
    walltime = make_datarun(any_db, budget=1, budget_type=C.BUDGET_WALLTIME,
                            deadline=datetime(2000, 1, 1))
    assert claim(any_db, walltime) is Refused.NO_BUDGET
    assert any_db.get_classifiers(run.id) == [] and any_db.get_classifiers(walltime.id) == []
    with pytest.raises(NotFoundError, match="^datarun 999 does not exist$"):
        any_db.claim_classifier(999, 1, {}, "h", "w", 1)


def test_a_partition_with_nothing_to_tune_is_claimed_once(any_db):
    run = make_datarun(any_db, budget=10)
    first = claim(any_db, run, worker="w1", last_of_partition=True)
    assert isinstance(first, int)
    assert claim(any_db, run, worker="w2", last_of_partition=True) is Refused.PARTITION_TAKEN
    partition = any_db.get_hyperpartition(run.hyperpartitions[0].id)
    assert partition.status == C.PARTITION_GRIDDING_DONE
    # the loser's budget slot and row were rolled back with the refusal
    assert any_db.get_datarun(run.id).n_started == 1
    assert [c.id for c in any_db.get_classifiers(run.id)] == [first]


def test_running_sets_start_time_and_walltime_deadline_once(any_db):
    run = make_datarun(any_db, budget=5, budget_type=C.BUDGET_WALLTIME)
    assert any_db.mark_datarun_running(run.id)
    assert not any_db.mark_datarun_running(run.id)
    fetched = any_db.get_datarun(run.id)
    assert fetched.status == "running"
    assert (fetched.deadline - fetched.start_time).total_seconds() == 5 * 60


def test_classifier_transitions_are_compare_and_set(any_db):
    run = make_datarun(any_db)
    cid = start(any_db, run, worker="w1")
    assert any_db.heartbeat(cid, "w1")
    assert not any_db.heartbeat(cid, "w2")  # not ours
    done = dict(model_location="m", metrics_location="x", cv_score=0.9, cv_stdev=0.05,
                test_score=0.8)
    assert not any_db.complete_classifier(cid, "w2", **done)
    assert any_db.complete_classifier(cid, "w1", **done)
    recorded = any_db.get_classifier(cid).end_time
    # Asked again (a retry after a lost commit answer): already ours, and written only once.
    assert any_db.complete_classifier(cid, "w1", **done)
    assert any_db.get_classifier(cid).end_time == recorded
    assert not any_db.mark_classifier_errored(cid, "w1", "late error")
    assert not any_db.heartbeat(cid, "w1")
    classifier = any_db.get_classifier(cid)
    assert classifier.status == "complete" and classifier.end_time is not None
    assert classifier.mu_sigma_judgment_metric == pytest.approx(0.8)
    assert any_db.count_classifiers(run.id) == {"running": 0, "errored": 0, "complete": 1}


def test_partition_is_errored_after_more_than_three_failures(any_db):
    run = make_datarun(any_db, budget=10)
    partition_id = run.hyperpartitions[0].id
    for attempt in range(1, 5):
        cid = start(any_db, run)
        assert any_db.mark_classifier_errored(cid, "w1", f"Traceback: boom {attempt}")
        expected = "errored" if attempt > C.MAX_HYPERPARTITION_ERRORS else "incomplete"
        assert any_db.get_hyperpartition(partition_id).status == expected
    assert any_db.get_classifier(cid).error_message == "Traceback: boom 4"
    # only incomplete partitions are offered to the selector
    assert list(scores_of(any_db, run)) == [run.hyperpartitions[1].id]


def test_stale_classifiers_are_reaped_once_and_their_slot_returned(any_db):
    run = make_datarun(any_db, budget=2)
    lost = start(any_db, run, worker="dead")
    alive = start(any_db, run, worker="alive")
    assert claim(any_db, run, worker="third") is Refused.NO_BUDGET
    assert any_db.reap_stale_classifiers(grace_seconds=60) == []
    time.sleep(2.2)
    assert any_db.heartbeat(alive, "alive")
    assert any_db.reap_stale_classifiers(grace_seconds=1) == [lost]
    assert any_db.reap_stale_classifiers(grace_seconds=1) == []  # nobody reaps twice
    reaped = any_db.get_classifier(lost)
    assert reaped.status == "errored"
    assert reaped.error_message.startswith("worker lost: worker dead (host host-a, pid 1234)")
    assert any_db.get_classifier(alive).status == "running"
    # the slot came back, and the dead worker can no longer record a result
    assert any_db.get_datarun(run.id).n_started == 1
    assert isinstance(claim(any_db, run, worker="third"), int)
    assert not any_db.complete_classifier(lost, "dead", model_location=None,
                                          metrics_location=None, cv_score=1.0,
                                          cv_stdev=0.0, test_score=1.0)
    # a reaped classifier is neither a score for the selector nor a partition error
    scores = [s for partition in scores_of(any_db, run).values() for s in partition]
    assert scores == [0.0, 0.0]  # "alive" and "third", running; not "dead"


def test_datarun_completes_only_when_budget_used_and_nothing_runs(any_db):
    run = make_datarun(any_db, budget=1)
    assert not any_db.complete_datarun_if_done(run.id)  # budget left
    cid = start(any_db, run)
    assert not any_db.complete_datarun_if_done(run.id)  # still running
    assert any_db.get_datarun(run.id).status == "pending"
    # recording the last classifier ends the run in the same transaction
    any_db.complete_classifier(cid, "w1", model_location=None, metrics_location=None,
                               cv_score=0.5, cv_stdev=0.1, test_score=0.5)
    assert not any_db.complete_datarun_if_done(run.id)  # already ended: nobody else wins
    fetched = any_db.get_datarun(run.id)
    assert fetched.status == "complete" and fetched.end_time is not None


def test_datarun_completes_when_no_partition_is_left(any_db):
    run = make_datarun(any_db, budget=100)
    for partition in run.hyperpartitions:
        assert any_db.set_hyperpartition_status(partition.id, C.PARTITION_GRIDDING_DONE)
        assert not any_db.set_hyperpartition_status(partition.id, C.PARTITION_GRIDDING_DONE)
    assert any_db.complete_datarun_if_done(run.id)


def test_best_classifier_and_scores_follow_the_score_target(any_db):
    run = make_datarun(any_db, budget=3)
    results = [(0.9, 0.2), (0.8, 0.01)]  # best cv vs best mu_sigma
    ids = []
    for cv, std in results:
        cid = start(any_db, run)
        any_db.complete_classifier(cid, "w1", model_location=None, metrics_location=None,
                                   cv_score=cv, cv_stdev=std, test_score=cv)
        ids.append(cid)
    errored = start(any_db, run, partition=1)
    any_db.mark_classifier_errored(errored, "w1", "boom")
    assert any_db.get_best_classifier(run.id, "cv_judgment_metric").id == ids[0]
    assert any_db.get_best_classifier(run.id, "mu_sigma_judgment_metric").id == ids[1]
    scores = scores_of(any_db, run, "cv_judgment_metric")
    assert scores == {run.hyperpartitions[0].id: [0.9, 0.8], run.hyperpartitions[1].id: [0.0]}
    board = Scoreboard(any_db, run.id, "mu_sigma_judgment_metric")
    board.refresh()
    history = board.history(run.hyperpartitions[0].id)
    assert [round(score, 6) for _, score in history] == [0.5, 0.78]
