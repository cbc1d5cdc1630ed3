"""A database outage in the middle of a fit: the worker waits it out and records the
finished classifier once the database is back: not lost, not recorded twice. Meanwhile the
REST API answers 503 with Retry-After, and 200 again by itself once the database is back.

The first test closes a PostgreSQL database on the server itself; the others put a TCP
proxy (``outage_support``) between ATM and the server and cut it, on MySQL and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from load_support import fast_env, free_port, spawn, stop, wait_http
from outage_support import database_proxy
from process_support import ATM_EXE, wait_for, write_gated_method
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from atm import registry


def gated_datarun(db, workdir, demo, budget):
    """A datarun of a method whose fit waits for a gate file; (run, gate, worker env)."""
    method, gate, gate_env = write_gated_method(workdir)
    sys.path.insert(0, str(workdir))
    try:
        dataset = registry.add_dataset(db, demo("iris"))
        run = registry.add_datarun(db, dataset.id, budget=budget, methods=[str(method)])
    finally:
        sys.path.remove(str(workdir))
    env = dict(os.environ, **gate_env, ATM_HEARTBEAT_INTERVAL="0.5", ATM_POLL_INTERVAL="0.5")
    return run, gate, env


@contextlib.contextmanager
def worker_behind_a_proxy(db, workdir, env):
    """An `atm worker` reaching the server through a proxy the test can cut; yields
    (proxy, worker process, log path) and kills the worker if it is still there."""
    log = workdir / "worker.log"
    with database_proxy(db.url) as proxy, log.open("w") as out:
        worker = subprocess.Popen([ATM_EXE, "worker", "--sql-url", proxy.url], cwd=workdir,
                                  env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proxy, worker, log
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


@pytest.mark.slow
def test_a_result_finished_during_an_outage_is_recorded_once_the_database_is_back(
        any_db, workdir, demo):
    if any_db.backend != "postgresql":
        pytest.skip("the outage is made by closing a PostgreSQL database to connections")
    run, gate, env = gated_datarun(any_db, workdir, demo, budget=1)
    worker = subprocess.Popen([ATM_EXE, "worker", "--sql-url", any_db.url], cwd=workdir,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    name = make_url(any_db.url).database
    admin = create_engine(make_url(any_db.url).set(database="postgres"),
                          isolation_level="AUTOCOMMIT")
    try:
        wait_for(lambda: any_db.get_classifiers(run.id, ["running"]), what="a running fit")
        any_db.dispose()
        with admin.connect() as conn:  # the outage: no connection in, every one dropped
            conn.execute(text(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :name"), {"name": name})
        gate.unlink()  # the fit finishes while the database is away
        time.sleep(15)
        assert worker.poll() is None, "the worker gave up during the outage"
        with admin.connect() as conn:
            conn.execute(text(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        output, _ = worker.communicate(timeout=120)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
        with admin.connect() as conn:
            conn.execute(text(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        admin.dispose()
    assert worker.returncode == 0, output[-3000:]
    assert "cannot record classifier" in output
    [classifier] = any_db.get_classifiers(run.id)
    assert classifier.status == "complete" and classifier.cv_judgment_metric is not None
    assert (workdir / classifier.model_location).is_file()
    assert any_db.get_datarun(run.id).status == "complete"


# -- the same outage on MySQL and PostgreSQL, made by a proxy in front of the server ------

SERVERS = ["mysql", "postgresql"]


def read_log(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.mark.slow
@pytest.mark.parametrize("db_url", SERVERS, indirect=True)
def test_a_worker_waits_out_a_dropped_server_and_records_its_result_once(
        any_db, workdir, demo):
    run, gate, env = gated_datarun(any_db, workdir, demo, budget=2)
    with worker_behind_a_proxy(any_db, workdir, env) as (proxy, worker, log):
        [fit] = wait_for(lambda: any_db.get_classifiers(run.id, ["running"]),
                         what="a running fit")
        proxy.cut()  # every connection of the worker reset, every new one refused
        cut_at = time.monotonic()
        gate.unlink()  # the fit finishes while the server is away
        wait_for(lambda: read_log(log).count("cannot record classifier") >= 2,
                 timeout=60, what="the worker retrying to record its result")
        assert worker.poll() is None, "the worker gave up during the outage"
        assert any_db.get_classifier(fit.id).status == "running"
        proxy.restore()
        outage = time.monotonic() - cut_at
        worker.wait(timeout=120)
    output = read_log(log)
    print(f"\n[outage] {any_db.backend}: {outage:.1f} s outage, "
          f"{output.count('cannot record classifier')} attempts to record during it, "
          f"{proxy.connections_reset} connections reset")
    assert worker.returncode == 0, output[-3000:]
    classifiers = any_db.get_classifiers(run.id)
    assert [c.status for c in classifiers] == ["complete", "complete"], output[-3000:]
    assert classifiers[0].id == fit.id  # recorded in place: not lost, not inserted twice
    for classifier in classifiers:
        assert classifier.cv_judgment_metric is not None
        assert (workdir / classifier.model_location).is_file()
    finished = any_db.get_datarun(run.id)
    assert finished.status == "complete" and finished.n_started == 2  # the budget exact


# What a client waits for one answer at most: an API that hangs on a dead database fails.
CLIENT_TIMEOUT = 30


def call(method: str, url: str, **kwargs) -> requests.Response:
    return requests.request(method, url, timeout=CLIENT_TIMEOUT, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("db_url", SERVERS, indirect=True)
def test_the_api_answers_503_while_the_server_is_away_and_200_once_it_is_back(
        any_db, workdir, demo):
    dataset = registry.add_dataset(any_db, demo("iris"))
    run = registry.add_datarun(any_db, dataset.id, budget=1, methods=["dt"])
    trained = subprocess.run([ATM_EXE, "worker", "--sql-url", any_db.url], cwd=workdir,
                             env=fast_env(), capture_output=True, text=True, timeout=120)
    assert trained.returncode == 0, trained.stdout[-3000:]
    [classifier_id] = [c.id for c in any_db.get_classifiers(run.id)]
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    requests_to_make = [("GET", f"{api}/dataruns", {}),
                        ("GET", f"{api}/classifiers/{classifier_id}", {}),
                        ("POST", f"{api}/run", {"json": {"dataset_id": dataset.id, "budget": 1}})]
    reads = requests_to_make[:2]
    with database_proxy(any_db.url) as proxy:
        server = spawn([ATM_EXE, "server", "--port", str(port), "--sql-url", proxy.url],
                       workdir / "server.log", workdir, fast_env())
        try:
            wait_http(f"{api}/dataruns")
            for method, url, kwargs in reads:
                assert call(method, url, **kwargs).status_code == 200

            proxy.cut()  # pooled connections reset, new ones refused
            cut_at, seconds = time.monotonic(), []
            for _round in range(2):
                for method, url, kwargs in requests_to_make:
                    began = time.monotonic()
                    response = call(method, url, **kwargs)
                    seconds.append(time.monotonic() - began)
                    assert response.status_code == 503, (method, url, response.text)
                    assert response.headers["Content-Type"] == "application/problem+json"
                    assert int(response.headers["Retry-After"]) > 0
                    body = response.json()
                    assert body["status"] == 503 and "database" in body["detail"], body
            assert server.poll() is None

            proxy.restore()  # the same server, not restarted, answers again by itself
            outage = time.monotonic() - cut_at
            for method, url, kwargs in requests_to_make:
                response = call(method, url, **kwargs)
                assert response.status_code == 200, (method, url, response.text)
            assert server.poll() is None
        finally:
            stop(server)
    print(f"\n[outage] {any_db.backend}: {outage:.1f} s outage, {len(seconds)} answers 503 "
          f"in {min(seconds):.1f}-{max(seconds):.1f} s each, {proxy.connections_reset} "
          "connections reset; the first requests after it answered 200")
    # The POSTs made during the outage wrote nothing; the one after it wrote one run.
    assert [r.id for r in any_db.get_dataruns()] == [run.id, response.json()["datarun_ids"][0]]
    assert "Traceback" not in (workdir / "server.log").read_text(errors="replace")


def completes_a_classifier(data: bytes) -> bool:
    """The UPDATE of :meth:`Database.complete_classifier`, as the driver sends it."""
    return b"UPDATE classifiers SET" in data and b"'complete'" in data


@pytest.mark.slow
@pytest.mark.parametrize("db_url", SERVERS, indirect=True)
def test_a_result_whose_commit_answer_was_lost_is_kept_not_dropped(any_db, workdir, demo):
    run, gate, env = gated_datarun(any_db, workdir, demo, budget=1)
    with worker_behind_a_proxy(any_db, workdir, env) as (proxy, worker, log):
        [fit] = wait_for(lambda: any_db.get_classifiers(run.id, ["running"]),
                         what="a running fit")
        proxy.lose_commit_reply(completes_a_classifier)
        gate.unlink()
        wait_for(proxy.commit_lost.is_set, timeout=60, what="the recording commit")
        # Recorded on the server, but the worker cannot know: its connection died.
        assert any_db.get_classifier(fit.id).status == "complete"
        wait_for(lambda: "cannot record classifier" in read_log(log), timeout=60,
                 what="the worker retrying to record its result")
        proxy.restore()
        worker.wait(timeout=120)
    output = read_log(log)
    assert worker.returncode == 0, output[-3000:]
    assert "result is dropped" not in output, output[-3000:]
    [classifier] = any_db.get_classifiers(run.id)
    assert classifier.id == fit.id and classifier.status == "complete"
    assert (workdir / classifier.model_location).is_file()  # the result is not lost
    assert (workdir / classifier.metrics_location).is_file()
    finished = any_db.get_datarun(run.id)
    assert finished.status == "complete" and finished.n_started == 1
