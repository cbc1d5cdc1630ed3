"""The worker loop: reap -> claim -> select -> propose -> fit -> record.

Any number of workers, in any number of processes or machines, can share one
database: every claim is a compare-and-set in :mod:`atm.database`, so budgets
are exact and no classifier is lost or counted twice.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from threadpoolctl import threadpool_limits

from atm import constants as C
from atm.artifacts import artifact_stem, remove_partial_files
from atm.database import Database, Refused
from atm.exceptions import DatabaseUnavailableError, StorageError
from atm.isolation import FitFailed, FitProcess
from atm.metrics import judgment_metric_for
from atm.models import Datarun, Hyperpartition, mu_sigma
from atm.scoreboard import Scoreboard
from atm.training import FitTask, train_and_save
from atm.tuning import propose, select_partition

LOGGER = logging.getLogger(__name__)


@dataclass
class WorkerOptions:
    """What a worker needs besides the database; picklable across processes."""

    models_dir: str = "models"
    metrics_dir: str = "metrics"
    save_files: bool = True
    heartbeat_interval: float = 5.0
    heartbeat_grace: float = 60.0
    poll_interval: float = 0.5
    # Seconds one classifier (cross-validation, final fit and files) may take; it runs in
    # a child process that is killed past this. 0 or None: in-process, no limit.
    classifier_timeout: float | None = 900.0


class _Heartbeat(threading.Thread):
    """Refreshes a running classifier's heartbeat until stopped."""

    def __init__(self, db: Database, classifier_id: int, worker_id: str, interval: float) -> None:
        super().__init__(name=f"heartbeat-{classifier_id}", daemon=True)
        self.db, self.classifier_id, self.worker_id = db, classifier_id, worker_id
        self.interval = interval
        self.finished = threading.Event()
        self.lost = False

    def run(self) -> None:
        while not self.finished.wait(self.interval):
            try:
                if not self.db.heartbeat(self.classifier_id, self.worker_id):
                    self.lost = True
                    return
            except Exception as e:  # the database may be away for a while
                LOGGER.warning("heartbeat of classifier %s failed: %s", self.classifier_id, e)

    def stop(self) -> None:
        self.finished.set()
        self.join(timeout=self.interval + 5)


