"""Shared fixtures: a fresh database per test on every configured backend, demo files,
and a temporary working directory.

PostgreSQL and MySQL cases run when ``ATM_TEST_POSTGRES_URL`` / ``ATM_TEST_MYSQL_URL``
are set (``.ci/run`` sets them) and are skipped otherwise.
"""

from __future__ import annotations

import os

# One BLAS thread per process: tests start several worker processes on 2 cores.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import shutil  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from atm.database import Database  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEMOS = ROOT / "atm" / "demos"
BACKENDS = ("sqlite", "postgresql", "mysql")
SERVER_URL_ENV = {"postgresql": "ATM_TEST_POSTGRES_URL", "mysql": "ATM_TEST_MYSQL_URL"}
from process_support import ATM_EXE  # noqa: E402,F401  (re-exported for the CLI tests)


def _server_database(backend: str) -> tuple[str, callable]:
    """Create an empty database on a server backend; return its URL and a dropper."""
    base = os.environ.get(SERVER_URL_ENV[backend])
    if not base:
        pytest.skip(f"{SERVER_URL_ENV[backend]} is not set")
    name = f"atm_test_{uuid.uuid4().hex[:12]}"
    url = make_url(base)
    if backend == "mysql" and url.drivername == "mysql":
        url = url.set(drivername="mysql+pymysql")
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))

    def drop() -> None:
        with admin.connect() as conn:
            if backend == "postgresql":
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()

    return url.set(database=name).render_as_string(hide_password=False), drop


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A temporary working directory (relative paths of ATM land here)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'atm.db'}"


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    """A URL of a new, empty database, once per backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'atm.db'}"
        return
    url, drop = _server_database(request.param)
    yield url
    drop()


@pytest.fixture
def db(sqlite_url):
    database = Database(sqlite_url)
    yield database
    database.dispose()


@pytest.fixture
def any_db(db_url):
    """A Database on every configured backend."""
    database = Database(db_url)
    yield database
    database.dispose()


@pytest.fixture
def demo(workdir):
    """Copy a bundled demo CSV into the working directory and return its relative path."""
    def copy(name: str = "iris") -> str:
        target = workdir / f"{name}.csv"
        shutil.copyfile(DEMOS / f"{name}.csv", target)
        return target.name

    return copy


@pytest.fixture
def app(db, workdir):
    """The REST API over a fresh SQLite database, data and uploads inside ``workdir``."""
    from api_support import api_settings

    from atm.api import create_app

    return create_app(api_settings(db, workdir), db)


@pytest.fixture
def client(app):
    return app.test_client()
