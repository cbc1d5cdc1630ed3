"""Bookkeeping vs fit+score: the real worker on SQLite, side by side with Optuna on RDB storage.

    python bench/overhead.py [--quick] [--json PATH]

1. N logreg classifiers on the iris demo through :class:`atm.worker.Worker` on a
   fresh SQLite file, with the default persistent fit process (classifier_timeout
   900 s: one child per worker, one :class:`atm.training.FitTask` per classifier) and
   in-process (classifier_timeout=0). Each classifier's time is split into fit+score
   (measured around ``Model.train_test`` by a subclass the script installs in
   :mod:`atm.training`, so inside the fit process too) and everything else: database,
   selector, tuner, the fit process round trip, dataset cache and files.
2. The same fits (same hold-out, folds, seed and metric, same catalog as a
   conditional space) through an Optuna study on RDB storage (SQLite), TPE sampler.
3. ``propose()`` of the gp and gp_ei tuners on 100 and 500 recorded classifiers of
   one hyperpartition.
4. One long datarun (5,000 classifiers; 1,000 with --quick) with a stub fit (in the
   fit process too), so that only bookkeeping is timed: its first 100 vs last 100
   classifiers.

How the timings travel back from the fit process: the hooks are installed before the
:class:`Worker` is created, because the worker hands ``train_and_save`` (the function
object) to its :class:`atm.isolation.FitProcess` in ``__init__`` and the child is a
fork, which copies the patched modules. The ``train_and_save`` wrapper returns the
child's own seconds in the scores dict under :data:`BENCH_KEY`, which the worker
ignores (it reads only ``cv``, ``cv_stdev`` and ``test``) and :class:`TimedWorker`
reads back in ``_log_result``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import random
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import _common as bc
from threadpoolctl import threadpool_limits

from atm import registry
from atm import training as training_module
from atm import worker as worker_module
from atm.data import load_dataset_frames
from atm.database import Database
from atm.metrics import judgment_metric_for
from atm.model import Model, holdout_split
from atm.worker import Worker, WorkerOptions

METHOD = "logreg"
DATASET = bc.DEMOS_DIR / "iris.csv"
BENCH_KEY = "_bench_seconds"  # private key of the scores dict: seconds measured in the task


# -- instrumentation installed by this script ------------------------------------

# Seconds spent inside the current task, in whichever process runs it (the fit
# process, or the worker itself in-process); reset by timed_train_and_save.
_TASK_SECONDS: dict[str, float] = {}


def _add_task_seconds(name: str, seconds: float) -> None:
    _TASK_SECONDS[name] = _TASK_SECONDS.get(name, 0.0) + seconds


class TimedModel(Model):
    """Model whose train_test records its own duration (installed as atm.training.Model)."""

    stub = False

    def train_test(self, *data: Any) -> dict[str, Any]:
        began = time.perf_counter()
        try:
            if self.stub:
                return _stub_scores(self.params)
            return super().train_test(*data)
        finally:
            _add_task_seconds("fit", time.perf_counter() - began)


def _stub_scores(params: dict[str, Any]) -> dict[str, Any]:
    """A smooth made-up score of the hyperparameters, so tuners have something to fit."""
    c = math.log10(float(params.get("C", 1.0)))
    score = 0.9 - 0.01 * (c - 1.0) ** 2 + random.uniform(-0.01, 0.01)
    return {"cv": score, "cv_stdev": 0.01, "test": score}


def _timed(fn: Callable[..., Any], record: Callable[[float], None]) -> Callable[..., Any]:
    """``fn``, handing each call's duration in seconds to ``record``."""
    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            record(time.perf_counter() - began)

    return timed


