"""REST API throughput: the production server (as `atm start` runs it) vs Flask's dev server.

    python bench/api.py [--quick] [--json PATH]

Builds a SQLite database holding 10,000 classifiers (20 dataruns of 500), then
loads ``atm start -w 0`` (production: 2 waitress processes of 2 threads on one port),
``atm server`` (one waitress process) and Flask's development server with ``wrk`` on the list,
item and children endpoints (random pages and ids, 16 connections). gunicorn,
when installed, is measured the same way for comparison. Finally ``atm start``
with one idle worker: seconds from ``POST /api/run`` to the first complete
classifier (``first_model_s``), at the default poll interval (0.5 s) and at 0.2 s.

wrk is a Debian package: ``apt-get install -y wrk``. Without it the load part is
skipped (a Python client would saturate a core itself).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import _common as bc
from sqlalchemy import update

from atm import constants as C
from atm import registry
from atm.database import Database
from atm.models import Classifier, Datarun

N_DATARUNS = 20
PER_DATARUN = 500
CONNECTIONS = 16

LUA = """
math.randomseed(%(seed)d)
request = function()
  local path = string.format("%(pattern)s", math.random(1, %(top)d))
  return wrk.format("GET", path)
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def atm_command() -> list[str]:
    script = Path(sys.executable).parent / "atm"
    return [str(script)] if script.exists() else [sys.executable, "-m", "atm.cli"]


def build_database(root: Path) -> tuple[str, dict[str, int]]:
    """A SQLite file with N_DATARUNS x PER_DATARUN complete classifiers (bulk insert)."""
    url = f"sqlite:///{root}/atm.db"
    db = Database(url)
    dataset = registry.add_dataset(db, str(bc.DEMOS_DIR / "iris.csv"))
    rows = []
    partition_ids = []
    for _ in range(N_DATARUNS):
        run = registry.add_datarun(db, dataset.id, methods=["logreg", "dt"],
                                   budget=PER_DATARUN)
        partitions = [p.id for p in db.get_hyperpartitions(run.id)]
        partition_ids.extend(partitions)
        for i in range(PER_DATARUN):
            score = 0.5 + (i % 97) / 200
            rows.append({
                "datarun_id": run.id, "hyperpartition_id": partitions[i % len(partitions)],
                "host": "bench", "hyperparameter_values": {"C": 1.0 + i, "tol": 0.001},
                "cv_judgment_metric": score, "cv_judgment_metric_stdev": 0.01,
                "test_judgment_metric": score, "status": C.CLASSIFIER_COMPLETE,
                "worker_id": "bench:1", "pid": 1,
            })
    with db.session_scope(write=True) as session:
        session.execute(Classifier.__table__.insert(), rows)
        # Finished runs: an idle worker must have nothing to do but the run first_model posts.
        session.execute(update(Datarun).values(status=C.DATARUN_COMPLETE,
                                               n_started=PER_DATARUN))
    db.dispose()
    return url, {"classifiers": len(rows), "hyperpartitions": max(partition_ids),
                 "dataruns": N_DATARUNS}


def start_server(kind: str, url: str, port: int, root: Path) -> subprocess.Popen:
    env = {**os.environ, "ATM_SQL_URL": url, "ATM_LOG_LEVEL": "WARNING"}
    if kind == "atm-start":  # production: what `atm start` serves (2 waitress processes)
        command = [*atm_command(), "start", "--foreground", "-w", "0", "--port", str(port),
                   "--pid", str(root / f"atm-{port}.pid"), "--log-level", "WARNING"]
    elif kind == "waitress":  # one waitress process, as `atm server` serves
        command = [*atm_command(), "server", "--port", str(port), "--log-level", "WARNING"]
    elif kind == "dev":
        # Flask's development server as `atm server --debug` starts it, minus the
        # reloader: its child process re-binds the port the parent holds and dies.
        code = ("import sys; from atm.api import create_app; "
                "create_app().run(host='127.0.0.1', port=int(sys.argv[1]), debug=True, "
                "use_reloader=False)")
        command = [sys.executable, "-c", code, str(port)]
    else:  # gunicorn: 2 processes x 4 threads
        command = [str(Path(sys.executable).parent / "gunicorn"), "-w", "2", "--threads", "4",
                   "-b", f"127.0.0.1:{port}", "--log-level", "warning",
                   "atm.api.app:create_app()"]
    log = open(root / f"server-{kind}.log", "wb")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                            cwd=root, start_new_session=True)
    bc.wait_http(f"http://127.0.0.1:{port}/api/dataruns/1")
    return proc


def stop_server(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the dev server's reloader has a child
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_wrk(base: str, pattern: str, top: int, seconds: int, root: Path) -> dict[str, float]:
    script = root / "random.lua"
    script.write_text(LUA % {"seed": 7, "pattern": pattern, "top": top})
    output = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "-s", str(script),
         base], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {"req_per_s": rate, "p50_ms": _latency(output, "50%"),
            "p99_ms": _latency(output, "99%"), "non_2xx": int(errors.group(1)) if errors else 0}


