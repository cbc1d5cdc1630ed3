"""Bookkeeping vs fit+score: the real worker on SQLite, side by side with Optuna on RDB storage.

    python bench/overhead.py [--quick] [--json PATH]

1. N logreg classifiers on the iris demo through :class:`atm.worker.Worker` on a
   fresh SQLite file, with the default fork-per-fit isolation (classifier_timeout
   900 s) and in-process (classifier_timeout=0). Each classifier's time is split
   into fit+score (measured around ``Model.train_test`` by a subclass the script
   installs) and everything else: database, selector, tuner, fork and files.
2. The same fits (same hold-out, folds, seed and metric, same catalog as a
   conditional space) through an Optuna study on RDB storage (SQLite), TPE sampler.
3. ``propose()`` of the gp and gp_ei tuners on 100 and 500 recorded classifiers of
   one hyperpartition.
4. One long datarun (5,000 classifiers; 1,000 with --quick) with a stub fit, so
   that only bookkeeping is timed: its first 100 vs last 100 classifiers.
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
from atm import worker as worker_module
from atm.data import load_dataset_frames
from atm.database import Database
from atm.metrics import judgment_metric_for
from atm.model import Model, holdout_split
from atm.worker import Worker, WorkerOptions

METHOD = "logreg"
DATASET = bc.DEMOS_DIR / "iris.csv"


# -- instrumentation installed by this script ------------------------------------

class TimedModel(Model):
    """Model whose train_test reports its own duration (travels back from the fork)."""

    stub = False

    def train_test(self, *data: Any) -> dict[str, Any]:
        began = time.perf_counter()
        if self.stub:
            scores = _stub_scores(self.params)
        else:
            scores = super().train_test(*data)
        scores["_fit_s"] = time.perf_counter() - began
        return scores


def _stub_scores(params: dict[str, Any]) -> dict[str, Any]:
    """A smooth made-up score of the hyperparameters, so tuners have something to fit."""
    c = math.log10(float(params.get("C", 1.0)))
    score = 0.9 - 0.01 * (c - 1.0) ** 2 + random.uniform(-0.01, 0.01)
    return {"cv": score, "cv_stdev": 0.01, "test": score}


class TimedWorker(Worker):
    """Records, per classifier, the end time of its loop iteration and its fit time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ends: list[float] = []
        self.fits: list[float] = []
        self._fit: float | None = None

    def work_on(self, run: Any) -> bool:
        self._fit = None
        ended = super().work_on(run)
        if ended and self._fit is not None:
            self.ends.append(time.perf_counter())
            self.fits.append(self._fit)
        return ended

    def _log_result(self, run: Any, partition: Any, classifier_id: int, metric: str,
                    scores: dict[str, Any], seconds: float) -> None:
        self._fit = scores.get("_fit_s")
        super()._log_result(run, partition, classifier_id, metric, scores, seconds)


class CallTimer:
    """Accumulates wall time per name for wrapped callables."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - began

        return timed


DB_METHODS = ("reap_stale_classifiers", "get_unfinished_dataruns", "mark_datarun_running",
              "reserve_budget_slot", "release_budget_slot", "complete_datarun_if_done",
              "get_partition_scores", "get_hyperpartitions", "get_partition_history",
              "start_classifier", "complete_classifier", "get_best_classifier",
              "set_hyperpartition_status")


@contextlib.contextmanager
def instrumented(db: Database, timer: CallTimer, stub: bool) -> Iterator[None]:
    """Install the timing hooks on the worker module and on ``db``; undo them after."""
    saved = {name: getattr(worker_module, name) for name in
             ("Model", "propose", "select_partition", "run_with_time_limit", "save_model",
              "save_metrics")}
    TimedModel.stub = stub
    worker_module.Model = TimedModel  # type: ignore[misc]
    for name in ("propose", "select_partition", "run_with_time_limit", "save_model",
                 "save_metrics"):
        setattr(worker_module, name, timer.wrap(name, saved[name]))
    for name in DB_METHODS:
        setattr(db, name, timer.wrap(f"db.{name}", getattr(db, name)))
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(worker_module, name, value)
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
    worker = TimedWorker(db, options, [run.id])
    with instrumented(db, timer, stub):
        began = time.perf_counter()
        trained = worker.run()
        total = time.perf_counter() - began
    starts = [began, *worker.ends[:-1]]
    per_classifier = [end - start for start, end in zip(starts, worker.ends, strict=True)]
    bookkeeping = [t - f for t, f in zip(per_classifier, worker.fits, strict=True)]
    db.dispose()
    return {"trained": trained, "total_s": total, "fit_s": sum(worker.fits),
            "bookkeeping": bookkeeping, "calls": timer.seconds, "random_seed": run.random_seed}


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
        fork = run_atm(root / "fork", n, timeout=900.0)
        inproc = run_atm(root / "inproc", n, timeout=0)
        optuna_run = run_optuna(root, n, fork["random_seed"]) if have_optuna else None

        rows = []
        for label, result in (("ATM, fork per fit (default)", fork),
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
        figures["bookkeeping_ms_median"] = bc.median(fork["bookkeeping"]) * 1000
        figures["bookkeeping_ms_median_inproc"] = bc.median(inproc["bookkeeping"]) * 1000
        figures["atm_total_s"] = fork["total_s"]
        figures["atm_total_s_inproc"] = inproc["total_s"]
        figures["atm_fit_s"] = fork["fit_s"]
        if optuna_run is not None:
            figures["optuna_rdb_total_s"] = optuna_run["total_s"]
            figures["optuna_fit_s"] = optuna_run["fit_s"]
            figures["optuna_ms_per_trial_median"] = bc.median(optuna_run["bookkeeping"]) * 1000
            figures["atm_over_optuna"] = fork["total_s"] / optuna_run["total_s"]
            figures["atm_over_optuna_inproc"] = inproc["total_s"] / optuna_run["total_s"]

        for label, result in (("fork per fit", fork), ("in-process", inproc)):
            calls = sorted(result["calls"].items(), key=lambda kv: -kv[1])
            fit = result["fit_s"]
            rows = []
            for name, seconds in calls:
                if name == "run_with_time_limit":
                    name = "run_with_time_limit minus fit (fork, pipe, files)"
                    seconds -= fit
                rows.append([name, seconds / result["trained"] * 1000])
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
        for label, timeout, suffix in (("fork per fit", 900.0, ""),
                                       ("in-process", 0, "_inproc")):
            result = run_atm(root / f"long{suffix}", long_n, timeout=timeout, stub=True)
            book = result["bookkeeping"]
            first, last = bc.median(book[:100]) * 1000, bc.median(book[-100:]) * 1000
            figures[f"bookkeeping_ms_first100{suffix}"] = first
            figures[f"bookkeeping_ms_last100{suffix}"] = last
            figures[f"last100_over_first100{suffix}"] = last / first
            long_rows.append([label, result["trained"], result["total_s"], first, last,
                              last / first])
        figures["long_datarun_classifiers"] = long_n
        bc.print_table(f"one datarun of {long_n} classifiers, stub fit (median bookkeeping ms)",
                       ["isolation", "classifiers", "total_s", "first100", "last100",
                        "last/first"], long_rows)

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
