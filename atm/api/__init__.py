"""The REST API: generated CRUD over the ModelHub tables, actions, Swagger UI at ``/``."""

from atm.api.app import create_app

__all__ = ["create_app"]
