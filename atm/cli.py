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
OptionAdder = Callable[[argparse.ArgumentParser], None]


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
    group.add_argument("--classifier-timeout", type=float, metavar="SECONDS",
                       help="stop a classifier's fit after this long and record it as "
                            "errored (900; 0 = no limit)")
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
        classifier_timeout=settings.classifier_timeout or None,
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


# -- the service: server, start, stop, status, restart ------------------------------------


def cmd_server(args: argparse.Namespace, settings: Settings) -> int:
    """Run the REST API in the foreground (waitress; Flask's dev server with --debug)."""
    from atm import daemon

    def stop(_signum: int, _frame: Any) -> None:
        raise SystemExit(0)  # the WSGI server closes its socket and returns

    signal.signal(signal.SIGTERM, stop)
    daemon.run_api_server(settings, debug=args.debug)
    return 0


def cmd_start(args: argparse.Namespace, settings: Settings) -> int:
    """Start the REST server and a pool of workers in the background."""
    return _start(args, _resolve_paths(settings))


def cmd_stop(args: argparse.Namespace, settings: Settings) -> int:
    """Stop the ATM instance of a pid file (workers finish their current classifier)."""
    return _stop(args, _resolve_paths(settings), restarting=False)


def cmd_restart(args: argparse.Namespace, settings: Settings) -> int:
    """Stop the ATM instance of a pid file (if any), then start it with these options."""
    settings = _resolve_paths(settings)
    code = _stop(args, settings, restarting=True)
    return code if code else _start(args, settings)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Say whether ATM runs, with how many workers, where, and on which dataruns."""
    from atm import daemon

    status = daemon.instance_status(_resolve_paths(settings).pid)
    if status is None:
        print("ATM is not running.")
        return 1
    print(f"ATM is running with {_workers_text(status.workers)}")
    if status.server_url:
        print(f"ATM REST server is listening on {status.server_url}")
    _print_unfinished_dataruns(settings)
    return 0


def _resolve_paths(settings: Settings) -> Settings:
    """Absolute pid and log paths: the daemon, status and stop must agree on them."""
    return settings.replace(pid=os.path.abspath(settings.pid),
                            log_file=os.path.abspath(settings.log_file))


def _workers_text(count: int) -> str:
    return f"{count} worker" if count == 1 else f"{count} workers"


def _start(args: argparse.Namespace, settings: Settings) -> int:
    from atm import daemon

    serve = not args.no_server
    if settings.workers < 0 or (settings.workers == 0 and not serve):
        raise CommandError(f"--workers must be at least {0 if serve else 1}, "
                           f"got {settings.workers}")
    running = daemon.find_supervisor(settings.pid)
    if running is not None:
        raise CommandError(f"ATM is already running! (pid {running.pid}, pid file "
                           f"{settings.pid}); stop it with `atm stop`, or run a second "
                           f"instance with another --pid (and --port, or --no-server)")
    stale = daemon.remove_stale_pid_file(settings.pid)
    if stale is not None:
        print(f"removed the stale pid file {settings.pid} (pid {stale} is not a running ATM)",
              file=sys.stderr)
    _check_database(settings.sql_url)
    if not args.foreground:
        try:
            with open(settings.log_file, "a", encoding="utf-8"):
                pass
        except OSError as e:
            raise CommandError(f"cannot write the log file {settings.log_file}: {e.strerror}; "
                               f"choose another with --log-file") from None
    if serve:
        daemon.listen_socket(settings.host, settings.port).close()
    hooks = daemon.ServiceHooks(
        configure_logging=lambda role: configure_logging(
            settings, role, to_file=not args.foreground, verbose=args.verbose),
        install_stop_handlers=install_stop_handlers,
        worker_options=worker_options(settings),
    )
    if args.foreground:
        hooks.configure_logging("supervisor")
        return daemon.run_instance(settings, settings.workers, serve, hooks,
                                   report=lambda message: _print_started(message, None))
    report = daemon.start_background(settings, settings.workers, serve, hooks)
    _print_started(report, settings.log_file)
    return 0


def _print_started(report: dict[str, Any], log_file: str | None) -> None:
    if not report.get("ok"):
        print(f"atm start: error: {report.get('error')}", file=sys.stderr)
        return
    log = f"; log {log_file}" if log_file else ""
    print(f"ATM is running with {_workers_text(report['workers'])} (pid {report['pid']}{log})")
    if report.get("url"):
        print(f"ATM REST server is listening on {report['url']}")
    sys.stdout.flush()


def _check_database(url: str) -> None:
    """Fail early, before daemonizing, if the database cannot be used."""
    from sqlalchemy.engine import make_url

    from atm.database import Database

    try:
        Database(url).dispose()
    except Exception as e:  # any driver error: report it in one line
        shown = make_url(url).render_as_string(hide_password=True)
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CommandError(f"cannot use the database {shown}: {detail}") from e


def _stop(args: argparse.Namespace, settings: Settings, restarting: bool) -> int:
    from atm import daemon

    outcome = daemon.stop_instance(settings.pid, args.timeout, args.force)
    if outcome == "not running":
        if not restarting:
            print("ATM is not running.")
        return 0
    if outcome == "timeout":
        print(f"ATM (pid file {settings.pid}) did not stop within {args.timeout:g} s; its "
              f"workers may still be finishing a classifier."
              f"{' Not starting it again.' if restarting else ''} Use --force to kill it.",
              file=sys.stderr)
        return 1
    if outcome == "killed":
        print(f"ATM did not stop within {args.timeout:g} s and was killed.")
    else:
        print("ATM stopped.")
    return 0


def _print_unfinished_dataruns(settings: Settings) -> None:
    from sqlalchemy.engine import make_url

    from atm.database import Database, score_of

    url = make_url(settings.sql_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:" \
            and not os.path.exists(url.database):
        return  # no database here yet, so no dataruns (and do not create one)
    try:
        db = Database(settings.sql_url, create=False)
        for run in db.get_unfinished_dataruns():
            running = db.count_classifiers(run.id)[C.CLASSIFIER_RUNNING]
            done = max(0, run.n_started - running)
            budget = (f"{done}/{run.budget} classifiers" if run.budget_type == C.BUDGET_CLASSIFIER
                      else f"{done} classifiers, {run.budget} minute budget")
            best = db.get_best_classifier(run.id, run.score_target)
            score = None if best is None else score_of(best, run.score_target)
            best_text = ("no score yet" if score is None else
                         f"best {run.score_target} {score:.4f} (classifier {best.id})")
            print(f"datarun {run.id} on {run.dataset.name} ({run.status}): {budget} done, "
                  f"{running} running, {best_text}")
        db.dispose()
    except Exception as e:  # status still answers when the database does not
        print(f"(cannot read the dataruns: {type(e).__name__}: {e})", file=sys.stderr)


# -- files: get_demos, make_config ----------------------------------------------------


def cmd_get_demos(args: argparse.Namespace, settings: Settings) -> int:
    """Copy the bundled demo CSVs into ./demos/ and describe them."""
    from atm.demos import copy_demos

    for demo in copy_demos(args.path, overwrite=args.force):
        kept = "" if demo.copied else " (kept the file already there; --force replaces it)"
        if demo.problem:
            print(f"{demo.path}: not a usable dataset: {demo.problem}{kept}")
        else:
            print(f"{demo.path}: {demo.rows} rows, {demo.features} features, "
                  f"{demo.classes} classes{kept}")
    return 0


def cmd_make_config(args: argparse.Namespace, settings: Settings) -> int:
    """Write a YAML file holding every setting with its default (load it with --config)."""
    from atm.config import write_default_config

    if os.path.exists(args.path) and not args.force:
        raise CommandError(f"{args.path} already exists; use --force to overwrite it")
    print(f"Generating file {args.path}")
    write_default_config(args.path)
    return 0


# -- the table of subcommands ----------------------------------------------------------


class CommandError(ATMError):
    """A usage problem the CLI reports in one line."""


def _worker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataruns", nargs="+", type=int, metavar="ID",
                        help="work only on these dataruns")
    parser.add_argument("--total-time", type=float, metavar="SECONDS",
                        help="stop starting classifiers after this many seconds")
    parser.add_argument("--wait", action="store_true",
                        help="when there is no work, poll for new dataruns instead of exiting")


def _server_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("REST server")
    group.add_argument("--host", help="address to listen on (127.0.0.1); env ATM_HOST")
    group.add_argument("--port", type=int, help="port to listen on (5000); env ATM_PORT")
    group.add_argument("--api-token", metavar="TOKEN",
                       help="token the API requires for changes; env ATM_API_TOKEN")


def _pid_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pid", metavar="FILE",
                        help="pid file of the instance (atm.pid); env ATM_PID")


def _start_options(parser: argparse.ArgumentParser) -> None:
    _server_options(parser)
    _pid_option(parser)
    group = parser.add_argument_group("start")
    group.add_argument("-w", "--workers", type=int, help="worker processes (1); env ATM_WORKERS")
    group.add_argument("--no-server", action="store_true",
                       help="start workers only (e.g. to add workers to a running ATM)")
    group.add_argument("--foreground", action="store_true",
                       help="stay in the foreground, logging to the terminal")


def _stop_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("stop")
    group.add_argument("-t", "--timeout", type=float, default=5.0,
                       help="seconds to wait for ATM to stop (5)")
    group.add_argument("-f", "--force", action="store_true",
                       help="kill ATM (its whole process tree) if it does not stop in time")


def _debug_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true",
                        help="Flask's development server, with the debugger and reloader")


def _file_options(default: str, what: str, force_help: str) -> OptionAdder:
    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--path", default=default, help=f"{what} ({default})")
        parser.add_argument("--force", action="store_true", help=force_help)

    return add


# The table of subcommands: name, function (its docstring is the help), the role its log
# lines carry, and the option groups it takes besides the shared settings.
SUBCOMMANDS: list[tuple[str, Command, str, tuple[OptionAdder, ...]]] = [
    ("enter_data", cmd_enter_data, "cli", (_dataset_options, _datarun_options)),
    ("worker", cmd_worker, "worker", (_worker_options,)),
    ("server", cmd_server, "server", (_server_options, _debug_option)),
    ("start", cmd_start, "cli", (_start_options,)),
    ("stop", cmd_stop, "cli", (_pid_option, _stop_options)),
    ("status", cmd_status, "cli", (_pid_option,)),
    ("restart", cmd_restart, "cli", (_start_options, _stop_options)),
    ("get_demos", cmd_get_demos, "cli",
     (_file_options("demos", "folder to copy them to", "replace files already there"),)),
    ("make_config", cmd_make_config, "cli",
     (_file_options("atm.yaml", "file to write", "overwrite an existing file"),)),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atm", description="ATM (Auto Tune Models): collaborative AutoML over a shared "
                                "SQL database.")
    from atm import __version__

    parser.add_argument("--version", action="version", version=f"atm {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    parent = _settings_parent()
    for name, command, role, option_groups in SUBCOMMANDS:
        doc = command.__doc__
        subparser = sub.add_parser(name, parents=[parent], help=doc, description=doc)
        for add_options in option_groups:
            add_options(subparser)
        subparser.set_defaults(command=command, cmd_name=name, role=role)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {name: getattr(args, name, None) for name in (
        "sql_url", "models_dir", "metrics_dir", "log_file", "log_level", "host", "port",
        "workers", "pid", "api_token", "classifier_timeout")}
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
