"""The ``atm`` command line: one table of subcommands, shared options, ``main() -> int``.

Settings come from (lowest first) their defaults, ``--config FILE`` (YAML), ``ATM_*``
environment variables and the command-line flags. A bad option prints one line
naming the problem and exits non-zero.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from atm import constants as C
from atm.config import Settings, load_settings
from atm.exceptions import ATMError

if TYPE_CHECKING:
    from atm.database import Database

LOGGER = logging.getLogger("atm.cli")
LOG_FORMAT = "%(asctime)s %(levelname)s [{role} %(process)d] %(name)s: %(message)s"

# `atm status` warns when a models or metrics directory's disk has less free space than
# this many bytes or this share of its size, and reports the classifiers that could not
# be saved within this many minutes. It gives up on an unreachable database quickly.
LOW_FREE_SPACE_BYTES = 100 * 1024 * 1024
LOW_FREE_SPACE_FRACTION = 0.01
STORAGE_FAILURE_WINDOW_MINUTES = 10
STATUS_DATABASE_ATTEMPTS = 2

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
                                    args.name, args.description, settings.max_decompressed_mb)
        registry.check_datarun_options(options, summary.k_classes)
        dataset = registry.add_dataset(db, args.train_path, args.test_path, args.class_column,
                                       args.name, args.description,
                                       settings.max_decompressed_mb)
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
    """Say whether ATM runs, with how many workers, where, and on which dataruns, and
    what is wrong with storage (exit code 0: running, 1: not running)."""
    from atm import daemon

    status = daemon.instance_status(_resolve_paths(settings).pid)
    if status is None:
        print("ATM is not running.")
    else:
        print(f"ATM is running with {_workers_text(status.workers)}")
        if status.server_url:
            print(f"ATM REST server is listening on {status.server_url}")
    # Workers may run elsewhere (`atm worker`, other machines): report storage either way.
    _print_database_status(settings, dataruns=status is not None)
    for problem in storage_directory_problems(settings):
        print(f"storage problem: {problem}")
    return 1 if status is None else 0


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
    for name in ("server_processes", "server_threads"):
        if serve and getattr(settings, name) < 1:
            raise CommandError(f"--{name.replace('_', '-')} must be at least 1, "
                               f"got {getattr(settings, name)}")
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


def _print_database_status(settings: Settings, dataruns: bool) -> None:
    """The unfinished dataruns (if ``dataruns``) and the recent storage failures."""
    from sqlalchemy.engine import make_url

    from atm.database import Database

    url = make_url(settings.sql_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:" \
            and not os.path.exists(url.database):
        return  # no database here yet, so nothing to report (and do not create one)
    db = Database(settings.sql_url, create=False, max_attempts=STATUS_DATABASE_ATTEMPTS)
    try:
        if dataruns:
            _print_unfinished_dataruns(db)
        _print_storage_failures(db)
    except Exception as e:  # status still answers when the database does not
        detail = (str(e).strip().splitlines() or [""])[0]
        print(f"(cannot read the database: {type(e).__name__}: {detail})", file=sys.stderr)
    finally:
        db.dispose()


def _print_storage_failures(db: Database) -> None:
    count, latest = db.recent_storage_failures(STORAGE_FAILURE_WINDOW_MINUTES)
    if latest is None:
        return
    reason = (latest.error_message or "").removeprefix(f"{C.STORAGE_ERROR_PREFIX}: ")
    print(f"storage problem: {count} classifier{'' if count == 1 else 's'} could not be "
          f"saved in the last {STORAGE_FAILURE_WINDOW_MINUTES} min; latest (classifier "
          f"{latest.id} at {latest.end_time:%Y-%m-%d %H:%M:%S} UTC): {reason}")


def storage_directory_problems(settings: Settings) -> list[str]:
    """What stops workers from writing the configured models and metrics directories:
    one sentence per problem (not writable, cannot be created, low free space)."""
    problems: list[str] = []
    low_space: dict[int, tuple[list[str], str]] = {}  # device -> directories, problem
    for what, directory in (("models", settings.models_dir),
                            ("metrics", settings.metrics_dir)):
        path = os.path.abspath(directory)
        existing = path
        while not os.path.exists(existing):  # workers create missing directories
            existing = os.path.dirname(existing)
        named = f"{what} directory {path}"
        if not os.path.isdir(existing):
            problems.append(f"{named} cannot be created: {existing} is not a directory")
            continue
        if not os.access(existing, os.W_OK | os.X_OK):
            problems.append(f"{named} is not writable" if existing == path else
                            f"{named} cannot be created: {existing} is not writable")
            continue
        usage = shutil.disk_usage(existing)
        if usage.free < LOW_FREE_SPACE_BYTES or usage.free < LOW_FREE_SPACE_FRACTION * usage.total:
            share = 100 * usage.free / usage.total if usage.total else 0.0
            low_space.setdefault(os.stat(existing).st_dev, (
                [], f"{_size_text(usage.free)} free ({share:.1f}% of "
                    f"{_size_text(usage.total)})"))[0].append(named)
    for directories, free in low_space.values():
        problems.append(f"only {free} on the disk of the {' and the '.join(directories)}")
    return problems


def _size_text(size: float) -> str:
    """A byte count as people read it: 0 B, 12 KB, 3.4 MB, 79 GB."""
    for unit in ("B", "KB", "MB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" or size >= 10 else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.0f} GB" if size >= 10 else f"{size:.1f} GB"


def _print_unfinished_dataruns(db: Database) -> None:
    from atm.database import score_of

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
    group.add_argument("--server-processes", type=int, metavar="N",
                       help="REST server processes sharing the port (2); "
                            "env ATM_SERVER_PROCESSES")
    group.add_argument("--server-threads", type=int, metavar="N",
                       help="threads of each REST server process (2); env ATM_SERVER_THREADS")
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
        "workers", "server_processes", "server_threads", "pid", "api_token", "classifier_timeout")}
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
