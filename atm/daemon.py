"""The ATM service: a pid file and a supervisor of one REST server and N workers.

``atm start`` checks the pid file, then daemonizes (python-daemon) a *supervisor*
that binds the REST port, forks the server and the workers, and reports back
through a pipe once the server answers HTTP and every worker is up, or why it
could not start (having stopped everything it started). The supervisor restarts
a child that dies, with back-off, so the pool never silently shrinks.

Children are named ``atm-server`` / ``atm-worker`` (and the supervisor
``atm-supervisor``) so ``status`` and ``stop`` can tell them apart, and they ask
the kernel for SIGTERM when the supervisor dies, so a ``kill -9`` of the
supervisor leaves no orphans.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import http.client
import json
import logging
import multiprocessing
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from atm.config import Settings
from atm.exceptions import ATMError

LOGGER = logging.getLogger(__name__)

SUPERVISOR_NAME = "atm-supervisor"
SERVER_NAME = "atm-server"
WORKER_NAME = "atm-worker"
STARTUP_TIMEOUT = 60.0  # seconds the supervisor waits for its children to be ready
TICK = 0.2  # seconds between two supervision rounds
MAX_BACKOFF = 60.0  # longest wait before restarting a child that keeps dying
HEALTHY_AFTER = 30.0  # a child that lived this long restarts without back-off


class StartError(ATMError):
    """ATM could not start; nothing it started is left running."""


@dataclass
class ServiceHooks:
    """What the CLI layer lends the supervisor's processes (it owns logging and signals)."""

    configure_logging: Callable[[str], None]
    install_stop_handlers: Callable[[Callable[[], None]], None]
    worker_options: Any


@dataclass
class InstanceStatus:
    """What ``atm status`` reports about a running instance."""

    pid: int
    workers: int
    server_url: str | None


# -- processes and the pid file ----------------------------------------------------------


def _prctl(option: int, value: Any) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux
        return False


def set_process_name(name: str) -> None:
    """Name this process (what ``ps -e`` and psutil's ``name()`` show), on Linux."""
    _prctl(15, name.encode()[:15])  # PR_SET_NAME


def is_alive(proc: psutil.Process) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _is_supervisor(proc: psutil.Process) -> bool:
    try:
        if proc.name() == SUPERVISOR_NAME:
            return True
        argv = proc.cmdline()  # where processes cannot be named
    except psutil.Error:
        return False
    return (any(Path(arg).name in ("atm", "atm.cli") for arg in argv[:3])
            and any(arg in ("start", "restart") for arg in argv))


def read_pid_file(path: str | os.PathLike) -> int | None:
    """The pid written in a pid file, or None if there is none (or it is garbage)."""
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def find_supervisor(pid_path: str | os.PathLike) -> psutil.Process | None:
    """The live ATM supervisor named by the pid file, or None (missing or stale file)."""
    pid = read_pid_file(pid_path)
    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
    except psutil.Error:
        return None
    return proc if is_alive(proc) and _is_supervisor(proc) else None


