"""Actions beyond the original API: stop a datarun, download a model, predict.

The model files read here were written by ATM's own workers on the server;
nothing a client sends is ever unpickled.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import pandas as pd
from flask import Blueprint, jsonify, request, send_file
from flask.typing import ResponseReturnValue

from atm import constants as C
from atm.api.body import is_json_request, read_json_object
from atm.api.context import api_context
from atm.api.errors import ApiError, invalid
from atm.api.introspect import resources
from atm.api.query import MAX_INTEGER
from atm.api.serialize import plain_value, serialize_one
from atm.exceptions import ConflictError, InvalidInputError, NotFoundError
from atm.model import Model
from atm.models import Classifier, Datarun

# Routes that share the shape of a relation URL (for a clear 405 on a wrong method).
ACTION_METHODS: dict[tuple[str, str], list[str]] = {
    ("dataruns", "stop"): ["POST"],
    ("classifiers", "model"): ["GET"],
    ("classifiers", "predict"): ["POST"],
}
CSV_TYPES = ("text/csv", "application/csv", "text/plain")
MAX_PREDICT_ROWS = 100_000


def _existing_id(what: str, row_id: int) -> int:
    if row_id > MAX_INTEGER:
        raise NotFoundError(f"{what} {row_id} does not exist")
    return row_id


def stop_datarun(datarun_id: int) -> ResponseReturnValue:
    """No new classifiers start; running ones finish; the status becomes ``stopped``."""
    db = api_context().db
    _existing_id("datarun", datarun_id)
    if not db.stop_datarun(datarun_id):
        run = db.get_datarun(datarun_id)
        raise ConflictError(f"datarun {datarun_id} is already {run.status}; only pending or "
                            "running dataruns can be stopped")
    row = db.get_row(Datarun, datarun_id)
    return jsonify(serialize_one(db, resources()["dataruns"], row))


def _model_file(classifier_id: int) -> tuple[Classifier, Path]:
    db = api_context().db
    classifier = db.get_classifier(_existing_id("classifier", classifier_id))
    if classifier.status != C.CLASSIFIER_COMPLETE or not classifier.model_location:
        raise NotFoundError(f"classifier {classifier_id} has no model file (status "
                            f"{classifier.status}); only complete classifiers have one")
    path = Path(classifier.model_location).resolve()
    if not path.is_file():
        raise NotFoundError(f"the model file of classifier {classifier_id} "
                            f"({classifier.model_location!r}) is missing on the server")
    return classifier, path


def download_model(classifier_id: int) -> ResponseReturnValue:
    """The classifier's model file (a pickle of :class:`atm.model.Model`) as a download."""
    _, path = _model_file(classifier_id)
    return send_file(path, mimetype="application/octet-stream", as_attachment=True,
                     download_name=path.name)


def _rows_from_json() -> pd.DataFrame:
    body = read_json_object()
    unknown = sorted(set(body) - {"rows"})
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(unknown)}; send {{\"rows\": "
                            "[{\"feature\": value, ...}, ...]}", "Invalid input",
                       {name: "unknown field" for name in unknown})
    rows = body.get("rows")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise invalid('rows must be a non-empty list of objects like {"feature": value}', "rows")
    if len(rows) > MAX_PREDICT_ROWS:
        raise invalid(f"at most {MAX_PREDICT_ROWS} rows per request", "rows")
    for index, row in enumerate(rows, 1):
        for name, value in row.items():
            if isinstance(value, (dict, list)):
                raise invalid(f"row {index}: value of {name!r} must be a number, a string "
                              "or null", "rows")
    return pd.DataFrame.from_records(rows)


def _rows_from_csv() -> pd.DataFrame:
    text = request.get_data(cache=True)
    try:
        frame = pd.read_csv(io.BytesIO(text), encoding="utf-8-sig")
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise invalid(f"the CSV body is not readable: {str(e).splitlines()[0] if str(e) else e}",
                      "rows") from None
    if frame.empty:
        raise invalid("the CSV body has no data rows", "rows")
    return frame


def _check_columns(frame: pd.DataFrame, model: Model, class_column: str) -> pd.DataFrame:
    names = [str(c) for c in frame.columns]
    expected = model.feature_names
    missing = [c for c in expected if c not in names]
    extra = [c for c in names if c not in expected and c != class_column]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s): {', '.join(missing)}")
        if extra:
            parts.append(f"unknown column(s): {', '.join(extra)}")
        raise invalid(f"{'; '.join(parts)}; the model expects: {', '.join(expected)}", "rows")
    frame.columns = names
    return frame[expected]


def _label(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    return plain_value(value)


def predict(classifier_id: int) -> ResponseReturnValue:
    """Predict the original labels (and class probabilities) of rows with a classifier."""
    classifier, path = _model_file(classifier_id)
    mimetype = request.mimetype or ""
    if is_json_request():
        frame = _rows_from_json()
    elif mimetype in CSV_TYPES:
        frame = _rows_from_csv()
    else:
        raise ApiError(415, 'send {"rows": [...]} as application/json or a CSV body as '
                            f"text/csv (got {mimetype or 'no Content-Type'!r})")
    model = Model.load(path)
    features = _check_columns(frame, model, classifier.datarun.dataset.class_column)
    try:
        labels = model.predict(features)
        probabilities = model.predict_proba(features)
    except InvalidInputError:
        raise
    except (ValueError, TypeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise invalid(f"the rows do not fit the model: {first}", "rows") from None
    result: dict[str, Any] = {"classifier_id": classifier_id,
                              "predictions": [_label(v) for v in labels]}
    if probabilities is not None:
        classes = [_label(c) for c in probabilities.columns]
        result["classes"] = classes
        result["probabilities"] = [
            {str(c): (float(p) if math.isfinite(p) else None)
             for c, p in zip(classes, row, strict=True)}
            for row in probabilities.to_numpy(dtype=float)
        ]
    return jsonify(result)


def build_actions_blueprint() -> Blueprint:
    """Stop, model download and predict."""
    blueprint = Blueprint("actions", __name__, url_prefix="/api")
    blueprint.add_url_rule("/dataruns/<int:datarun_id>/stop", "stop_datarun", stop_datarun,
                           methods=["POST"])
    blueprint.add_url_rule("/classifiers/<int:classifier_id>/model", "download_model",
                           download_model, methods=["GET"])
    blueprint.add_url_rule("/classifiers/<int:classifier_id>/predict", "predict", predict,
                           methods=["POST"])
    return blueprint
