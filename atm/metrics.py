"""Classification metrics for binary and multiclass problems.

Labels are the integer codes 0..k-1 given by the model's label encoder; for a
binary problem the positive class is the one encoded as 1.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from sklearn import metrics as skm

from atm.constants import BINARY_METRICS, METRICS, MULTICLASS_METRICS
from atm.exceptions import InvalidInputError

# How the datarun's metric name maps onto the metric computed for a problem.
_BINARY_ALIASES = {"f1_micro": "f1", "f1_macro": "f1", "roc_auc_micro": "roc_auc",
                   "roc_auc_macro": "roc_auc"}
_MULTICLASS_ALIASES = {"f1": "f1_macro", "roc_auc": "roc_auc_macro"}


def judgment_metric_for(metric: str, k_classes: int) -> str:
    """The metric actually computed for a datarun's ``metric`` on k classes."""
    if metric not in METRICS:
        raise InvalidInputError(
            f"unknown metric {metric!r}; known metrics are: {', '.join(METRICS)}", field="metric"
        )
    if k_classes <= 2:
        name = _BINARY_ALIASES.get(metric, metric)
        if name not in BINARY_METRICS:
            raise InvalidInputError(
                f"metric {metric!r} is not defined for a binary problem; use one of: "
                f"{', '.join(BINARY_METRICS)}",
                field="metric",
            )
        return name
    name = _MULTICLASS_ALIASES.get(metric, metric)
    if name not in MULTICLASS_METRICS:
        raise InvalidInputError(
            f"metric {metric!r} is not defined for a problem with {k_classes} classes; use one "
            f"of: {', '.join(MULTICLASS_METRICS)}",
            field="metric",
        )
    return name


def _safe(fn: Any, *args: Any, **kwargs: Any) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = float(fn(*args, **kwargs))
        except ValueError:
            return math.nan
    return value


def rank_accuracy(y_true: np.ndarray, y_score: np.ndarray, top_fraction: float = 0.33) -> float:
    """Share of rows whose true class is among the top round(0.33·k) scored classes.

    (The original truncated this to 0 or 1; it is a fraction here.)
    """
    k = y_score.shape[1]
    top = max(1, int(round(top_fraction * k)))
    ranked = np.argsort(-y_score, axis=1)[:, :top]
    return float(np.mean([truth in row for truth, row in zip(y_true, ranked, strict=True)]))


def binary_metrics(y_true: np.ndarray, y_pred: np.ndarray,
                   y_score: np.ndarray | None) -> dict[str, float]:
    result = {
        "accuracy": _safe(skm.accuracy_score, y_true, y_pred),
        "f1": _safe(skm.f1_score, y_true, y_pred, pos_label=1, zero_division=0),
        "mcc": _safe(skm.matthews_corrcoef, y_true, y_pred),
        "cohen_kappa": _safe(skm.cohen_kappa_score, y_true, y_pred),
        "roc_auc": math.nan,
        "ap": math.nan,
    }
    if y_score is not None and np.all(np.isfinite(y_score)):
        positive = y_score[:, 1] if y_score.ndim == 2 else y_score
        result["roc_auc"] = _safe(skm.roc_auc_score, y_true, positive)
        result["ap"] = _safe(skm.average_precision_score, y_true, positive)
    return result


def multiclass_metrics(y_true: np.ndarray, y_pred: np.ndarray,
                       y_score: np.ndarray | None, k_classes: int) -> dict[str, float]:
    result = {
        "accuracy": _safe(skm.accuracy_score, y_true, y_pred),
        "f1_micro": _safe(skm.f1_score, y_true, y_pred, average="micro", zero_division=0),
        "f1_macro": _safe(skm.f1_score, y_true, y_pred, average="macro", zero_division=0),
        "cohen_kappa": _safe(skm.cohen_kappa_score, y_true, y_pred),
        "roc_auc_micro": math.nan,
        "roc_auc_macro": math.nan,
        "rank_accuracy": math.nan,
    }
    if y_score is not None and np.all(np.isfinite(y_score)):
        truth = np.eye(k_classes)[y_true]
        present = truth.sum(axis=0) > 0
        if present.sum() >= 2:
            result["roc_auc_micro"] = _safe(
                skm.roc_auc_score, truth[:, present], y_score[:, present], average="micro"
            )
            result["roc_auc_macro"] = _safe(
                skm.roc_auc_score, truth[:, present], y_score[:, present], average="macro"
            )
        result["rank_accuracy"] = rank_accuracy(y_true, y_score)
    return result


def compute_metrics(y_true: np.ndarray, y_pred: np.ndarray, y_score: np.ndarray | None,
                    k_classes: int) -> dict[str, float]:
    """Every metric of the problem type for one set of predictions."""
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    if k_classes <= 2:
        return binary_metrics(y_true, y_pred, y_score)
    return multiclass_metrics(y_true, y_pred, y_score, k_classes)


def finite_or_none(value: float | None) -> float | None:
    """NaN and infinities become None (JSON null, SQL NULL)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
