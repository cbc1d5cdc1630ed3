"""The Swagger UI at ``/`` loads in headless Chromium (served by waitress) and shows
every endpoint. Skipped where no Chromium is installed (Debian: ``chromium``)."""

from __future__ import annotations

import shutil
import subprocess
import threading

import pytest
import waitress
from api_support import api_settings

from atm.api import create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


@pytest.fixture
def served(db, workdir):
    """The API served by waitress on a free local port, in a thread."""
    app = create_app(api_settings(db, workdir), db)
    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}", app
    server.close()
    thread.join(timeout=10)


def test_swagger_ui_shows_every_endpoint(served, tmp_path):
    url, app = served
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000", "--dump-dom", f"{url}/",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    dom = result.stdout
    assert "swagger-ui" in dom, result.stderr[-2000:]
    assert "ATM REST API" in dom
    spec = app.test_client().get("/apispec.json").get_json()
    for path in spec["paths"]:
        assert f'data-path="{path}"' in dom, path