class Worker:
    """One worker: trains classifiers for the unfinished dataruns it may serve."""

    def __init__(self, db: Database, options: WorkerOptions | None = None,
                 datarun_ids: Sequence[int] | None = None, worker_id: str | None = None) -> None:
        self.db = db
        self.options = options or WorkerOptions()
        self.datarun_ids = list(datarun_ids) if datarun_ids else None
        self.host = socket.gethostname()
        self.worker_id = worker_id or f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        # One long-lived fit process per worker when fits have a time limit.
        timeout = self.options.classifier_timeout
        self._fitter = FitProcess(train_and_save) if timeout else None
        self._partitions: dict[int, dict[int, Hyperpartition]] = {}
        self._boards: dict[int, Scoreboard] = {}
        self.classifiers_run = 0
        self._storage_backoff = 0.0
        self._last_reap = -float("inf")

    # -- control --------------------------------------------------------------

    def request_stop(self) -> None:
        """Finish the current classifier, then leave the loop."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, wait: bool = False, total_time: float | None = None,
            max_classifiers: int | None = None) -> int:
        """Work until no unfinished datarun is left (or, with ``wait``, until stopped).

        Returns the number of classifiers this call trained.
        """
        # One core per worker (BLAS and OpenMP pools included), so N workers scale on N cores.
        with threadpool_limits(limits=1):
            try:
                trained = self._loop(wait, total_time, max_classifiers)
            finally:
                if self._fitter is not None:
                    self._fitter.close()
        self.classifiers_run += trained
        return trained

    def _loop(self, wait: bool, total_time: float | None, max_classifiers: int | None) -> int:
        started = time.monotonic()
        trained = 0
        LOGGER.info("worker %s starting", self.worker_id)
        while not self.stopping:
            if total_time is not None and time.monotonic() - started >= total_time:
                LOGGER.info("total time of %ss used; worker exiting", total_time)
                break
            if max_classifiers is not None and trained >= max_classifiers:
                break
            try:
                reaped = self._reap_now_and_then()
                runs = self.db.get_unfinished_dataruns(self.datarun_ids)
            except DatabaseUnavailableError as e:
                LOGGER.error("database unavailable, retrying in %ss: %s",
                             self.options.poll_interval, e)
                self._stop.wait(self.options.poll_interval)
                continue
            if reaped:
                LOGGER.warning("reaped classifier(s) of lost workers: %s", reaped)
            self._forget_ended(runs)
            if not runs:
                if not wait:
                    LOGGER.info("no unfinished dataruns; worker exiting")
                    break
                self._stop.wait(self.options.poll_interval)
                continue
            if any(self._work_on_safely(run) for run in runs):
                trained += 1
                continue
            # Every unfinished run is fully claimed by other workers: wait for them
            # to finish (or be reaped) rather than exit with work still open.
            self._stop.wait(self.options.poll_interval)
        return trained

    def _reap_now_and_then(self) -> list[int]:
        """Reap lost workers' classifiers, at most once per heartbeat interval (a stale
        heartbeat cannot appear faster than that)."""
        now = time.monotonic()
        if now - self._last_reap < self.options.heartbeat_interval:
            return []
        self._last_reap = now
        return self.db.reap_stale_classifiers(self.options.heartbeat_grace)

    def _work_on_safely(self, run: Datarun) -> bool:
        """:meth:`work_on`, but a failure outside a fit (database away, a tuner that
        raises) is logged and the worker goes on instead of dying."""
        try:
            return self.work_on(run)
        except Exception:
            LOGGER.exception("worker %s: datarun %s could not be worked on; retrying later",
                             self.worker_id, run.id)
            self._stop.wait(self.options.poll_interval)
            return False

    # -- one classifier -------------------------------------------------------

    def work_on(self, run: Datarun) -> bool:
        """Train one classifier for ``run`` if it has budget left; True if one ended
        (complete or errored) here."""
        if self.stopping:
            return False
        if run.status == C.DATARUN_PENDING:
            self.db.mark_datarun_running(run.id)
        board = self._board(run)
        board.refresh()
        closed: set[int] = set()  # partitions found closed since that refresh
        while True:
            choice = self._choose(run, board, closed)
            if choice is None:
                self.db.complete_datarun_if_done(run.id)  # no open partition is left
                return False
            partition, params, last = choice
            # One transaction takes the budget slot and inserts the row (and, for a
            # partition with nothing to tune, closes it): a refusal leaves nothing.
            claimed = self.db.claim_classifier(run.id, partition.id, params, self.host,
                                               self.worker_id, os.getpid(),
                                               last_of_partition=last)
            if claimed is Refused.PARTITION_TAKEN:
                closed.add(partition.id)  # another worker trains that one: choose again
                continue
            if claimed is Refused.NO_BUDGET:
                self.db.complete_datarun_if_done(run.id)
                return False
            # The slot belongs to the row now: recording it (which also ends the run
            # after its last classifier), reaping it or handing it back frees it.
            return self._train(run, partition, params, claimed)

    def _forget_ended(self, runs: Sequence[Datarun]) -> None:
        """Drop the cached views of runs that are no longer unfinished."""
        live = {run.id for run in runs}
        for cache in (self._boards, self._partitions):
            for run_id in [r for r in cache if r not in live]:
                del cache[run_id]

    def _partition(self, run: Datarun, partition_id: int) -> Hyperpartition:
        cached = self._partitions.get(run.id)
        if cached is None or partition_id not in cached:
            cached = {p.id: p for p in self.db.get_hyperpartitions(run.id)}
            self._partitions[run.id] = cached
        return cached[partition_id]

    def _board(self, run: Datarun) -> Scoreboard:
        board = self._boards.get(run.id)
        if board is None:
            board = self._boards[run.id] = Scoreboard(self.db, run.id, run.score_target)
        return board

    def _choose(self, run: Datarun, board: Scoreboard,
                closed: set[int]) -> tuple[Hyperpartition, dict[str, Any], bool] | None:
        """Select an open hyperpartition (not in ``closed``) and propose its parameters:
        (partition, values, whether this is the partition's only classifier), or None
        when no partition is open."""
        while True:
            scores = {pid: s for pid, s in board.scores().items() if pid not in closed}
            if not scores:
                return None
            methods = {pid: self._partition(run, pid).method for pid in scores}
            partition = self._partition(
                run, select_partition(run.selector, scores, run.k_window, methods)
            )
            if not partition.tunables:
                # Nothing to tune: trained exactly once, by whichever worker claims it.
                return partition, self._full_params(partition, {}), True
            proposal = propose(run.tuner, partition.tunables, board.history(partition.id),
                               run.gridding, run.r_minimum)
            if proposal is None:
                self.db.set_hyperpartition_status(partition.id, C.PARTITION_GRIDDING_DONE)
                LOGGER.info("hyperpartition %s: grid used up", partition.id)
                closed.add(partition.id)
                continue
            return partition, self._full_params(partition, proposal), False

    @staticmethod
    def _full_params(partition: Hyperpartition, proposal: dict[str, Any]) -> dict[str, Any]:
        params = dict(partition.categoricals)
        params.update(partition.constants)
        params.update(proposal)
        return params

    def _train(self, run: Datarun, partition: Hyperpartition, params: dict[str, Any],
               classifier_id: int) -> bool:
        """Fit, score and record one started classifier; False if it was handed back or
        reaped."""
        if self._fitter is not None:
            self._fitter.ensure_started()  # before the heartbeat thread: fork copies one thread
        heartbeat = _Heartbeat(self.db, classifier_id, self.worker_id,
                               self.options.heartbeat_interval)
        heartbeat.start()
        began = time.monotonic()
        metric = judgment_metric_for(run.metric, run.dataset.k_classes)
        stem = artifact_stem(run.dataset.name, run.id, classifier_id)
        save = self.options.save_files
        task = FitTask(
            method=partition.method, params=params, judgment_metric=metric,
            seed=run.random_seed, train_path=run.dataset.train_path,
            test_path=run.dataset.test_path, class_column=run.dataset.class_column, stem=stem,
            models_dir=self.options.models_dir if save else None,
            metrics_dir=self.options.metrics_dir if save else None,
        )
        try:
            if self._fitter is not None:
                scores, model_path, metrics_path = self._fitter.run(
                    task, self.options.classifier_timeout)
            else:
                scores, model_path, metrics_path = train_and_save(task)
            recorded = self._record_patiently(
                self.db.complete_classifier, classifier_id, self.worker_id,
                model_location=model_path, metrics_location=metrics_path,
                cv_score=scores["cv"], cv_stdev=scores["cv_stdev"], test_score=scores["test"],
            )
            heartbeat.stop()
            if not recorded:
                LOGGER.warning("classifier %s was reaped while it ran; its result is dropped",
                               classifier_id)
                for path in (model_path, metrics_path):
                    if path:
                        _remove_quietly(path)
                return False
            self._storage_backoff = 0.0
            self._log_result(run, partition, classifier_id, metric, scores,
                             time.monotonic() - began)
            return True
        except Exception as e:
            heartbeat.stop()
            remove_partial_files(stem, self.options.models_dir, self.options.metrics_dir)
            if isinstance(e, StorageError) or getattr(e, "kind", None) == "StorageError":
                self._storage_failed(classifier_id, str(e).removeprefix("StorageError: "))
                return False
            details = e.details if isinstance(e, FitFailed) else traceback.format_exc()
            self.db.mark_classifier_errored(classifier_id, self.worker_id, details)
            LOGGER.error("classifier %s (%s, hyperpartition %s) errored: %s",
                         classifier_id, partition.method, partition.id,
                         e if isinstance(e, FitFailed) else f"{type(e).__name__}: {e}")
            return True
        except BaseException:
            # Stopped for good (second SIGTERM, Ctrl-C): hand the classifier back.
            heartbeat.stop()
            remove_partial_files(stem, self.options.models_dir, self.options.metrics_dir)
            self.db.hand_back_classifier(classifier_id, self.worker_id,
                                         "worker stopped before the classifier finished")
            raise

    def _storage_failed(self, classifier_id: int, reason: str) -> None:
        """The files could not be written (disk full, directory not writable): not the
        classifier's fault, so hand it and its budget slot back, and pause (doubling up
        to a minute) instead of burning the budget on a broken disk."""
        self.db.hand_back_classifier(classifier_id, self.worker_id, reason,
                                     prefix=C.STORAGE_ERROR_PREFIX)
        self._storage_backoff = min(max(2 * self._storage_backoff, self.options.poll_interval),
                                    60.0)
        LOGGER.error("classifier %s handed back: %s; fix the models/metrics directories "
                     "(%s, %s); pausing %.1fs", classifier_id, reason, self.options.models_dir,
                     self.options.metrics_dir, self._storage_backoff)
        self._stop.wait(self._storage_backoff)

    def _record_patiently(self, record: Any, *args: Any, **kwargs: Any) -> bool:
        """Record a finished classifier, waiting out a database outage: the result is
        good, so it is kept until the database is back (compare-and-set: never twice)."""
        delay = self.options.poll_interval
        while True:
            try:
                return record(*args, **kwargs)
            except DatabaseUnavailableError as e:
                LOGGER.error("cannot record classifier %s yet (database unavailable: %s); "
                             "retrying in %.1fs", args[0], e, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _log_result(self, run: Datarun, partition: Hyperpartition, classifier_id: int,
                    metric: str, scores: dict[str, Any], seconds: float) -> None:
        # The best as of this worker's last look at the run, and this classifier.
        board = self._boards.get(run.id)
        best = board.best if board is not None else None
        own = _score_target_value(scores, run.score_target)
        if own is not None and (best is None or own > best[0]):
            best = (own, classifier_id)
        best_text = "none yet" if best is None else f"{best[0]:.4f} (classifier {best[1]})"
        cv = "n/a" if scores["cv"] is None else f"{scores['cv']:.4f} ± {scores['cv_stdev']:.4f}"
        LOGGER.info("classifier %s datarun %s %s: cv %s %s, test %s, %.2fs; best so far %s",
                    classifier_id, run.id, partition.method, metric, cv,
                    "n/a" if scores["test"] is None else f"{scores['test']:.4f}",
                    seconds, best_text)


def _score_target_value(scores: dict[str, Any], score_target: str) -> float | None:
    """A fit's value of the run's score target, from its ``cv``/``cv_stdev``/``test``."""
    if score_target == "mu_sigma_judgment_metric":
        return mu_sigma(scores["cv"], scores["cv_stdev"])
    return scores["test" if score_target == "test_judgment_metric" else "cv"]


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
