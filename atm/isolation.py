"""Running one fit in a forked child process, with a time limit.

A fit that hangs (even inside C code), runs past its limit, or kills its process
(out of memory, a segfault) then costs one classifier, never the worker: the
child is killed and the caller gets a :class:`FitFailed` that says what happened.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from atm.exceptions import ClassifierError

T = TypeVar("T")

# fork: the child shares the parent's loaded data and imports instead of re-importing.
_CONTEXT = multiprocessing.get_context("fork")
_PR_SET_PDEATHSIG = 1


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
    with SIGKILL must not leave its fit running as an orphan)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the orphan finishes its fit and exits
        pass


def _child(fn: Callable[[], Any], conn: Connection, parent: int) -> None:
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
    # The parent's signal handlers (stop requests) are not the child's business.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result: tuple[str, Any] = ("ok", fn())
    except BaseException as e:  # everything goes back to the parent as text
        result = ("error", (f"{type(e).__name__}: {e}", traceback.format_exc(),
                            type(e).__name__))
    try:
        conn.send(result)
    finally:
        conn.close()


def run_with_time_limit(fn: Callable[[], T], timeout: float | None) -> T:
    """``fn()`` in a forked child, killed after ``timeout`` seconds (None or 0: no child,
    no limit). Raises :class:`FitFailed` when it raised, timed out or died."""
    if not timeout:
        return fn()
    receiver, sender = _CONTEXT.Pipe(duplex=False)
    process = _CONTEXT.Process(target=_child, args=(fn, sender, os.getpid()), daemon=True)
    process.start()
    sender.close()
    try:
        if not receiver.poll(timeout):
            raise FitFailed(f"timed out after {timeout:g} s: the fit was stopped")
        try:
            status, payload = receiver.recv()
        except EOFError:
            process.join(5)
            raise FitFailed(_death_reason(process.exitcode)) from None
    finally:
        if process.is_alive():
            process.kill()
        process.join()
        receiver.close()
    if status == "error":
        summary, details, kind = payload
        raise FitFailed(summary, details, kind)
    return payload


def _death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"the fit process was killed by {name}{hint}"
    return f"the fit process exited with code {exitcode} before reporting a result"


__all__ = ["FitFailed", "run_with_time_limit"]
