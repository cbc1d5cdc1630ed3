"""Creating things: ``POST /api/datasets`` (JSON path or CSV upload) and ``POST /api/run``.

Both reuse :mod:`atm.registry`, so the REST API accepts and rejects exactly
what the CLI does, with the same messages; nothing is written unless every
check passed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from atm import registry
from atm.api.body import check_fields, check_lengths, is_json_request, read_json_object
from atm.api.context import api_context
from atm.api.errors import ApiError, invalid
from atm.api.introspect import resources
from atm.api.paths import (
    fetch_url,
    is_url,
    resolve_data_path,
    save_stream,
    unique_upload_path,
)
from atm.api.query import MAX_INTEGER
from atm.api.serialize import serialize_one
from atm.exceptions import NotFoundError
from atm.methods import METHOD_CODES
from atm.models import Dataset

DATASET_FIELDS: dict[str, tuple[type, bool]] = {
    "train_path": (str, True),
    "class_column": (str, True),
    "test_path": (str, False),
    "name": (str, False),
    "description": (str, False),
}
UPLOAD_FIELDS = ("class_column", "name", "description")
UPLOAD_FILE_FIELD = "file"


def _dataset_response(dataset: Dataset) -> ResponseReturnValue:
    ctx = api_context()
    resource = resources()["datasets"]
    row = ctx.db.get_row(Dataset, dataset.id)
    return jsonify(serialize_one(ctx.db, resource, row)), 201


def _register(values: dict[str, Any], created: list[Path]) -> ResponseReturnValue:
    """Register a dataset; files this request created are removed if that fails."""
    ctx = api_context()
    check_lengths(resources()["datasets"], values)
    try:
        dataset = registry.add_dataset(
            ctx.db, values["train_path"], values.get("test_path"), values["class_column"],
            values.get("name"), values.get("description"), ctx.settings.max_decompressed_mb)
    except BaseException:
        for path in created:
            path.unlink(missing_ok=True)
        raise
    return _dataset_response(dataset)


def _server_file(raw: str, field: str, created: list[Path]) -> str:
    ctx = api_context()
    if is_url(raw) and ctx.settings.allow_urls:
        path = fetch_url(raw, ctx.settings, field)
        created.append(path)
        return str(path)
    return str(resolve_data_path(raw, ctx.settings, field))


def create_dataset_from_json() -> ResponseReturnValue:
    body = read_json_object()
    check_fields(body, DATASET_FIELDS, "a dataset")
    created: list[Path] = []
    try:
        values = dict(body)
        values["train_path"] = _server_file(body["train_path"], "train_path", created)
        if body.get("test_path"):
            values["test_path"] = _server_file(body["test_path"], "test_path", created)
    except BaseException:
        for path in created:
            path.unlink(missing_ok=True)
        raise
    return _register(values, created)


def create_dataset_from_upload() -> ResponseReturnValue:
    ctx = api_context()
    unknown = sorted(set(request.form) - set(UPLOAD_FIELDS))
    extra_files = sorted(set(request.files) - {UPLOAD_FILE_FIELD})
    if unknown or extra_files:
        names = unknown + extra_files
        raise ApiError(400, f"unknown form field(s): {', '.join(names)}; known fields are: "
                            f"{UPLOAD_FILE_FIELD}, {', '.join(UPLOAD_FIELDS)}",
                       "Invalid input", {name: "unknown field" for name in names})
    upload = request.files.get(UPLOAD_FILE_FIELD)
    if upload is None or not upload.filename:
        raise invalid(f"the form needs a {UPLOAD_FILE_FIELD!r} part holding the CSV file",
                      UPLOAD_FILE_FIELD)
    class_column = request.form.get("class_column")
    if not class_column:
        raise ApiError(400, "missing required field(s) for a dataset: class_column",
                       "Invalid input", {"class_column": "required"})
    values: dict[str, Any] = {
        "class_column": class_column,
        "name": request.form.get("name") or Path(upload.filename).stem or None,
        "description": request.form.get("description") or None,
    }
    if any("\x00" in str(v) for v in values.values() if v):
        raise invalid("form fields must not contain NUL characters", "class_column")
    check_lengths(resources()["datasets"], values)
    target = unique_upload_path(ctx.settings, upload.filename)
    save_stream(upload.stream, target, int(ctx.settings.max_upload_mb * 1e6))
    values["train_path"] = str(target)
    return _register(values, [target])


def create_dataset() -> ResponseReturnValue:
    """Register a dataset from a server-side CSV path (JSON) or an uploaded CSV (form)."""
    if request.mimetype == "multipart/form-data":
        return create_dataset_from_upload()
    if is_json_request():
        return create_dataset_from_json()
    raise ApiError(415, "send JSON (Content-Type: application/json) with train_path and "
                        "class_column, or multipart/form-data with a 'file' part "
                        f"(got {request.mimetype or 'no Content-Type'!r})")


def _check_methods(options: dict[str, Any]) -> None:
    """Method JSON files named by a client must be inside the data directories."""
    methods = options.get("methods")
    names = [methods] if isinstance(methods, str) else methods
    if not isinstance(names, list):
        return
    checked = []
    for name in names:
        if isinstance(name, str) and name not in METHOD_CODES and (
                "/" in name or name.lower().endswith(".json")):
            name = str(resolve_data_path(name, api_context().settings, "methods"))
        checked.append(name)
    options["methods"] = checked


def create_datarun() -> ResponseReturnValue:
    """Start a datarun on a dataset with the engine's defaults for every option not given."""
    body = read_json_object()
    if "dataset_id" not in body or body["dataset_id"] is None:
        raise ApiError(400, "missing required field: dataset_id", "Invalid input",
                       {"dataset_id": "required"})
    dataset_id = body.pop("dataset_id")
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, int):
        raise invalid(f"dataset_id must be an integer, got {dataset_id!r}", "dataset_id")
    if not 0 < dataset_id <= MAX_INTEGER:
        raise NotFoundError(f"dataset {dataset_id} does not exist")
    if set(body) - set(registry.DATARUN_OPTIONS):
        registry.check_datarun_options(body, k_classes=2)  # raises, naming the unknown ones
    _check_methods(body)
    datarun = registry.add_datarun(api_context().db, dataset_id, **body)
    return jsonify({"status": 200, "datarun_ids": [datarun.id]})


def build_create_blueprint() -> Blueprint:
    """``POST /api/datasets`` and ``POST /api/run``."""
    blueprint = Blueprint("create", __name__, url_prefix="/api")
    blueprint.add_url_rule("/datasets", "create_dataset", create_dataset, methods=["POST"])
    blueprint.add_url_rule("/run", "create_datarun", create_datarun, methods=["POST"])
    return blueprint
