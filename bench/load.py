"""Load: 8 worker processes over 4 dataruns of different priorities, per database backend,
while `GET /api/dataruns` of a real server is loaded.

    python bench/load.py [--quick] [--json PATH] [--postgres-url URL] [--mysql-url URL]

For each backend (SQLite always; PostgreSQL and MySQL when their URL is given or
``ATM_TEST_POSTGRES_URL`` / ``ATM_TEST_MYSQL_URL`` is set, in a temporary database
dropped afterwards) the script registers the iris demo, starts 4 dataruns of priorities
1-4 (dt and logreg, ``--budget`` classifiers each), an ``atm server`` (waitress, as
``atm start`` runs it) and 8 ``atm worker`` processes with the default heartbeat and
poll intervals. While the workers run, ``GET /api/dataruns`` is requested without pause
over 4 keep-alive connections: with ``wrk`` (``apt-get install -y wrk``) in 2-second
rounds whose latency histograms are merged, else with a Python client of 4 threads.

Figures per backend: classifiers/second (``steady``: from the first classifier that
ended to the last, so interpreter start-up does not count; ``wall``: from starting
the workers to the last exit), and the API's requests/second, p50 and p99 under that
load. Without ``--quick`` each backend also runs once without API load, so the
cost of serving the API to the workers shows. Correctness is checked on the way:
exact budgets, nothing left running, higher priorities first, no traceback or
"database is locked" in any output.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import _common as bc

from atm import constants as C
from atm import registry
from atm.database import Database

WORKERS = 8
PRIORITIES = (1, 2, 3, 4)
METHODS = ["dt", "logreg"]
CONNECTIONS = 4
WRK_ROUND_S = 2
PROBLEMS = ("Traceback", "database is locked", "database unavailable", "could not be worked on")

# Dump wrk's whole latency histogram (microseconds) so that rounds can be merged.
WRK_LUA = """
done = function(summary, latency, requests)
  io.write(string.format("REQUESTS %d\\n", summary.requests))
  local e = summary.errors
  io.write(string.format("ERRORS %d %d\\n", e.status, e.connect + e.read + e.write + e.timeout))
  for i = 1, #latency do  -- #latency: the number of distinct values
    local value, count = latency(i)
    io.write(string.format("H %d %d\\n", value, count))
  end
end
"""


def atm_command() -> list[str]:
    script = Path(sys.executable).parent / "atm"
    return [str(script)] if script.exists() else [sys.executable, "-m", "atm.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- databases -----------------------------------------------------------------

def server_database(base: str) -> tuple[str, Any]:
    """A new empty database on a PostgreSQL/MySQL server: its URL and a dropper."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(base)
    if url.drivername == "mysql":
        url = url.set(drivername="mysql+pymysql")
    name = f"atm_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))

    def drop() -> None:
        force = " WITH (FORCE)" if url.get_backend_name() == "postgresql" else ""
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
        admin.dispose()

    return url.set(database=name).render_as_string(hide_password=False), drop


def backends(args: Any) -> dict[str, str | None]:
    found: dict[str, str | None] = {"sqlite": None}
    for name, given, env in (("postgresql", args.postgres_url, "ATM_TEST_POSTGRES_URL"),
                             ("mysql", args.mysql_url, "ATM_TEST_MYSQL_URL")):
        url = given or os.environ.get(env)
        if url:
            found[name] = url
        else:
            print(f"{name}: skipped (give --{name.replace('postgresql', 'postgres')}-url "
                  f"or set {env})")
    return found


# -- API load --------------------------------------------------------------------

