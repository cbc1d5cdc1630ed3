"""Helpers shared by the REST API tests (not a test module)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from atm.config import Settings
from atm.database import Database
from atm.models import TABLES
from atm.worker import Worker, WorkerOptions

DEMOS = Path(__file__).resolve().parent.parent / "atm" / "demos"
PROBLEM = "application/problem+json"


def api_settings(db: Database, workdir: Path, **changes: Any) -> Settings:
    """Settings of a test server: data and uploads inside ``workdir``."""
    values: dict[str, Any] = {
        "sql_url": db.url,
        "data_dirs": [str(workdir)],
        "upload_dir": str(workdir / "uploads"),
        "models_dir": str(workdir / "models"),
        "metrics_dir": str(workdir / "metrics"),
    }
    values.update(changes)
    return Settings(**values)


def copy_demo(workdir: Path, name: str = "iris") -> str:
    """Copy a bundled demo CSV into ``workdir``; return its relative name."""
    shutil.copyfile(DEMOS / f"{name}.csv", workdir / f"{name}.csv")
    return f"{name}.csv"


def snapshot(db: Database, workdir: Path | None = None) -> dict[str, Any]:
    """Row counts of every table (and the uploaded files), to prove nothing was written."""
    state: dict[str, Any] = {table: db.count_rows(model) for table, model in TABLES.items()}
    if workdir is not None:
        uploads = workdir / "uploads"
        state["uploads"] = sorted(p.name for p in uploads.iterdir()) if uploads.exists() else []
    return state


def assert_problem(response: Any, status: int, *fragments: str,
                   field: str | None = None) -> dict[str, Any]:
    """The response is a problem+json of ``status`` whose detail holds every fragment."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert set(body) >= {"type", "title", "status", "detail"}
    assert body["status"] == status
    for fragment in fragments:
        assert fragment in body["detail"], body["detail"]
    if field is not None:
        assert field in body.get("fields", {}), body
    return body


def train(db: Database, workdir: Path, max_classifiers: int) -> int:
    """Run a real worker in this process; returns how many classifiers it trained."""
    options = WorkerOptions(models_dir=str(workdir / "models"),
                            metrics_dir=str(workdir / "metrics"))
    return Worker(db, options).run(max_classifiers=max_classifiers)
