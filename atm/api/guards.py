"""Bearer-token protection and CORS headers.

With ``api_token`` set, every request that changes something needs
``Authorization: Bearer <token>`` (reads too with ``protect_reads``). CORS
answers only configured origins; ``*`` is never combined with credentials.
"""

from __future__ import annotations

import hmac

from flask import Flask, Response, request

from atm.api.errors import ApiError
from atm.config import Settings

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
API_PREFIX = "/api"
ALLOWED_HEADERS = "Content-Type, Authorization"
ALLOWED_METHODS = "GET, POST, OPTIONS"
PREFLIGHT_MAX_AGE = "600"


def _needs_token(settings: Settings) -> bool:
    if not settings.api_token or request.method == "OPTIONS":
        return False
    if request.method not in SAFE_METHODS:
        return True
    return settings.protect_reads and request.path.startswith(API_PREFIX)


def check_token(settings: Settings) -> None:
    """401 unless the request carries the configured bearer token (where one is needed)."""
    if not _needs_token(settings):
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    expected = settings.api_token or ""
    if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), expected.encode()):
        raise ApiError(401, "this server needs an API token: send Authorization: Bearer <token>",
                       headers={"WWW-Authenticate": 'Bearer realm="atm"'})


def add_cors_headers(settings: Settings, response: Response) -> Response:
    """CORS headers for configured origins only."""
    origin = request.headers.get("Origin")
    origins = settings.cors_origins
    if not origin or not origins:
        return response
    if "*" in origins:
        response.headers["Access-Control-Allow-Origin"] = "*"
    elif origin in origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.vary.add("Origin")
    else:
        return response
    response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
    response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
    if request.method == "OPTIONS":
        response.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
    return response


def register_guards(app: Flask, settings: Settings) -> None:
    """Install the token check and the CORS headers on ``app``."""

    @app.before_request
    def require_token() -> None:
        check_token(settings)

    @app.after_request
    def cors(response: Response) -> Response:
        return add_cors_headers(settings, response)
