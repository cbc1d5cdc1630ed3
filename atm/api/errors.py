"""Every error as ``application/problem+json`` (RFC 9457): never HTML, never a traceback."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, current_app, json, request
from werkzeug.exceptions import HTTPException

from atm.exceptions import (
    ATMError,
    ConflictError,
    DatabaseUnavailableError,
    InvalidInputError,
    NotFoundError,
    StorageError,
)

LOGGER = logging.getLogger(__name__)

PROBLEM_MIMETYPE = "application/problem+json"


class ApiError(Exception):
    """An error with its HTTP status, raised by the API's own checks."""

    def __init__(self, status: int, detail: str, title: str | None = None,
                 fields: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title
        self.fields = fields
        self.headers = headers or {}


def invalid(detail: str, field: str | None = None) -> ApiError:
    """A 400 naming the offending field."""
    return ApiError(400, detail, "Invalid input", {field: detail} if field else None)


# What a client is told to wait while the database is unavailable (workers retry by then).
RETRY_AFTER_SECONDS = 5


def problem(status: int, detail: str, title: str | None = None,
            fields: dict[str, str] | None = None,
            headers: dict[str, str] | None = None) -> Response:
    """A problem+json response."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or phrase,
        "status": status,
        "detail": detail,
    }
    if fields:
        body["fields"] = fields
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_MIMETYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _from_atm_error(error: ATMError) -> Response:
    detail = str(error)
    if isinstance(error, InvalidInputError):
        field = error.field or "body"
        return problem(400, detail, "Invalid input", {field: detail})
    if isinstance(error, NotFoundError):
        return problem(404, detail)
    if isinstance(error, ConflictError):
        return problem(409, detail)
    if isinstance(error, DatabaseUnavailableError):
        LOGGER.error("database unavailable: %s", error)
        return problem(503, "the database is unavailable; try again later",
                       headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    if isinstance(error, StorageError):
        LOGGER.error("storage error: %s", error)
        return problem(500, detail)
    LOGGER.exception("unexpected ATM error")
    return problem(500, "internal error; see the server log")


def register_error_handlers(app: Flask) -> None:
    """Render every error of ``app`` as problem+json."""

    @app.errorhandler(ApiError)
    def on_api_error(error: ApiError) -> Response:
        return problem(error.status, error.detail, error.title, error.fields, error.headers)

    @app.errorhandler(ATMError)
    def on_atm_error(error: ATMError) -> Response:
        return _from_atm_error(error)

    @app.errorhandler(HTTPException)
    def on_http_error(error: HTTPException) -> Response:
        status = error.code or 500
        headers = {}
        if status == 405 and error.valid_methods:  # type: ignore[attr-defined]
            headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
        detail = error.description or ""
        if status == 405 and error.valid_methods:  # type: ignore[attr-defined]
            detail = (f"{request.method} is not allowed on {request.path}; allowed: "
                      f"{', '.join(error.valid_methods)}")  # type: ignore[attr-defined]
        if status == 404:
            detail = f"no resource at {request.path}; see / for the API documentation"
        if status == 413:
            limit = current_app.config.get("MAX_CONTENT_LENGTH")
            if limit:
                detail = (f"the request is larger than the upload limit of {limit / 1e6:g} MB "
                          "(setting max_upload_mb)")
        return problem(status, detail, headers=headers)

    @app.errorhandler(Exception)
    def on_unexpected(error: Exception) -> Response:
        LOGGER.exception("unhandled error in the REST API")
        return problem(500, "internal error; see the server log")
