"""Several real worker processes on one database, on every configured backend: budgets are
exact, nothing is claimed twice, nothing is left running, and a worker killed with
SIGKILL mid-fit is reaped and its budget slot reused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from process_support import ATM_EXE, wait_for, write_gated_method

from atm import registry
from atm.database import Database

CLAIMER = textwrap.dedent("""
    import os, sys
    from atm.database import Database, Refused
    db = Database(sys.argv[1], create=False)
    run_id, partition_id = int(sys.argv[2]), int(sys.argv[3])
    won = 0
    while True:
        claimed = db.claim_classifier(run_id, partition_id, {}, "h", f"{os.getpid()}-{won}",
                                      os.getpid())
        if claimed is Refused.NO_BUDGET:
            break
        won += 1
    print(won)
""")


def worker_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"ATM_HEARTBEAT_INTERVAL": "0.5", "ATM_POLL_INTERVAL": "0.5"})
    env.update(extra)
    return env


def start_worker(db_url: str, cwd: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen([ATM_EXE, "worker", "--sql-url", db_url], cwd=cwd,
                            env=worker_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, timeout: float = 240) -> str:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"worker did not finish:\n{output[-3000:]}")
    assert process.returncode == 0, output[-3000:]
    return output


def test_eight_processes_racing_for_slots_win_exactly_the_budget(any_db, tmp_path, demo):
    dataset = registry.add_dataset(any_db, demo("iris"))
    run = registry.add_datarun(any_db, dataset.id, budget=150, methods=["dt"])
    processes = [
        subprocess.Popen([sys.executable, "-c", CLAIMER, any_db.url, str(run.id),
                          str(run.hyperpartitions[0].id)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    wins = []
    for process in processes:
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err
        wins.append(int(out))
    assert sum(wins) == 150
    assert any_db.get_datarun(run.id).n_started == 150
    assert any_db.count_classifiers(run.id)["running"] == 150  # one row per slot won


def test_four_workers_finish_a_datarun_at_exact_budget(any_db, workdir, demo):
    dataset = registry.add_dataset(any_db, demo("iris"))
    run = registry.add_datarun(any_db, dataset.id, budget=40, methods=["logreg", "dt", "knn"])
    workers = [start_worker(any_db.url, workdir) for _ in range(4)]
    outputs = [finish(w) for w in workers]
    assert not any("database is locked" in out for out in outputs)

    classifiers = any_db.get_classifiers(run.id)
    assert len(classifiers) == 40
    assert {c.status for c in classifiers} <= {"complete", "errored"}
    assert not [c for c in classifiers if (c.error_message or "").startswith("worker lost")]
    complete = [c for c in classifiers if c.status == "complete"]
    assert len(complete) >= 30  # these methods fit iris; an occasional bad draw may error
    models = [c.model_location for c in complete]
    assert len(set(models)) == len(models)
    assert all((workdir / m).is_file() and (workdir / c.metrics_location).is_file()
               for m, c in zip(models, complete, strict=True))
    # more than one worker took part, and the run ended exactly once, complete
    assert len({c.worker_id for c in classifiers}) > 1
    finished = any_db.get_datarun(run.id)
    assert (finished.status, finished.n_started) == ("complete", 40)
    assert finished.end_time >= finished.start_time


def test_a_killed_worker_is_reaped_and_the_run_ends_at_exact_budget(any_db, workdir, demo):
    method_file, gate, env = write_gated_method(workdir)
    sys.path.insert(0, str(workdir))  # registering imports the method's class
    try:
        dataset = registry.add_dataset(any_db, demo("iris"))
        run = registry.add_datarun(any_db, dataset.id, budget=4, methods=[str(method_file)])
    finally:
        sys.path.remove(str(workdir))

    doomed = start_worker(any_db.url, workdir, **env)
    try:
        wait_for(lambda: any_db.get_classifiers(run.id, ["running"]), what="a running fit")
        fit_processes = wait_for(lambda: psutil.Process(doomed.pid).children(recursive=True),
                                 what="the fit's process")
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.communicate()
    # the fit's own process dies with its worker: no orphan keeps computing
    _, alive = psutil.wait_procs(fit_processes, timeout=10)
    assert fit_processes and not alive
    [lost] = any_db.get_classifiers(run.id, ["running"])
    assert lost.pid == doomed.pid
    gate.unlink()

    survivor = start_worker(any_db.url, workdir, ATM_HEARTBEAT_GRACE="2", **env)
    output = finish(survivor)
    assert "reaped classifier(s) of lost workers" in output

    classifiers = any_db.get_classifiers(run.id)
    reaped = any_db.get_classifier(lost.id)
    assert reaped.status == "errored"
    assert reaped.error_message.startswith(f"worker lost: worker {lost.worker_id}")
    ran_to_the_end = [c for c in classifiers if c.id != lost.id]
    assert len(ran_to_the_end) == 4
    assert all(c.status == "complete" for c in ran_to_the_end)
    finished = any_db.get_datarun(run.id)
    assert (finished.status, finished.n_started) == ("complete", 4)
    assert Database(any_db.url).count_classifiers(run.id) == {
        "running": 0, "errored": 1, "complete": 4}
