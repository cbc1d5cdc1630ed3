"""The worker's incremental view of a datarun must always equal what a full read of the
classifiers table says: scores per open partition, tuning histories and the best score,
through completions, errors, reaping and hand-backs, on every configured backend."""

from __future__ import annotations

import random

import pytest
from test_database import PARTITIONS, make_datarun

from atm import constants as C
from atm import database as database_module
from atm.database import Refused
from atm.scoreboard import FULL_REFRESH_SECONDS, Scoreboard


def expected_view(db, run, score_target="cv_judgment_metric"):
    """Scores and histories computed from scratch from every row of the run."""
    open_ids = [p.id for p in db.get_hyperpartitions(run.id, [C.PARTITION_INCOMPLETE])]
    scores = {pid: [] for pid in open_ids}
    histories: dict[int, list] = {}
    for row in db.get_classifiers(run.id):  # oldest first
        if row.status == C.CLASSIFIER_ERRORED and row.error_message.startswith(
                C.HANDED_BACK_PREFIXES):
            continue
        score = getattr(row, score_target) if row.status == C.CLASSIFIER_COMPLETE else None
        if row.hyperpartition_id in scores:
            scores[row.hyperpartition_id].append(0.0 if score is None else score)
        if row.status == C.CLASSIFIER_COMPLETE:
            histories.setdefault(row.hyperpartition_id, []).append(
                (row.hyperparameter_values, score))
    return scores, histories


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_incrementally_refreshed_board_equals_a_full_read(any_db):
    rng = random.Random(3)
    run = make_datarun(any_db, budget=400)
    partitions = [p.id for p in run.hyperpartitions]
    clock = FakeClock()
    board = Scoreboard(any_db, run.id, run.score_target, clock=clock)
    other_run = make_datarun(any_db, budget=400)  # interleaved ids of another run
    running: dict[int, tuple[str, int]] = {}
    errors: dict[int, int] = {}
    for step in range(160):
        roll = rng.random()
        if roll < 0.45 or not running:
            target = run if rng.random() < 0.7 else other_run
            worker = f"w{step}"
            cid = any_db.claim_classifier(target.id, rng.choice(partitions)
                                          if target is run else other_run.hyperpartitions[0].id,
                                          {"max_depth": rng.randint(2, 10)}, "h", worker, 1)
            assert cid is not Refused.NO_BUDGET
            if target is run:
                running[cid] = (worker, any_db.get_classifier(cid).hyperpartition_id)
        else:
            cid = rng.choice(sorted(running))
            worker, partition = running.pop(cid)
            if 0.8 <= roll < 0.9 and errors.get(partition, 0) == C.MAX_HYPERPARTITION_ERRORS:
                roll = 0.5  # one error more would close the partition: complete instead
            if roll < 0.8:
                score = rng.choice([round(rng.random(), 3), 0.5])  # ties on purpose
                assert any_db.complete_classifier(cid, worker, model_location=None,
                                                  metrics_location=None, cv_score=score,
                                                  cv_stdev=0.01, test_score=score)
            elif roll < 0.9:
                errors[partition] = errors.get(partition, 0) + 1
                assert any_db.mark_classifier_errored(cid, worker, "Traceback: boom")
            else:
                assert any_db.hand_back_classifier(cid, worker, "stopping")
        if step % 5 == 0:
            clock.now += FULL_REFRESH_SECONDS / 7  # a full re-read now and then, too
            board.refresh()
            scores, histories = expected_view(any_db, run)
            assert board.scores() == scores, f"step {step}"
            for pid in partitions:
                assert board.history(pid) == histories.get(pid, []), f"step {step}"
    complete = [c for c in any_db.get_classifiers(run.id, [C.CLASSIFIER_COMPLETE])]
    best = any_db.get_best_classifier(run.id, run.score_target)
    board.refresh()
    assert complete and board.best == (best.cv_judgment_metric, best.id)


def test_closed_partitions_leave_the_scores(any_db):
    run = make_datarun(any_db, budget=5)
    board = Scoreboard(any_db, run.id, run.score_target)
    first, second = (p.id for p in run.hyperpartitions)
    assert isinstance(any_db.claim_classifier(run.id, first, {}, "h", "w1", 1,
                                              last_of_partition=True), int)
    board.refresh()
    assert board.scores() == {second: []}


def test_a_row_that_commits_after_a_higher_id_is_still_seen(any_db):
    """Claims of one run queue on the run's row, so its ids become visible in order; a row
    written any other way may commit after a higher id, and the board still finds it."""
    if any_db.backend == "sqlite":
        pytest.skip("SQLite has one writer at a time: ids always commit in order")
    run = make_datarun(any_db, budget=5)
    partition = run.hyperpartitions[0].id
    board = Scoreboard(any_db, run.id, run.score_target)
    late = any_db.session_scope(write=True)
    session = late.__enter__()
    try:
        late_id = database_module._insert_running(session, run.id, partition, {"a": 1},
                                                  "h", "late", 1)
        with any_db.session_scope(write=True) as other:
            early_id = database_module._insert_running(other, run.id, partition, {"a": 2},
                                                       "h", "early", 1)
        assert early_id > late_id
        board.refresh()
        assert board.scores()[partition] == [0.0]  # only the committed row
    finally:
        late.__exit__(None, None, None)  # commits
    assert any_db.complete_classifier(late_id, "late", model_location=None,
                                      metrics_location=None, cv_score=0.9, cv_stdev=0.0,
                                      test_score=0.9)
    board.refresh()
    assert board.scores()[partition] == [0.9, 0.0]
    assert board.history(partition) == [({"a": 1}, 0.9)]
    assert len(PARTITIONS) == 2
