"""The Flask application factory of the REST API (servable by any WSGI server)."""

from __future__ import annotations

from flask import Flask

from atm.api.actions import build_actions_blueprint
from atm.api.context import EXTENSION_KEY, ApiContext
from atm.api.create import build_create_blueprint
from atm.api.crud import build_crud_blueprint
from atm.api.errors import register_error_handlers
from atm.api.guards import register_guards
from atm.api.spec import init_swagger
from atm.config import Settings, load_settings
from atm.database import Database

API_MAX_ATTEMPTS = 3


def create_app(settings: Settings | None = None, db: Database | None = None) -> Flask:
    """A new app serving the ModelHub of ``db`` (default: ``settings.sql_url``).

    ``settings`` default to :func:`atm.config.load_settings` (file < ``ATM_*``
    environment). Nothing happens at import time; every call builds a fresh app.
    """
    settings = settings or load_settings()
    # A request retries a lost connection a few times (well under a second of back-off),
    # then answers 503 with Retry-After rather than keep its client waiting.
    db = db or Database(settings.sql_url, max_attempts=API_MAX_ATTEMPTS)
    app = Flask("atm.api")
    app.config["MAX_CONTENT_LENGTH"] = int(settings.max_upload_mb * 1e6)
    app.config["MAX_FORM_MEMORY_SIZE"] = int(settings.max_upload_mb * 1e6)
    app.json.sort_keys = True  # type: ignore[attr-defined]
    app.extensions[EXTENSION_KEY] = ApiContext(settings, db)
    register_error_handlers(app)
    register_guards(app, settings)
    app.register_blueprint(build_crud_blueprint())
    app.register_blueprint(build_create_blueprint())
    app.register_blueprint(build_actions_blueprint())
    init_swagger(app)
    return app