class WrkLoad(threading.Thread):
    """``wrk`` in short rounds until stopped; merges the rounds' latency histograms."""

    name_of_client = f"wrk -t1 -c{CONNECTIONS}, {WRK_ROUND_S} s rounds"

    def __init__(self, url: str, root: Path) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.script = root / "histogram.lua"
        self.script.write_text(WRK_LUA)
        self.histogram: dict[int, int] = {}
        self.requests = self.non_2xx = self.socket_errors = 0
        self.seconds = 0.0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            began = time.perf_counter()
            output = subprocess.run(
                ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{WRK_ROUND_S}s", "-s", str(self.script),
                 self.url], capture_output=True, text=True, timeout=WRK_ROUND_S + 60).stdout
            self.seconds += time.perf_counter() - began
            for line in output.splitlines():
                parts = line.split()
                if parts[:1] == ["REQUESTS"]:
                    self.requests += int(parts[1])
                elif parts[:1] == ["ERRORS"]:
                    self.non_2xx += int(parts[1])
                    self.socket_errors += int(parts[2])
                elif parts[:1] == ["H"]:
                    value, count = int(parts[1]), int(parts[2])
                    self.histogram[value] = self.histogram.get(value, 0) + count

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def percentile_ms(self, q: float) -> float:
        total = sum(self.histogram.values())
        if not total:
            return float("nan")
        rank, seen = max(1, -(-q * total // 100)), 0
        for value in sorted(self.histogram):
            seen += self.histogram[value]
            if seen >= rank:
                return value / 1000
        return max(self.histogram) / 1000


class PythonLoad(threading.Thread):
    """The fallback without wrk: CONNECTIONS threads requesting without pause."""

    name_of_client = f"Python client, {CONNECTIONS} threads (wrk not installed)"

    def __init__(self, url: str, _root: Path) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.latencies: list[float] = []
        self.requests = self.non_2xx = self.socket_errors = 0
        self.seconds = 0.0
        self._halt = threading.Event()

    def _client(self) -> None:
        import requests

        with requests.Session() as session:
            while not self._halt.is_set():
                began = time.perf_counter()
                try:
                    response = session.get(self.url, timeout=30)
                    response.content  # noqa: B018 - read the whole body
                    self.non_2xx += response.status_code >= 300
                except requests.RequestException:
                    self.socket_errors += 1
                self.latencies.append(time.perf_counter() - began)

    def run(self) -> None:
        began = time.perf_counter()
        threads = [threading.Thread(target=self._client, daemon=True)
                   for _ in range(CONNECTIONS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.seconds = time.perf_counter() - began
        self.requests = len(self.latencies)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def percentile_ms(self, q: float) -> float:
        return bc.percentile(self.latencies, q) * 1000


# -- one round -------------------------------------------------------------------

def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def priority_held(classifiers: list[Any], priorities: dict[int, int]) -> bool:
    """No classifier claimed while a higher-priority run had a free slot (the check of
    tests/load_support.py: higher-priority rows inserted after a row L come from
    distinct workers, none of them L's, as each worker holds one pending slot at most)."""
    for low in classifiers:
        workers = [c.worker_id for c in classifiers
                   if priorities[c.datarun_id] > priorities[low.datarun_id] and c.id > low.id]
        if low.worker_id in workers or len(set(workers)) != len(workers):
            return False
    return True


def one_round(root: Path, url: str, budget: int, load_class: Any | None) -> dict[str, Any]:
    """8 workers over 4 prioritized dataruns on ``url``, with API load when ``load_class``."""
    shutil.copyfile(bc.DEMOS_DIR / "iris.csv", root / "iris.csv")
    db = Database(url)
    dataset = registry.add_dataset(db, str(root / "iris.csv"))
    priorities = {}
    for priority in PRIORITIES:
        run = registry.add_datarun(db, dataset.id, budget=budget, methods=METHODS,
                                   priority=priority)
        priorities[run.id] = priority
    total = budget * len(PRIORITIES)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    logs = [root / f"worker-{i}.log" for i in range(WORKERS)]
    server_log = root / "server.log"
    server = load = None
    procs: list[subprocess.Popen] = []
    try:
        if load_class is not None:
            port = free_port()
            with open(server_log, "wb") as out:
                server = subprocess.Popen(
                    [*atm_command(), "server", "--port", str(port), "--sql-url", url,
                     "--log-level", "WARNING"], cwd=root, env=env, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True)
            api = f"http://127.0.0.1:{port}/api/dataruns"
            bc.wait_http(api)
            load = load_class(api, root)
            load.start()
        began = time.perf_counter()
        for log in logs:
            with open(log, "wb") as out:
                procs.append(subprocess.Popen(
                    [*atm_command(), "worker", "--sql-url", url], cwd=root, env=env,
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        first = last = None
        while True:
            ended = 0
            for run_id in priorities:
                counts = db.count_classifiers(run_id)
                ended += counts[C.CLASSIFIER_COMPLETE] + counts[C.CLASSIFIER_ERRORED]
            now = time.perf_counter()
            if first is None and ended >= 1:
                first = (now, ended)
            if ended >= total and last is None:
                last = now
            if all(p.poll() is not None for p in procs):
                break
            if now - began > 1800:
                raise RuntimeError("the workers did not finish within 30 minutes")
            time.sleep(0.2)
        wall = time.perf_counter() - began
    finally:
        try:
            if load is not None:
                load.stop()
        finally:
            for proc in [*procs, *([server] if server else [])]:
                stop_process(proc)
    classifiers = db.get_classifiers()
    runs = [db.get_datarun(run_id) for run_id in priorities]
    exact = all(r.status == C.DATARUN_COMPLETE and r.n_started == budget for r in runs) and \
        len(classifiers) == total and \
        not [c for c in classifiers if c.status == C.CLASSIFIER_RUNNING]
    problems = sum(1 for log in [*logs, *([server_log] if server else [])]
                   for line in log.read_text(errors="replace").splitlines()
                   if any(p in line for p in PROBLEMS))
    db.dispose()
    steady = float("nan")
    if first is not None and last is not None and last > first[0]:
        steady = (len(classifiers) - first[1]) / (last - first[0])
    result = {
        "classifiers": len(classifiers),
        "errored": sum(c.status == C.CLASSIFIER_ERRORED for c in classifiers),
        "wall_s": wall,
        "steady_per_s": steady,
        "wall_per_s": len(classifiers) / wall,
        "budgets_exact": exact,
        "priority_held": priority_held(classifiers, priorities),
        "problem_lines": problems,
    }
    if load is not None:
        result.update({
            "api_requests": load.requests,
            "api_req_per_s": load.requests / load.seconds if load.seconds else float("nan"),
            "api_p50_ms": load.percentile_ms(50),
            "api_p99_ms": load.percentile_ms(99),
            "api_non_2xx": load.non_2xx,
            "api_socket_errors": load.socket_errors,
        })
    return result


def main() -> int:
    def extra(parser: Any) -> None:
        parser.add_argument("--postgres-url", help="server URL (default $ATM_TEST_POSTGRES_URL)")
        parser.add_argument("--mysql-url", help="server URL (default $ATM_TEST_MYSQL_URL)")
        parser.add_argument("--budget", type=int, help="classifiers per datarun "
                                                       "(12 with --quick, else 30)")

    args = bc.parse_args(__doc__.splitlines()[0], extra)
    budget = args.budget or (12 if args.quick else 30)
    load_class = WrkLoad if shutil.which("wrk") else PythonLoad
    print(f"machine: {bc.machine()}")
    print(f"load: {WORKERS} `atm worker` processes, {len(PRIORITIES)} dataruns x {budget} "
          f"classifiers ({'/'.join(METHODS)} on iris), default heartbeat/poll intervals; "
          f"API client: {load_class.name_of_client}")
    figures: dict[str, Any] = {"workers": WORKERS, "dataruns": len(PRIORITIES),
                               "budget_per_datarun": budget,
                               "api_client": load_class.name_of_client}
    rows, checks = [], []
    for backend, server_url in backends(args).items():
        phases = [("with API load", load_class)]
        if not args.quick:
            phases.insert(0, ("no API load", None))
        for phase, loader in phases:
            with tempfile.TemporaryDirectory(prefix="atm-bench-load-") as tmp:
                root = Path(tmp)
                drop = None
                if server_url is None:
                    url = f"sqlite:///{root}/atm.db"
                else:
                    url, drop = server_database(server_url)
                try:
                    r = one_round(root, url, budget, loader)
                finally:
                    if drop is not None:
                        drop()
            rows.append([backend, phase, r["classifiers"], r["errored"], r["wall_s"],
                         r["steady_per_s"], r["wall_per_s"], r.get("api_req_per_s", "-"),
                         r.get("api_p50_ms", "-"), r.get("api_p99_ms", "-"),
                         r.get("api_non_2xx", "-")])
            checks.append([backend, phase, "yes" if r["budgets_exact"] else "NO",
                           "yes" if r["priority_held"] else "NO", r["problem_lines"]])
            suffix = "" if loader is not None else "_no_api_load"
            figures[f"{backend}_classifiers_per_s{suffix}"] = r["steady_per_s"]
            figures[f"{backend}_classifiers_per_s_wall{suffix}"] = r["wall_per_s"]
            for key in ("api_requests", "api_req_per_s", "api_p50_ms", "api_p99_ms",
                        "api_non_2xx", "api_socket_errors"):
                if key in r:
                    figures[f"{backend}_{key}"] = r[key]
            figures[f"{backend}_correct{suffix}"] = bool(
                r["budgets_exact"] and r["priority_held"] and not r["problem_lines"])
            print(f"{backend} ({phase}): {r['classifiers']} classifiers in {r['wall_s']:.1f} s",
                  flush=True)
    bc.print_table("classifiers/second and GET /api/dataruns under the load of 8 workers",
                   ["backend", "phase", "classifiers", "errored", "wall_s", "steady_per_s",
                    "wall_per_s", "api_req_per_s", "api_p50_ms", "api_p99_ms", "api_non_2xx"],
                   rows)
    bc.print_table("correctness under that load", ["backend", "phase", "budgets_exact",
                                                  "priorities_first", "problem_lines"], checks)
    bc.write_json(args.json, figures)
    return 0 if all(c[2] == c[3] == "yes" and c[4] == 0 for c in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
