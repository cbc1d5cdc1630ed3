"""The ``atm`` command line: one table of subcommands, shared options, ``main() -> int``.

Settings come from (lowest first) their defaults, ``--config FILE`` (YAML), ``ATM_*``
environment variables and the command-line flags. A bad option prints one line
naming the problem and exits non-zero.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from atm import constants as C
from atm.config import Settings, load_settings
from atm.exceptions import ATMError

LOGGER = logging.getLogger("atm.cli")
LOG_FORMAT = "%(asctime)s %(levelname)s [{role} %(process)d] %(name)s: %(message)s"

Command = Callable[[argparse.Namespace, Settings], int]


# -- logging ----------------------------------------------------------------------------


def configure_logging(settings: Settings, role: str, to_file: bool = False,
                      verbose: int = 0) -> None:
    """Log lines tagged with the process role and pid, to stderr or to the log file."""
    level = logging.DEBUG if verbose else getattr(logging, settings.log_level.upper(), 20)
    handler: logging.Handler
    if to_file:
        handler = logging.FileHandler(settings.log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT.format(role=role)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)


# -- shared options ---------------------------------------------------------------------


def _settings_parent() -> argparse.ArgumentParser:
    """Options every subcommand takes; unset flags fall back to the file and ATM_* env."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("settings")
    group.add_argument("--config", metavar="FILE",
                       help="YAML settings file (see `atm make_config`); env ATM_CONFIG")
    group.add_argument("--sql-url", metavar="URL",
                       help="SQLAlchemy URL of the ModelHub (default sqlite:///atm.db); "
                            "env ATM_SQL_URL")
    group.add_argument("--models-dir", metavar="DIR", help="where model files go (models)")
    group.add_argument("--metrics-dir", metavar="DIR", help="where metrics files go (metrics)")
    group.add_argument("--log-file", metavar="FILE", help="log file of background processes "
                                                          "(atm.log)")
    group.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING... (INFO)")
    group.add_argument("-v", "--verbose", action="count", default=0, help="log debug lines")
    return parent


def _dataset_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("dataset")
    group.add_argument("--train-path", help="CSV of training rows (required without "
                                            "--dataset-id)")
    group.add_argument("--test-path", help="CSV of test rows (default: a stratified 30%% "
                                           "hold-out of the training rows)")
    group.add_argument("--class-column", default="class",
                       help="name of the column to predict (class)")
    group.add_argument("--name", help="dataset name (default: the file name without .csv)")
    group.add_argument("--description", help="free text about the dataset")
    group.add_argument("--dataset-id", type=int,
                       help="start a datarun on an already registered dataset")


def _datarun_options(parser: argparse.ArgumentParser) -> None:
    d = C.DATARUN_DEFAULTS
    group = parser.add_argument_group("datarun")
    group.add_argument("--methods", nargs="+", metavar="METHOD",
                       help="method codes or method JSON files "
                            f"(default: {' '.join(C.DEFAULT_METHODS)})")
    group.add_argument("--budget", type=int, help=f"classifiers, or minutes ({d['budget']})")
    group.add_argument("--budget-type", help=f"{' or '.join(C.BUDGET_TYPES)} "
                                             f"({d['budget_type']})")
    group.add_argument("--metric", help=f"one of {', '.join(C.METRICS)} ({d['metric']})")
    group.add_argument("--score-target", help=f"cv, test or mu_sigma ({d['score_target']})")
    group.add_argument("--tuner", help=f"one of {', '.join(C.TUNERS)} ({d['tuner']})")
    group.add_argument("--selector", help=f"one of {', '.join(C.SELECTORS)} "
                                          f"({d['selector']})")
    group.add_argument("--k-window", type=int, help=f"selector window ({d['k_window']})")
    group.add_argument("--r-minimum", type=int,
                       help=f"trials before a GP tuner models the scores ({d['r_minimum']})")
    group.add_argument("--gridding", type=int, help=f"grid points per tunable, 0 = no grid "
                                                    f"({d['gridding']})")
    group.add_argument("--priority", type=int, help=f"higher runs first ({d['priority']})")
    group.add_argument("--deadline", help="'YYYY-MM-DD HH:MM' UTC; implies a walltime budget")


def datarun_options_from(args: argparse.Namespace) -> dict[str, Any]:
    """The datarun options given on the command line (unset ones left out)."""
    names = ("methods", "budget", "budget_type", "metric", "score_target", "tuner", "selector",
             "k_window", "r_minimum", "gridding", "priority", "deadline")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


# -- commands ---------------------------------------------------------------------------


