"""Running fits in a child process, with a time limit.

A worker keeps one fit process and sends it one task at a time. A fit that hangs (even
inside C code), runs past its limit, or kills its process (out of memory, a segfault)
then costs one classifier, never the worker: the child is killed, the caller gets a
:class:`FitFailed` that says what happened, and the next task gets a new child.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from atm.exceptions import ClassifierError

# fork: the child starts with the parent's imports instead of importing them again.
_CONTEXT = multiprocessing.get_context("fork")
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


class FitFailed(ClassifierError):
    """A fit raised, ran out of time, or its process died; ``details`` is the traceback
    (or the reason) to record on the classifier."""

    def __init__(self, message: str, details: str | None = None,
                 kind: str | None = None) -> None:
        super().__init__(message)
        self.details = details or message
        self.kind = kind  # class name of the exception the fit raised, if it raised


def _die_with_parent() -> None:
    """Linux: have the kernel kill this process when its parent dies (a worker killed
    with SIGKILL must not leave its fit running as an orphan), and name it ``atm-fit``
    (so ``ps`` and ``atm status`` tell it from its worker)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        libc.prctl(_PR_SET_NAME, b"atm-fit")
    except (OSError, AttributeError):  # not Linux: the orphan finishes its fit and exits
        pass


def _serve(target: Callable[[Any], Any], conn: Connection, parent: int) -> None:
    """The child's loop: run ``target`` on each task received until told to stop."""
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
    # The parent's signal handlers (stop requests) are not the child's business.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        try:
            result: tuple[str, Any] = ("ok", target(task))
        except BaseException as e:  # everything goes back to the parent as text
            result = ("error", (f"{type(e).__name__}: {e}", traceback.format_exc(),
                                type(e).__name__))
        conn.send(result)


class FitProcess:
    """A child process that runs ``target(task)`` for one task at a time, with a limit.

    ``target`` and the tasks must be picklable (a module-level function and plain data).
    """

    def __init__(self, target: Callable[[Any], Any]) -> None:
        self.target = target
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def ensure_started(self) -> None:
        """Start the child if there is none. Call it before starting other threads: a
        fork copies only the calling thread, and locks other threads hold stay held."""
        if self._process is not None and self._process.is_alive():
            return
        self.close()
        parent_end, child_end = _CONTEXT.Pipe()
        self._process = _CONTEXT.Process(target=_serve, args=(self.target, child_end,
                                                              os.getpid()),
                                         name="atm-fit", daemon=True)
        self._process.start()
        child_end.close()
        self._conn = parent_end

    def run(self, task: Any, timeout: float) -> Any:
        """``target(task)`` in the child; raises :class:`FitFailed` when it raised, took
        longer than ``timeout`` seconds, or its process died.

        The child must have been started by :meth:`ensure_started`, before the caller
        started other threads: if it has died since, this fails the task rather than fork
        again from a process that now has other threads."""
        if self._conn is None or self._process is None or not self._process.is_alive():
            reason = ("it was never started" if self._process is None
                      else _death_reason(self._process.exitcode))
            raise FitFailed(f"no fit process to send the task to: {reason}; a new one "
                            "starts with the next classifier")
        finished = False
        try:
            self._conn.send(task)
            if not self._conn.poll(timeout):
                raise FitFailed(f"timed out after {timeout:g} s: the fit was stopped")
            try:
                status, payload = self._conn.recv()
            except EOFError:
                self._process.join(5)
                raise FitFailed(_death_reason(self._process.exitcode)) from None
            finished = True
        except (BrokenPipeError, ConnectionResetError):
            self._process.join(5)
            raise FitFailed(_death_reason(self._process.exitcode)) from None
        finally:
            if not finished:  # timed out, died or interrupted: this child is done for
                self.kill()
        if status == "error":
            summary, details, kind = payload
            raise FitFailed(summary, details, kind)
        return payload

    def kill(self) -> None:
        """Kill the child now (a new one starts with the next task)."""
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join()
        self.close()

    def close(self) -> None:
        """Let the child exit after its current task and forget it."""
        if self._conn is not None:
            try:
                self._conn.send(None)
            except (OSError, ValueError):
                pass
            self._conn.close()
            self._conn = None
        if self._process is not None:
            self._process.join(1)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        self._process = None


def _death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"the fit process was killed by {name}{hint}"
    return f"the fit process exited with code {exitcode} before reporting a result"


__all__ = ["FitFailed", "FitProcess"]
