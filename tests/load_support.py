"""Helpers of the load and several-machines tests: real `atm worker` and `atm server`
processes with their output in files, a small HTTP load client, and the priority check."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests
from process_support import ATM_EXE  # noqa: F401  (re-exported for the load tests)

# What a user must never see in a worker's or the server's output during a healthy run.
PROBLEMS = ("Traceback", "database is locked", "database unavailable",
            "could not be worked on", "reaped classifier")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fast_env(**extra: str) -> dict[str, str]:
    """The environment of a test worker: short heartbeat and poll intervals."""
    env = dict(os.environ)
    env.update({"ATM_HEARTBEAT_INTERVAL": "0.5", "ATM_POLL_INTERVAL": "0.5"})
    env.update(extra)
    return env


def spawn(command: Sequence[str], log: Path, cwd: Path,
          env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Start a process in its own session, its output going to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(list(command), cwd=cwd, env=dict(env or fast_env()),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM then SIGKILL the process group this test started (nothing else)."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 30)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_exit(processes: Sequence[subprocess.Popen], logs: Sequence[Path],
              timeout: float) -> None:
    """Wait for every process to exit 0; fail with the log tail of the first that did not."""
    deadline = time.monotonic() + timeout
    for process, log in zip(processes, logs, strict=True):
        try:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"{log.name}: still running after {timeout:g} s:\n"
                        f"{log.read_text(errors='replace')[-3000:]}")
        if process.returncode != 0:
            pytest.fail(f"{log.name}: exit code {process.returncode}:\n"
                        f"{log.read_text(errors='replace')[-3000:]}")


def problems_in(logs: Sequence[Path]) -> dict[str, list[str]]:
    """``{log name: [offending lines]}`` for every log holding one of PROBLEMS."""
    found: dict[str, list[str]] = {}
    for log in logs:
        lines = [line for line in log.read_text(errors="replace").splitlines()
                 if any(problem in line for problem in PROBLEMS)]
        if lines:
            found[log.name] = lines[:5]
    return found


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer 200 within {timeout:g} s")


class LatencyClient:
    """A few threads requesting one URL over keep-alive connections until stopped,
    recording the latency and status of every request (a light, steady load: each
    thread pauses ``pause`` seconds between requests so the workers keep the CPU)."""

    def __init__(self, url: str, threads: int = 4, pause: float = 0.02) -> None:
        self.url, self.pause = url, pause
        self.latencies: list[float] = []
        self.statuses: dict[int | str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> LatencyClient:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                began = time.perf_counter()
                try:
                    response = session.get(self.url, timeout=30)
                    response.content  # noqa: B018 - read the whole body
                    status: int | str = response.status_code
                except requests.RequestException as e:
                    status = type(e).__name__
                seconds = time.perf_counter() - began
                with self._lock:
                    self.latencies.append(seconds)
                    self.statuses[status] = self.statuses.get(status, 0) + 1
                self._stop.wait(self.pause)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), nearest rank."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]


def priority_violations(classifiers: Sequence[Any], priorities: Mapping[int, int]) -> list[str]:
    """Classifiers claimed while a run of higher priority still had a budget slot free.

    The property: a worker reserves a budget slot of a lower-priority run only after
    its reservation on every higher-priority run failed, i.e. once every slot of
    those runs had been reserved. Rows are inserted after their reservation, so a
    row of a higher-priority run may legitimately get a *larger* id than a
    lower-priority row L: when its worker reserved the slot before L's worker
    reserved L's but inserted the row after L. A worker is sequential (reserve,
    insert, fit, then the next reservation), so it holds at most one reserved,
    not-yet-inserted slot at a time, and L's own worker holds none while it
    reserves L. Hence, for every classifier L, the higher-priority rows with an id
    above L's come from pairwise *distinct* workers, none of them L's worker (at
    most W-1 of them with W workers). Ids are allocated at insert (SQLite's
    serialized writes, PostgreSQL sequences, InnoDB auto-increment), so they order
    the inserts. This assumes no slot is given back during the run (no reaped or
    handed-back classifier), which the tests assert separately.

    If priorities were ignored, a worker would serve a lower-priority run while
    higher ones still had free slots, and then go on taking higher-priority slots
    itself: a later higher-priority row of L's own worker, or two of one worker,
    shows up and this returns it.
    """
    violations = []
    for low in classifiers:
        later_higher = [c for c in classifiers
                        if priorities[c.datarun_id] > priorities[low.datarun_id]
                        and c.id > low.id]
        workers = [c.worker_id for c in later_higher]
        if low.worker_id in workers or len(set(workers)) != len(workers):
            violations.append(
                f"classifier {low.id} (datarun {low.datarun_id}, priority "
                f"{priorities[low.datarun_id]}, worker {low.worker_id}) was claimed before "
                f"{len(later_higher)} higher-priority classifiers, e.g. "
                f"{[(c.id, c.worker_id) for c in later_higher[:4]]}")
    return violations