def remove_stale_pid_file(pid_path: str | os.PathLike) -> int | None:
    """Remove a pid file whose process is gone, a zombie or not ATM; return its pid."""
    path = Path(pid_path)
    if not path.exists() or find_supervisor(path) is not None:
        return None
    pid = read_pid_file(path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    LOGGER.debug("removed the stale pid file %s (pid %s is not a running ATM)", path, pid)
    return pid if pid is not None else -1


def write_pid_file(pid_path: str | os.PathLike) -> None:
    """Create the pid file holding this process's pid, atomically; fail if it exists."""
    path = Path(pid_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(f"{os.getpid()}\n")
    try:
        os.link(temp, path)  # fails if the file exists: two starts cannot both win
    except FileExistsError:
        raise StartError(f"ATM is already running (pid file {path} holds pid "
                         f"{read_pid_file(path)})") from None
    finally:
        temp.unlink()


def remove_pid_file(pid_path: str | os.PathLike, pid: int) -> None:
    """Remove the pid file if it still names ``pid``."""
    if read_pid_file(pid_path) == pid:
        with contextlib.suppress(FileNotFoundError):
            Path(pid_path).unlink()


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound and listening on host:port, or a StartError saying why not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise StartError(f"cannot listen on host {host!r}: {e.strerror}; "
                         f"give an address such as 127.0.0.1 with --host") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise StartError(f"port {port} on {host} is already in use; stop what listens "
                             f"there or choose another port with --port") from None
        raise StartError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


def instance_status(pid_path: str | os.PathLike) -> InstanceStatus | None:
    """Live workers and the server address of the instance of a pid file, or None."""
    proc = find_supervisor(pid_path)
    if proc is None:
        return None
    workers, server = 0, None
    for child in proc.children():
        try:
            name = child.name()
        except psutil.Error:
            continue
        if not is_alive(child):
            continue
        if name == WORKER_NAME:
            workers += 1
        elif name == SERVER_NAME:
            server = child
    url = None
    for holder in (server, proc) if server is not None else ():
        with contextlib.suppress(psutil.Error):
            listening = [c.laddr for c in holder.net_connections(kind="inet")
                         if c.status == psutil.CONN_LISTEN]
            if listening:
                host, port = listening[0][:2]
                url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
                break
    return InstanceStatus(pid=proc.pid, workers=workers, server_url=url)


def _wait_gone(procs: list[psutil.Process], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(is_alive(p) for p in procs):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return [proc, *proc.children(recursive=True)]
    return [proc]


def stop_instance(pid_path: str | os.PathLike, timeout: float = 5.0,
                  force: bool = False) -> str:
    """Stop the instance of a pid file: ``not running``, ``stopped``, ``timeout`` or ``killed``.

    SIGTERM lets workers finish their classifier. With ``force``, after the timeout a
    second SIGTERM makes them hand it back, then the whole process tree is killed.
    """
    proc = find_supervisor(pid_path)
    if proc is None:
        remove_stale_pid_file(pid_path)
        return "not running"
    tree = _tree(proc)
    with contextlib.suppress(psutil.Error):
        proc.terminate()
    if _wait_gone(tree, timeout):
        remove_pid_file(pid_path, proc.pid)
        return "stopped"
    if not force:
        return "timeout"
    tree = list({p.pid: p for p in tree + _tree(proc)}.values())
    with contextlib.suppress(psutil.Error):
        proc.terminate()  # the second SIGTERM: workers hand their classifier back now
    if not _wait_gone(tree, 3.0):
        for p in tree:
            with contextlib.suppress(psutil.Error):
                if is_alive(p):
                    p.kill()
        _wait_gone(tree, 5.0)
    remove_pid_file(pid_path, proc.pid)
    return "killed"


# -- the supervisor ----------------------------------------------------------------------


class _Child:
    """One supervised slot: the server or worker number ``index``."""

    def __init__(self, role: str, index: int, label: str) -> None:
        self.role, self.index, self.label = role, index, label
        self.process: Any = None
        self.started_at = 0.0
        self.failures = 0
        self.restart_at = 0.0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class Supervisor:
    """Runs the REST server and ``workers`` workers, restarting whichever dies."""

    def __init__(self, settings: Settings, workers: int, hooks: ServiceHooks,
                 listen: socket.socket | None = None, private_fds: tuple[int, ...] = ()) -> None:
        self.settings, self.hooks, self.listen = settings, hooks, listen
        self.children = [_Child("worker", i + 1, f"worker {i + 1}") for i in range(workers)]
        if listen is not None:
            # Several server processes accept on the one listening socket: the kernel
            # hands each connection to one of them, so the API uses more than one core.
            servers = max(1, settings.server_processes)
            self.children[:0] = [
                _Child("server", i + 1, "server" if servers == 1 else f"server {i + 1}")
                for i in range(servers)]
        self._context = multiprocessing.get_context("fork")
        self._signals = 0
        self._pid = os.getpid()
        self._events_r = self._events_w = -1
        self._private_fds = private_fds  # the supervisor's alone; children close them
        self._startup_timeout = STARTUP_TIMEOUT

    # -- signals --------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals += 1
        if self._signals == 1:
            LOGGER.info("received %s: stopping (workers finish their current classifier)",
                        signal.Signals(signum).name)
        else:
            LOGGER.warning("received %s again: stopping now (workers hand their "
                           "classifier back)", signal.Signals(signum).name)
        self._signal_children(signal.SIGTERM)

    def _signal_children(self, signum: int) -> None:
        for child in self.children:
            if child.alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.process.pid, signum)

    @property
    def stopping(self) -> bool:
        return self._signals > 0

    # -- children -------------------------------------------------------------

    def _spawn(self, child: _Child) -> None:
        child.process = self._context.Process(target=self._child_main, args=(child,),
                                              name=f"atm-{child.role}-{child.index}")
        # Blocked across the fork, so a child never runs the supervisor's handlers.
        stop_signals = {signal.SIGTERM, signal.SIGINT}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        try:
            child.process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
        child.started_at = time.monotonic()
        LOGGER.info("%s started (pid %s)", child.label, child.process.pid)

    def _child_main(self, child: _Child) -> None:
        """Entry point of a forked child; never returns."""
        code = 1
        try:
            set_process_name(SERVER_NAME if child.role == "server" else WORKER_NAME)
            _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: no orphans if we are killed
            if os.getppid() != self._pid:  # the supervisor died before the line above
                os._exit(1)
            os.setpgid(0, 0)  # a terminal's Ctrl-C goes to the supervisor only
            for fd in (self._events_r, *self._private_fds):
                with contextlib.suppress(OSError):
                    os.close(fd)
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
            self.hooks.configure_logging(child.role)
            if child.role == "server":
                self._serve()
            else:
                if self.listen is not None:
                    self.listen.close()
                self._work()
            code = 0
        except KeyboardInterrupt:
            code = 0
        except BaseException as e:  # noqa: BLE001 - a child reports and exits, whatever it was
            LOGGER.exception("%s failed: %s", child.label, e)
            self._event(f"error {child.label} failed: {type(e).__name__}: {e}")
        finally:
            logging.shutdown()
            os._exit(code)

    def _event(self, text: str) -> None:
        line = f"{os.getpid()} {' '.join(text.split())}"[:500] + "\n"
        with contextlib.suppress(OSError):
            os.write(self._events_w, line.encode())

    def _work(self) -> None:
        from atm.database import Database
        from atm.worker import Worker

        worker = Worker(Database(self.settings.sql_url), self.hooks.worker_options)
        self.hooks.install_stop_handlers(worker.request_stop)
        self._event("ready")
        trained = worker.run(wait=True)
        LOGGER.info("worker stopped after training %d classifier(s)", trained)

    def _serve(self) -> None:
        from atm.api import create_app

        app = create_app(self.settings)

        def stop(_signum: int, _frame: Any) -> None:
            raise SystemExit(0)

        signal.signal(signal.SIGTERM, stop)
        self._event("ready")
        serve_waitress(app, self.listen, self.settings)

    def _read_events(self) -> list[tuple[int, str]]:
        data = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self._events_r, 65536):
                data += chunk
        events = []
        for line in data.decode(errors="replace").splitlines():
            pid, _, text = line.partition(" ")
            if pid.isdigit():
                events.append((int(pid), text))
        return events

    # -- the life cycle -------------------------------------------------------

    def run(self, report: Callable[[dict[str, Any]], None] | None = None,
            startup_timeout: float = STARTUP_TIMEOUT) -> int:
        """Start everything, report readiness, supervise until stopped; the exit code."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self._events_r, self._events_w = os.pipe()
        os.set_blocking(self._events_r, False)
        self._startup_timeout = startup_timeout
        try:
            if any(c.role == "worker" for c in self.children):
                # Imported once here, shared by every forked worker (and every restart).
                import atm.worker  # noqa: F401
            self._start(startup_timeout)
        except StartError as e:
            LOGGER.error("ATM could not start: %s", e)
            self._stop_children(grace=5.0)
            if report:
                report({"ok": False, "error": str(e)})
            return 1
        workers = sum(1 for c in self.children if c.role == "worker")
        LOGGER.info("ATM is running with %d worker(s)%s", workers,
                    "" if self.listen is None else f"; REST server on {self.url}")
        if report:
            report({"ok": True, "pid": os.getpid(), "workers": workers,
                    "url": None if self.listen is None else self.url})
        self._private_fds = ()  # closed by the report: the numbers may be reused now
        self._supervise()
        # The signal that ended _supervise was already forwarded: wait for the children.
        self._stop_children(grace=None, signal_first=False)
        LOGGER.info("ATM stopped")
        return 0

    @property
    def url(self) -> str:
        host, port = self.listen.getsockname()[:2] if self.listen else ("", 0)
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    def _start(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for child in self.children:
            self._spawn(child)
        waiting = {c.process.pid: c for c in self.children}
        while waiting:
            self._check_startup(deadline)
            for pid, text in self._read_events():
                if text.startswith("error "):
                    raise StartError(text[len("error "):])
                if text == "ready":
                    waiting.pop(pid, None)
            time.sleep(0.05)
        if self.listen is not None:
            while not self._answers_http():
                self._check_startup(deadline)
                time.sleep(0.1)

    def _check_startup(self, deadline: float) -> None:
        if self.stopping:
            raise StartError("stopped by a signal during start-up")
        for child in self.children:
            if not child.alive:
                errors = [t for _, t in self._read_events() if t.startswith("error ")]
                detail = errors[0][len("error "):] if errors else (
                    f"{child.label} exited during start-up "
                    f"({_exit_text(child.process.exitcode)})")
                raise StartError(f"{detail}; see {self.settings.log_file}")
        if time.monotonic() > deadline:
            raise StartError(f"not ready within {self._startup_timeout:g} s; "
                             f"see {self.settings.log_file}")

    def _answers_http(self) -> bool:
        host, port = self.listen.getsockname()[:2]
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        connection = http.client.HTTPConnection(host, port, timeout=2)
        try:
            connection.request("GET", "/api/datasets")
            connection.getresponse().read()
            return True
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()

    def _supervise(self) -> None:
        while not self.stopping:
            now = time.monotonic()
            for _pid, text in self._read_events():
                if text.startswith("error "):
                    LOGGER.error("%s", text[len("error "):])
            for child in self.children:
                if child.process is not None and not child.alive and not self.stopping:
                    self._schedule_restart(child, now)
                if child.process is None and now >= child.restart_at and not self.stopping:
                    self._spawn(child)
            time.sleep(TICK)

    def _schedule_restart(self, child: _Child, now: float) -> None:
        lived = now - child.started_at
        child.failures = 1 if lived >= HEALTHY_AFTER else child.failures + 1
        delay = min(MAX_BACKOFF, 2.0 ** (child.failures - 1))
        LOGGER.warning("%s (pid %s) died (%s) after %.1f s; restarting it in %g s",
                       child.label, child.process.pid, _exit_text(child.process.exitcode),
                       lived, delay)
        child.process = None
        child.restart_at = now + delay

    def _stop_children(self, grace: float | None, signal_first: bool = True) -> None:
        """SIGTERM every child and wait for it (``grace`` seconds, then SIGKILL)."""
        if signal_first:
            self._signal_children(signal.SIGTERM)
        deadline = None if grace is None else time.monotonic() + grace
        while any(c.alive for c in self.children):
            if deadline is not None and time.monotonic() > deadline:
                self._signal_children(signal.SIGKILL)
                deadline = None
            time.sleep(0.1)


# -- starting --------------------------------------------------------------------------


def run_instance(settings: Settings, workers: int, serve: bool, hooks: ServiceHooks,
                 report: Callable[[dict[str, Any]], None] | None = None,
                 private_fds: tuple[int, ...] = ()) -> int:
    """Be the supervisor of an instance (pid file, port, children); the exit code.

    ``report`` is told once whether start-up worked; ``private_fds`` are closed in
    the children.
    """
    set_process_name(SUPERVISOR_NAME)
    pid_path = Path(settings.pid)
    try:
        write_pid_file(pid_path)
    except (StartError, OSError) as e:
        if report:
            report({"ok": False, "error": str(e)})
        return 1
    listen = None
    try:
        if serve:
            listen = listen_socket(settings.host, settings.port)
        return Supervisor(settings, workers, hooks, listen, private_fds).run(report)
    except StartError as e:
        if report:
            report({"ok": False, "error": str(e)})
        return 1
    finally:
        if listen is not None:
            listen.close()
        remove_pid_file(pid_path, os.getpid())


def _reporter(fd: int) -> Callable[[dict[str, Any]], None]:
    def report(message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            os.write(fd, (json.dumps(message) + "\n").encode())
            os.close(fd)
    return report


def start_background(settings: Settings, workers: int, serve: bool, hooks: ServiceHooks,
                     timeout: float = STARTUP_TIMEOUT + 30) -> dict[str, Any]:
    """Daemonize a supervisor and wait until it is ready; its report, or StartError."""
    import daemon  # python-daemon

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child becomes the daemon (python-daemon forks again)
        code = 1
        try:
            os.close(read_fd)
            context = daemon.DaemonContext(working_directory=os.getcwd(), umask=0o022,
                                           files_preserve=[write_fd], signal_map={},
                                           detach_process=True)
            context.open()
            hooks.configure_logging("supervisor")
            code = run_instance(settings, workers, serve, hooks, _reporter(write_fd),
                                (write_fd,))
        except BaseException:  # noqa: BLE001 - a daemon has nowhere else to report
            LOGGER.exception("the ATM supervisor failed")
        finally:
            logging.shutdown()
            os._exit(code)
    os.close(write_fd)
    os.waitpid(pid, 0)  # the first child exits as soon as the daemon has detached
    message = _read_report(read_fd, timeout)
    if message is None:
        stop_instance(settings.pid, timeout=5, force=True)
        raise StartError(f"ATM did not report within {timeout:g} s and was stopped; "
                         f"see {settings.log_file}")
    if not message.get("ok"):
        raise StartError(message.get("error") or f"ATM failed to start; see {settings.log_file}")
    return message


def _read_report(fd: int, timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    data = b""
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                continue
            chunk = os.read(fd, 65536)
            data += chunk
            if not chunk or b"\n" in data:
                break
    finally:
        os.close(fd)
    line = data.decode(errors="replace").strip()
    if not line:
        return {"ok": False, "error": None}
    return json.loads(line.splitlines()[0])


def run_api_server(settings: Settings, debug: bool = False) -> None:
    """Serve the REST API in this process until interrupted (waitress, or Flask's
    development server with ``debug``)."""
    from atm.api import create_app

    if debug:
        if os.environ.get("WERKZEUG_RUN_MAIN") != "true":  # not the reloader's own child
            listen_socket(settings.host, settings.port).close()  # a clear error if taken
        create_app(settings).run(host=settings.host, port=settings.port, debug=True)
        return
    sock = listen_socket(settings.host, settings.port)
    app = create_app(settings)
    LOGGER.info("ATM REST server is listening on http://%s:%s", settings.host, settings.port)
    try:
        serve_waitress(app, sock, settings)
    finally:
        sock.close()


def serve_waitress(app: Any, sock: socket.socket, settings: Settings) -> None:
    """Serve ``app`` with waitress on an already listening socket until stopped."""
    from waitress import serve

    serve(app, sockets=[sock], threads=max(1, settings.server_threads), ident="ATM")


__all__ = [
    "InstanceStatus", "ServiceHooks", "StartError", "Supervisor", "find_supervisor",
    "instance_status", "listen_socket", "remove_stale_pid_file", "run_api_server",
    "run_instance", "start_background", "stop_instance",
]
