"""A database outage in the middle of a fit: the worker waits it out and records the
finished classifier once the database is back: not lost, not recorded twice."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from process_support import ATM_EXE, wait_for, write_gated_method
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from atm import registry


@pytest.mark.slow
def test_a_result_finished_during_an_outage_is_recorded_once_the_database_is_back(
        any_db, workdir, demo):
    if any_db.backend != "postgresql":
        pytest.skip("the outage is made by closing a PostgreSQL database to connections")
    method, gate, gate_env = write_gated_method(workdir)
    sys.path.insert(0, str(workdir))
    try:
        dataset = registry.add_dataset(any_db, demo("iris"))
        run = registry.add_datarun(any_db, dataset.id, budget=1, methods=[str(method)])
    finally:
        sys.path.remove(str(workdir))

    env = dict(os.environ, **gate_env,
               ATM_HEARTBEAT_INTERVAL="0.5", ATM_POLL_INTERVAL="0.5")
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
