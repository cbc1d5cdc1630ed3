"""A worker's running tally of one datarun's classifiers, read from the database
incrementally, so that choosing the next classifier costs the same at the 5,000th
classifier as at the first.

Each refresh reads only the rows this board has not seen in a final state: ids above
the highest one seen, the rows it saw ``running`` (they may have completed, errored or
been reaped since), and the ids it skipped in the last :data:`LOOKBACK_IDS`. The last
part is a guard for PostgreSQL and MySQL, where ids are handed out at insert time but
rows become visible at commit time, so a row could appear after a higher id did. Claims
of one run queue on the run's row (:meth:`Database.claim_classifier` updates it before
inserting), so their ids become visible in order; a row written any other way is looked
for again until it shows up or falls out of the window (ids of other dataruns and
rolled-back inserts never show up here). A full re-read every
:data:`FULL_REFRESH_SECONDS` bounds whatever the window could miss.

Complete and errored rows never change again; reaped and handed-back rows are
dropped, as they count for nothing.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from atm import constants as C
from atm.database import ClassifierState, Database

LOOKBACK_IDS = 256
FULL_REFRESH_SECONDS = 60.0


class Scoreboard:
    """Scores by hyperpartition, each partition's tuning history, and the best score."""

    def __init__(self, db: Database, datarun_id: int, score_target: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db, self.datarun_id, self.score_target = db, datarun_id, score_target
        self._clock = clock
        self._reset()

    def _reset(self) -> None:
        self._rows: dict[int, ClassifierState] = {}
        self._running: set[int] = set()
        # Per partition, oldest first: the ids and scores of its counted classifiers,
        # and the ids and (values, score) of its complete ones. Kept aligned, so that a
        # selection copies lists instead of walking every row.
        self._ids: dict[int, list[int]] = {}
        self._scores: dict[int, list[float]] = {}
        self._done_ids: dict[int, list[int]] = {}
        self._history: dict[int, list[tuple[dict[str, Any], float]]] = {}
        self._top = -1  # highest id seen
        self.open_partitions: list[int] = []
        self.best: tuple[float, int] | None = None  # (score, classifier id)
        self._refreshed_fully_at = self._clock()

    def refresh(self) -> None:
        """Bring the board up to date with the database (one read transaction)."""
        if self._clock() - self._refreshed_fully_at >= FULL_REFRESH_SECONDS:
            self._reset()
        low = max(self._top - LOOKBACK_IDS, -1)
        unseen = (i for i in range(low + 1, self._top) if i not in self._rows)
        state = self.db.get_selection_state(self.datarun_id, self.score_target, self._top,
                                            [*self._running, *unseen])
        self.open_partitions = state.open_partitions
        for row in state.classifiers:
            self._take(row)

    def _take(self, row: ClassifierState) -> None:
        self._top = max(self._top, row.id)
        old = self._rows.pop(row.id, None)
        self._running.discard(row.id)
        pid = row.hyperpartition_id
        if old is not None:  # it was running: it ended, or was reaped or handed back
            _remove(self._ids[pid], self._scores[pid], row.id)
            if old.status == C.CLASSIFIER_COMPLETE:
                _remove(self._done_ids[pid], self._history[pid], row.id)
        if row.handed_back:
            return
        self._rows[row.id] = row
        score = 0.0 if row.score is None else row.score
        _insert(self._ids.setdefault(pid, []), self._scores.setdefault(pid, []), row.id, score)
        if row.status == C.CLASSIFIER_RUNNING:
            self._running.add(row.id)
        elif row.status == C.CLASSIFIER_COMPLETE:
            _insert(self._done_ids.setdefault(pid, []), self._history.setdefault(pid, []),
                    row.id, (row.hyperparameter_values, score))
            if row.score is not None and (self.best is None or row.score > self.best[0]):
                self.best = (row.score, row.id)

    # -- what the selector and tuner read -------------------------------------

    def scores(self) -> dict[int, list[float]]:
        """``{open partition id: [scores, oldest first]}``: errored and running
        classifiers count as 0.0, as in the original ATM, so a partition that keeps
        failing is chosen less."""
        return {pid: list(self._scores.get(pid, ())) for pid in self.open_partitions}

    def history(self, hyperpartition_id: int) -> list[tuple[dict[str, Any], float]]:
        """(hyperparameter values, score) of a partition's complete classifiers, oldest
        first."""
        return list(self._history.get(hyperpartition_id, ()))


def _insert(ids: list[int], values: list[Any], new_id: int, value: Any) -> None:
    """Put ``value`` at ``new_id``'s place in id order (nearly always at the end)."""
    at = len(ids) if not ids or ids[-1] < new_id else bisect_left(ids, new_id)
    ids.insert(at, new_id)
    values.insert(at, value)


def _remove(ids: list[int], values: list[Any], old_id: int) -> None:
    at = bisect_left(ids, old_id)
    if at < len(ids) and ids[at] == old_id:
        del ids[at]
        del values[at]