def _latency(output: str, label: str) -> float:
    match = re.search(rf"^\s*{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def first_model(root: Path, url: str, poll: float, trials: int) -> list[float]:
    """`atm start` with one idle worker; seconds from POST /api/run to a complete classifier."""
    port = free_port()
    env = {**os.environ, "ATM_SQL_URL": url, "ATM_POLL_INTERVAL": str(poll)}
    command = [*atm_command(), "start", "--foreground", "--port", str(port), "-w", "1",
               "--pid", str(root / f"atm-{port}.pid"), "--log-level", "WARNING"]
    log = open(root / f"start-{port}.log", "wb")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
                            start_new_session=True)
    db = Database(url)
    seconds = []
    try:
        bc.wait_http(f"http://127.0.0.1:{port}/api/datasets/1")
        time.sleep(max(3.0, 2 * poll))  # the worker is up and idle
        for _ in range(trials):
            body = json.dumps({"dataset_id": 1, "methods": ["logreg"], "budget": 1}).encode()
            request = urllib.request.Request(f"http://127.0.0.1:{port}/api/run", body,
                                             {"Content-Type": "application/json"})
            began = time.perf_counter()
            with urllib.request.urlopen(request, timeout=30) as response:
                run_id = json.load(response)["datarun_ids"][0]
            while db.count_classifiers(run_id)[C.CLASSIFIER_COMPLETE] < 1:
                if time.perf_counter() - began > 60:
                    raise RuntimeError("no classifier completed within 60 s")
                time.sleep(0.01)
            seconds.append(time.perf_counter() - began)
            time.sleep(poll * 0.37 + 0.5)  # land the next request at another poll phase
    finally:
        stop_server(proc)
        log.close()
        db.dispose()
    return seconds


def main() -> int:
    args = bc.parse_args(__doc__.splitlines()[0])
    seconds = 5 if args.quick else 15
    trials = 3 if args.quick else 7
    print(f"machine: {bc.machine()}")
    figures: dict[str, Any] = {}
    have_wrk = shutil.which("wrk") is not None
    if not have_wrk:
        print("wrk is not installed: the load part is skipped. Install it with "
              "`apt-get install -y wrk` (Debian/Ubuntu).")
    with tempfile.TemporaryDirectory(prefix="atm-bench-") as tmp:
        root = Path(tmp)
        with bc.Stopwatch() as build:
            url, sizes = build_database(root)
        print(f"database: {sizes['classifiers']} classifiers in {sizes['dataruns']} dataruns "
              f"({build.seconds:.1f} s to build); wrk -t1 -c{CONNECTIONS} -d{seconds}s")
        endpoints = {
            "list": ("/api/classifiers?page=%d", sizes["classifiers"] // 10),
            "item": ("/api/classifiers/%d", sizes["classifiers"]),
            "children": ("/api/hyperpartitions/%d/classifiers", sizes["hyperpartitions"]),
            "list_dataruns": ("/api/dataruns?page=%d", N_DATARUNS // 10),
        }
        servers = ["atm-start", "waitress", "dev"]
        if (Path(sys.executable).parent / "gunicorn").exists():
            servers.append("gunicorn")
        rows = []
        if have_wrk:
            for kind in servers:
                port = free_port()
                proc = start_server(kind, url, port, root)
                try:
                    for name, (pattern, top) in endpoints.items():
                        if kind == "dev" and name == "list_dataruns":
                            continue
                        result = run_wrk(f"http://127.0.0.1:{port}", pattern, top, seconds,
                                         root)
                        rows.append([kind, name, result["req_per_s"], result["p50_ms"],
                                     result["p99_ms"], result["non_2xx"]])
                        prefix = {"atm-start": "", "waitress": "waitress_1_",
                                  "dev": "dev_server_", "gunicorn": "gunicorn_"}[kind]
                        if name == "list":
                            figures[f"{prefix}req_per_s"] = result["req_per_s"]
                            figures[f"{prefix}p50_ms"] = result["p50_ms"]
                            figures[f"{prefix}p99_ms"] = result["p99_ms"]
                        else:
                            figures[f"{prefix}{name}_req_per_s"] = result["req_per_s"]
                            figures[f"{prefix}{name}_p99_ms"] = result["p99_ms"]
                finally:
                    stop_server(proc)
            bc.print_table("wrk load (list = 10 classifiers a page, each with its datarun "
                           "and hyperpartition)",
                           ["server", "endpoint", "req_per_s", "p50_ms", "p99_ms", "non_2xx"],
                           rows)
        fm_rows = []
        for poll in (0.5, 0.2):
            times = first_model(root, url, poll, trials)
            key = "first_model_s" if poll == 0.5 else "first_model_s_poll_0_2"
            figures[key] = bc.median(times)
            fm_rows.append([poll, bc.median(times), min(times), max(times)])
        bc.print_table(f"POST /api/run -> first complete classifier (`atm start -w 1`, "
                       f"{trials} runs)", ["poll_interval_s", "median_s", "min_s", "max_s"],
                       fm_rows)
    checks = [("req_per_s >= 800 (list)", figures.get("req_per_s", 0) >= 800),
              ("p99_ms <= 50 (list)", figures.get("p99_ms", float("inf")) <= 50),
              ("first_model_s <= 2", figures["first_model_s"] <= 2)]
    bc.print_table("targets", ["target", "met"], [[t, "yes" if ok else "NO"] for t, ok in checks])
    bc.write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
