"""The settings and database of the running app, reachable from any view."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask import current_app

from atm.config import Settings
from atm.database import Database

EXTENSION_KEY = "atm"


@dataclass(frozen=True)
class ApiContext:
    """What every view needs: the settings and the ModelHub."""

    settings: Settings
    db: Database
    # datarun id -> progress figures of a complete datarun: they never change again.
    final_progress: dict[int, dict[str, Any]] = field(default_factory=dict)


def api_context() -> ApiContext:
    """The :class:`ApiContext` of the current app."""
    return current_app.extensions[EXTENSION_KEY]