def cmd_enter_data(args: argparse.Namespace, settings: Settings) -> int:
    """Register a dataset (unless --dataset-id is given) and start a datarun on it."""
    from atm import registry
    from atm.database import Database

    db = Database(settings.sql_url)
    options = datarun_options_from(args)
    if args.dataset_id is None:
        if not args.train_path:
            raise CommandError("--train-path is required (or give --dataset-id)")
        # Check the run options before writing the dataset, so bad input writes nothing.
        from atm.data import summarize_dataset

        summary = summarize_dataset(args.train_path, args.test_path, args.class_column,
                                    args.name, args.description)
        registry.check_datarun_options(options, summary.k_classes)
        dataset = registry.add_dataset(db, args.train_path, args.test_path, args.class_column,
                                       args.name, args.description)
        print(f"dataset {dataset.id} ({dataset.name}): {dataset.n_examples} rows, "
              f"{dataset.d_features} features, {dataset.k_classes} classes")
        dataset_id = dataset.id
    else:
        dataset_id = args.dataset_id
    run = registry.add_datarun(db, dataset_id, **options)
    print(f"datarun {run.id} on dataset {dataset_id}: {len(run.hyperpartitions)} "
          f"hyperpartitions, budget {run.budget} {run.budget_type}, {run.tuner} tuner, "
          f"{run.selector} selector, metric {run.metric}")
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Run one worker in the foreground until no unfinished datarun is left."""
    from atm.database import Database
    from atm.worker import Worker

    worker = Worker(Database(settings.sql_url), worker_options(settings), args.dataruns)
    install_stop_handlers(worker.request_stop)
    trained = worker.run(wait=args.wait, total_time=args.total_time)
    LOGGER.info("worker trained %d classifier(s)", trained)
    return 0


def worker_options(settings: Settings) -> Any:
    from atm.worker import WorkerOptions

    return WorkerOptions(
        models_dir=settings.models_dir,
        metrics_dir=settings.metrics_dir,
        heartbeat_interval=settings.heartbeat_interval,
        heartbeat_grace=settings.heartbeat_grace,
        poll_interval=settings.poll_interval,
    )


def install_stop_handlers(request_stop: Callable[[], None]) -> None:
    """First SIGTERM/SIGINT: finish the current classifier; second: stop now."""
    def handler(signum: int, _frame: Any) -> None:
        if getattr(handler, "seen", False):
            raise KeyboardInterrupt
        handler.seen = True  # type: ignore[attr-defined]
        LOGGER.info("received %s: finishing the current classifier, then stopping "
                    "(send it again to stop now)", signal.Signals(signum).name)
        request_stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# -- the table of subcommands ----------------------------------------------------------


class CommandError(ATMError):
    """A usage problem the CLI reports in one line."""


def _add_enter_data(sub: Any, parent: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("enter_data", parents=[parent], help=cmd_enter_data.__doc__,
                            description=cmd_enter_data.__doc__)
    _dataset_options(parser)
    _datarun_options(parser)
    parser.set_defaults(command=cmd_enter_data, cmd_name="enter_data", role="cli")


def _add_worker(sub: Any, parent: argparse.ArgumentParser) -> None:
    parser = sub.add_parser("worker", parents=[parent], help=cmd_worker.__doc__,
                            description=cmd_worker.__doc__)
    parser.add_argument("--dataruns", nargs="+", type=int, metavar="ID",
                        help="work only on these dataruns")
    parser.add_argument("--total-time", type=float, metavar="SECONDS",
                        help="stop starting classifiers after this many seconds")
    parser.add_argument("--wait", action="store_true",
                        help="when there is no work, poll for new dataruns instead of exiting")
    parser.set_defaults(command=cmd_worker, cmd_name="worker", role="worker")


SUBCOMMANDS: list[Callable[[Any, argparse.ArgumentParser], None]] = [
    _add_enter_data,
    _add_worker,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atm", description="ATM (Auto Tune Models): collaborative AutoML over a shared "
                                "SQL database.")
    from atm import __version__

    parser.add_argument("--version", action="version", version=f"atm {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    parent = _settings_parent()
    for add in SUBCOMMANDS:
        add(sub, parent)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {name: getattr(args, name, None) for name in (
        "sql_url", "models_dir", "metrics_dir", "log_file", "log_level", "host", "port",
        "workers", "pid", "api_token")}
    return load_settings(getattr(args, "config", None), overrides)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "command"):
        parser.print_help()
        return 1
    try:
        settings = settings_from(args)
        configure_logging(settings, args.role, verbose=args.verbose)
        return args.command(args, settings)
    except ATMError as e:
        print(f"atm {args.cmd_name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