def _timed_in_task(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, adding its duration to the current task's seconds."""
    return _timed(fn, functools.partial(_add_task_seconds, name))


_TRAIN_AND_SAVE = training_module.train_and_save


def timed_train_and_save(task: Any) -> tuple[dict[str, Any], str | None, str | None]:
    """``train_and_save`` that returns the seconds it measured inside the scores dict."""
    _TASK_SECONDS.clear()
    began = time.perf_counter()
    scores, model_path, metrics_path = _TRAIN_AND_SAVE(task)
    seconds = dict(_TASK_SECONDS, train_and_save=time.perf_counter() - began)
    return {**scores, BENCH_KEY: seconds}, model_path, metrics_path


class TimedWorker(Worker):
    """Records, per classifier, the end time of its loop iteration and the seconds
    measured inside its task (fit, train_and_save, files)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ends: list[float] = []
        self.tasks: list[dict[str, float]] = []
        self._task: dict[str, float] | None = None

    @property
    def fits(self) -> list[float]:
        return [t.get("fit", 0.0) for t in self.tasks]

    def work_on(self, run: Any) -> bool:
        self._task = None
        ended = super().work_on(run)
        if ended and self._task is not None:
            self.ends.append(time.perf_counter())
            self.tasks.append(self._task)
        return ended

    def _log_result(self, run: Any, partition: Any, classifier_id: int, metric: str,
                    scores: dict[str, Any], seconds: float) -> None:
        self._task = scores.get(BENCH_KEY)
        super()._log_result(run, partition, classifier_id, metric, scores, seconds)


class CallTimer:
    """Accumulates wall time per name for wrapped callables (and keeps each call's)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, list[float]] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        return _timed(fn, functools.partial(self._record, name))

    def _record(self, name: str, took: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + took
        self.calls.setdefault(name, []).append(took)


DB_METHODS = ("reap_stale_classifiers", "get_unfinished_dataruns", "mark_datarun_running",
              "get_selection_state", "get_hyperpartitions", "claim_classifier",
              "complete_classifier", "complete_datarun_if_done", "set_hyperpartition_status")
WORKER_NAMES = ("propose", "select_partition", "train_and_save")
TASK_NAMES = ("dataset_frames", "save_model", "save_metrics")  # looked up in atm.training


@contextlib.contextmanager
def instrumented(db: Database, timer: CallTimer, stub: bool) -> Iterator[None]:
    """Install the timing hooks on the worker and training modules and on ``db``; undo
    them after. Enter it BEFORE creating the Worker: the worker's FitProcess keeps the
    ``train_and_save`` it finds at ``__init__``, and its fork copies atm.training as
    patched at the first classifier."""
    saved_worker = {name: getattr(worker_module, name) for name in WORKER_NAMES}
    saved_training = {name: getattr(training_module, name) for name in ("Model", *TASK_NAMES)}
    TimedModel.stub = stub
    training_module.Model = TimedModel  # type: ignore[misc]
    for name in TASK_NAMES:
        setattr(training_module, name, _timed_in_task(name, saved_training[name]))
    worker_module.train_and_save = timer.wrap("train_and_save", timed_train_and_save)
    for name in ("propose", "select_partition"):
        setattr(worker_module, name, timer.wrap(name, saved_worker[name]))
    for name in DB_METHODS:
        setattr(db, name, timer.wrap(f"db.{name}", getattr(db, name)))
    try:
        yield
    finally:
        for name, value in saved_worker.items():
            setattr(worker_module, name, value)
        for name, value in saved_training.items():
            setattr(training_module, name, value)
        TimedModel.stub = False
        for name in DB_METHODS:
            with contextlib.suppress(AttributeError):
                delattr(db, name)


# -- ATM ------------------------------------------------------------------------

def run_atm(workdir: Path, n: int, timeout: float, stub: bool = False,
            tuner: str = "uniform", selector: str = "uniform") -> dict[str, Any]:
    """N classifiers through the real worker on a fresh SQLite file."""
    workdir.mkdir(parents=True, exist_ok=True)
    db = Database(f"sqlite:///{workdir}/atm.db")
    dataset = registry.add_dataset(db, str(DATASET))
    run = registry.add_datarun(db, dataset.id, methods=[METHOD], budget=n, tuner=tuner,
                               selector=selector)
    options = WorkerOptions(models_dir=str(workdir / "models"),
                            metrics_dir=str(workdir / "metrics"), classifier_timeout=timeout)
    timer = CallTimer()
    with instrumented(db, timer, stub):
        worker = TimedWorker(db, options, [run.id])
        fitter = worker._fitter  # None in-process
        if fitter is not None:  # parent side of the fit process (an instance attribute)
            fitter.run = timer.wrap("FitProcess.run", fitter.run)  # type: ignore[method-assign]
            fitter.ensure_started = timer.wrap(  # type: ignore[method-assign]
                "FitProcess.ensure_started", fitter.ensure_started)
        began = time.perf_counter()
        trained = worker.run()
        total = time.perf_counter() - began
    starts = [began, *worker.ends[:-1]]
    per_classifier = [end - start for start, end in zip(starts, worker.ends, strict=True)]
    bookkeeping = [t - f for t, f in zip(per_classifier, worker.fits, strict=True)]
    task_seconds: dict[str, float] = {}
    for task in worker.tasks:
        for name, seconds in task.items():
            task_seconds[name] = task_seconds.get(name, 0.0) + seconds
    round_trips: list[float] = []
    parent_runs = timer.calls.get("FitProcess.run", [])
    if parent_runs and len(parent_runs) == len(worker.tasks):  # every task came back
        round_trips = [p - t["train_and_save"] for p, t in zip(parent_runs, worker.tasks,
                                                               strict=True)]
    db.dispose()
    if len(worker.tasks) != trained:  # an errored fit has no task seconds: say so
        print(f"warning: {trained - len(worker.tasks)} of {trained} classifiers came back "
              "without timings (errored?)")
    return {"trained": trained, "total_s": total, "fit_s": sum(worker.fits),
            "bookkeeping": bookkeeping, "calls": timer.seconds, "call_times": timer.calls,
            "task": task_seconds,
            "round_trips": round_trips, "random_seed": run.random_seed}


def growth_rows(result: dict[str, Any], top: int = 6) -> list[list[Any]]:
    """The parts whose mean ms per call grew most from the first 100 calls to the last 100."""
    rows = []
    for name, calls in result["call_times"].items():
        if len(calls) >= 200:
            first, last = sum(calls[:100]) / 100 * 1000, sum(calls[-100:]) / 100 * 1000
            rows.append([name, len(calls), first, last, last - first])
    return sorted(rows, key=lambda r: -r[4])[:top]


def bookkeeping_parts(result: dict[str, Any]) -> list[tuple[str, float]]:
    """(part, seconds in total) of everything but the fit, largest first."""
    calls, task = dict(result["calls"]), result["task"]
    inner = task.get("train_and_save", 0.0)
    parts: list[tuple[str, float]] = []
    if "FitProcess.run" in calls:
        calls.pop("train_and_save", None)  # the worker process never runs it itself
        parts.append(("fit process round trip (FitProcess.run minus the child's "
                      "train_and_save: pickle, pipe, wake-up)", calls.pop("FitProcess.run")
                      - inner))
        where = "in the fit process"
    else:
        calls.pop("train_and_save", None)  # == inner plus the wrapper's own dict copy
        where = "in-process"
    parts.append((f"train_and_save minus fit ({where}: dataset cache, files)",
                  inner - task.get("fit", 0.0)))
    parts.extend((f"  of which {name}", task.get(name, 0.0)) for name in TASK_NAMES)
    parts.extend(sorted(calls.items(), key=lambda kv: -kv[1]))
    return parts


# -- Optuna -----------------------------------------------------------------------

def run_optuna(workdir: Path, n: int, seed: int) -> dict[str, Any]:
    """The same fits through an Optuna study on RDB (SQLite) storage, TPE sampler."""
    import optuna

    bc.quiet_optuna()
    partitions = bc.catalog([METHOD])
    x, y, _, _ = load_dataset_frames(str(DATASET), None, "class")
    data = holdout_split(x, y, seed)
    x_train, x_test, y_train, y_test = data
    metric = judgment_metric_for("f1", int(y.nunique()))
    fits: list[float] = []
    ends: list[float] = []

    def objective(trial: Any) -> float:
        partition, params = bc.suggest_partition_params(trial, partitions)
        began = time.perf_counter()
        scores = Model(partition.method, params, metric, random_state=seed).train_test(
            x_train, y_train, x_test, y_test)
        fits.append(time.perf_counter() - began)
        return scores["cv"] if scores["cv"] is not None else 0.0

    def after_trial(_study: Any, _trial: Any) -> None:
        ends.append(time.perf_counter())

    storage = optuna.storages.RDBStorage(f"sqlite:///{workdir}/optuna.db")
    study = optuna.create_study(storage=storage, direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    began = time.perf_counter()
    study.optimize(objective, n_trials=n, callbacks=[after_trial])
    total = time.perf_counter() - began
    starts = [began, *ends[:-1]]
    overhead = [e - s - f for s, e, f in zip(starts, ends, fits, strict=True)]
    return {"total_s": total, "fit_s": sum(fits), "bookkeeping": overhead}


# -- tuner -------------------------------------------------------------------------

def time_tuner(tuner: str, records: int, repeats: int) -> float:
    """Median ms of one ``propose()`` (tuner fit on the history included)."""
    from atm.tuning import propose

    partition = next(p for p in bc.catalog([METHOD]) if p.tunables)
    rng = random.Random(records)
    history = []
    for _ in range(records):
        values = {}
        for name, spec in partition.tunables:
            low, high = spec["range"]
            if spec["type"].endswith("_exp"):
                values[name] = 10 ** rng.uniform(math.log10(low), math.log10(high))
            elif spec["type"].startswith("int"):
                values[name] = rng.randint(int(low), int(high))
            else:
                values[name] = rng.uniform(low, high)
        history.append((values, rng.uniform(0.5, 1.0)))
    times = []
    with threadpool_limits(limits=1):  # as inside a worker
        for _ in range(repeats):
            began = time.perf_counter()
            propose(tuner, partition.tunables, history, 0, 2)
            times.append((time.perf_counter() - began) * 1000)
    return bc.median(times)


# -- main ----------------------------------------------------------------------------

def main() -> int:
    args = bc.parse_args(__doc__.splitlines()[0])
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")  # baytune/sklearn convergence chatter
    n = 30 if args.quick else 100
    long_n = 1000 if args.quick else 5000
    figures: dict[str, Any] = {}
    print(f"machine: {bc.machine()}")
    print(f"{n} {METHOD} classifiers on {DATASET.name}; long datarun: {long_n} classifiers"
          + (" (--quick: 1,000 instead of 5,000)" if args.quick else ""))
    have_optuna = bc.have_optuna()

    with tempfile.TemporaryDirectory(prefix="atm-bench-") as tmp:
        root = Path(tmp)
        fitproc = run_atm(root / "fitproc", n, timeout=900.0)
        inproc = run_atm(root / "inproc", n, timeout=0)
        optuna_run = run_optuna(root, n, fitproc["random_seed"]) if have_optuna else None

        rows = []
        for label, result in (("ATM, fit process (default)", fitproc),
                              ("ATM, in-process (timeout 0)", inproc),
                              ("Optuna TPE, RDB SQLite", optuna_run)):
            if result is None:
                continue
            rows.append([label, result["total_s"], result["fit_s"],
                         result["total_s"] - result["fit_s"],
                         bc.median(result["bookkeeping"]) * 1000,
                         bc.percentile(result["bookkeeping"], 90) * 1000])
        bc.print_table(f"{n} classifiers: total vs fit+score (seconds; bookkeeping per "
                       "classifier in ms)",
                       ["system", "total_s", "fit_score_s", "other_s", "bookkeeping_ms_p50",
                        "bookkeeping_ms_p90"], rows)

        figures["n_classifiers"] = n
        figures["bookkeeping_ms_median"] = bc.median(fitproc["bookkeeping"]) * 1000
        figures["bookkeeping_ms_median_inproc"] = bc.median(inproc["bookkeeping"]) * 1000
        figures["atm_total_s"] = fitproc["total_s"]
        figures["atm_total_s_inproc"] = inproc["total_s"]
        figures["atm_fit_s"] = fitproc["fit_s"]
        figures["atm_fit_s_inproc"] = inproc["fit_s"]
        figures["fit_process_round_trip_ms_median"] = bc.median(fitproc["round_trips"]) * 1000
        if optuna_run is not None:
            figures["optuna_rdb_total_s"] = optuna_run["total_s"]
            figures["optuna_fit_s"] = optuna_run["fit_s"]
            figures["optuna_ms_per_trial_median"] = bc.median(optuna_run["bookkeeping"]) * 1000
            figures["atm_over_optuna"] = fitproc["total_s"] / optuna_run["total_s"]
            figures["atm_over_optuna_inproc"] = inproc["total_s"] / optuna_run["total_s"]

        for label, result in (("fit process", fitproc), ("in-process", inproc)):
            rows = [[name, seconds / result["trained"] * 1000]
                    for name, seconds in bookkeeping_parts(result)]
            bc.print_table(f"where the bookkeeping goes, {label} (ms per classifier)",
                           ["part", "ms"], rows)

        tuner_rows = []
        repeats = 3 if args.quick else 7
        for tuner in ("gp", "gp_ei"):
            t100 = time_tuner(tuner, 100, repeats)
            t500 = time_tuner(tuner, 500, repeats)
            tuner_rows.append([tuner, t100, t500])
            figures[f"tuner_ms_100_{tuner}"] = t100
            figures[f"tuner_ms_500_{tuner}"] = t500
        figures["tuner_ms_100"] = max(r[1] for r in tuner_rows)
        figures["tuner_ms_500"] = max(r[2] for r in tuner_rows)
        bc.print_table("propose() incl. the GP fit on the history (median ms)",
                       ["tuner", "100 records", "500 records"], tuner_rows)

        long_rows = []
        growth: list[list[Any]] = []
        for label, timeout, suffix in (("fit process", 900.0, ""),
                                       ("in-process", 0, "_inproc")):
            result = run_atm(root / f"long{suffix}", long_n, timeout=timeout, stub=True)
            book = result["bookkeeping"]
            first, last = bc.median(book[:100]) * 1000, bc.median(book[-100:]) * 1000
            figures[f"bookkeeping_ms_first100{suffix}"] = first
            figures[f"bookkeeping_ms_last100{suffix}"] = last
            figures[f"last100_over_first100{suffix}"] = last / first
            stub_ms = result["fit_s"] / max(result["trained"], 1) * 1000
            long_rows.append([label, result["trained"], result["total_s"], stub_ms, first,
                              last, last / first])
            growth.extend([label, *row] for row in growth_rows(result))
        figures["long_datarun_classifiers"] = long_n
        bc.print_table(f"one datarun of {long_n} classifiers, stub fit (median bookkeeping ms)",
                       ["isolation", "classifiers", "total_s", "stub_fit_ms", "first100",
                        "last100", "last/first"], long_rows)
        bc.print_table("what grows over that datarun (mean ms per call, first vs last 100 calls)",
                       ["isolation", "part", "calls", "first100", "last100", "growth"], growth)

    targets = [
        ("bookkeeping_ms_median <= 10", figures["bookkeeping_ms_median"] <= 10),
        ("atm_over_optuna <= 1.0", figures.get("atm_over_optuna", math.inf) <= 1.0),
        ("last100/first100 <= 1.2", figures["last100_over_first100"] <= 1.2),
        ("tuner_ms_100 <= 20", figures["tuner_ms_100"] <= 20),
        ("tuner_ms_500 <= 100", figures["tuner_ms_500"] <= 100),
    ]
    bc.print_table("targets (default isolation)", ["target", "met"],
                   [[t, "yes" if ok else "NO"] for t, ok in targets])
    bc.write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
