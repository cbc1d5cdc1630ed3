"""One classifier: its pipeline, its cross-validated and test scores, and predict.

A :class:`Model` is what a worker trains and what ``atm.Model.load(path)``
gives back: it predicts the *original* labels of the dataset.
"""

from __future__ import annotations

import os
import pickle
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import LabelEncoder, MinMaxScaler, OneHotEncoder, StandardScaler

from atm.constants import N_FOLDS, TEST_FRACTION
from atm.data import is_numeric
from atm.exceptions import InvalidInputError
from atm.methods import estimator_for, load_method
from atm.metrics import compute_metrics, finite_or_none


def holdout_split(features: pd.DataFrame, labels: pd.Series, seed: int,
                  fraction: float = TEST_FRACTION) -> tuple[pd.DataFrame, pd.DataFrame,
                                                            pd.Series, pd.Series]:
    """The fixed stratified hold-out of a datarun: same seed, same rows."""
    return train_test_split(features, labels, test_size=fraction, random_state=seed,
                            stratify=labels)


def _preprocessor(features: pd.DataFrame) -> ColumnTransformer:
    numeric = [c for c in features.columns if is_numeric(features[c])]
    strings = [c for c in features.columns if c not in numeric]
    parts = []
    if numeric:
        parts.append(("numbers", SimpleImputer(strategy="median", keep_empty_features=True),
                      numeric))
    if strings:
        parts.append((
            "strings",
            make_pipeline(
                SimpleImputer(strategy="most_frequent", keep_empty_features=True),
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
            ),
            strings,
        ))
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)


def _as_strings(features: pd.DataFrame) -> pd.DataFrame:
    """String columns as str objects (mixed types would break the encoders)."""
    out = features.copy()
    for name in out.columns:
        if not is_numeric(out[name]):
            out[name] = out[name].map(lambda v: v if pd.isna(v) else str(v)).astype(object)
    return out


@dataclass
class Model:
    """A classifier of one method with fixed hyperparameters."""

    method: str
    params: dict[str, Any]
    judgment_metric: str
    random_state: int = 0
    pipeline: Pipeline | None = None
    encoder: LabelEncoder | None = None
    feature_names: list[str] = field(default_factory=list)
    cv_scores: list[dict[str, float]] = field(default_factory=list)
    test_scores: dict[str, float] = field(default_factory=dict)
    # The label values as the CSV had them (e.g. ints), behind their string codes.
    original_labels: dict[str, Any] = field(default_factory=dict)

    # -- building -------------------------------------------------------------

    def _build_pipeline(self, features: pd.DataFrame) -> Pipeline:
        estimator, switches = estimator_for(load_method(self.method), self.params,
                                            seed=self.random_state)
        steps: list[tuple[str, Any]] = [("encode", _preprocessor(features))]
        if switches.get("_scale"):
            steps.append(("scale", StandardScaler()))
        elif switches.get("_scale_minmax"):
            steps.append(("scale", MinMaxScaler(clip=True)))
        steps.append(("estimator", estimator))
        return Pipeline(steps)

    def _scores(self, pipeline: Pipeline, features: pd.DataFrame) -> np.ndarray | None:
        k = len(self.encoder.classes_) if self.encoder is not None else 2
        if hasattr(pipeline, "predict_proba"):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return np.asarray(pipeline.predict_proba(features), dtype=float)
            except (AttributeError, NotImplementedError):
                pass
        if hasattr(pipeline, "decision_function"):
            scores = np.asarray(pipeline.decision_function(features), dtype=float)
            if scores.ndim == 1:
                scores = np.column_stack([-scores, scores])
            return scores if scores.shape[1] == k else None
        return None

    def _fit_score(self, x_fit: pd.DataFrame, y_fit: np.ndarray, x_eval: pd.DataFrame,
                   y_eval: np.ndarray) -> tuple[Pipeline, dict[str, float]]:
        pipeline = self._build_pipeline(x_fit)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipeline.fit(x_fit, y_fit)
            predicted = pipeline.predict(x_eval)
        scores = self._scores(pipeline, x_eval)
        k = len(self.encoder.classes_)
        return pipeline, compute_metrics(y_eval, predicted, scores, k)

    # -- training -------------------------------------------------------------

    def train_test(self, x_train: pd.DataFrame, y_train: pd.Series,
                   x_test: pd.DataFrame, y_test: pd.Series) -> dict[str, Any]:
        """Cross-validate on the training part, then fit it all and score the test part.

        Returns ``{"cv": mean, "cv_stdev": std, "test": score, "cv_folds": [...],
        "test_metrics": {...}}`` for the judgment metric.
        """
        self.feature_names = [str(c) for c in x_train.columns]
        x_train = _as_strings(x_train)
        x_test = _as_strings(x_test[x_train.columns])
        all_labels = pd.concat([y_train, y_test])
        self.original_labels = {str(v): _plain(v) for v in pd.unique(all_labels)}
        self.encoder = LabelEncoder().fit(all_labels.astype(str))
        y_fit = self.encoder.transform(y_train.astype(str))
        y_eval = self.encoder.transform(y_test.astype(str))

        folds = StratifiedKFold(n_splits=N_FOLDS, shuffle=True, random_state=self.random_state)
        self.cv_scores = []
        for fit_rows, eval_rows in folds.split(x_train, y_fit):
            _, fold_metrics = self._fit_score(
                x_train.iloc[fit_rows], y_fit[fit_rows], x_train.iloc[eval_rows], y_fit[eval_rows]
            )
            self.cv_scores.append(fold_metrics)
        self.pipeline, self.test_scores = self._fit_score(x_train, y_fit, x_test, y_eval)

        fold_values = np.array([m[self.judgment_metric] for m in self.cv_scores], dtype=float)
        cv_mean = float(np.mean(fold_values)) if np.all(np.isfinite(fold_values)) else None
        cv_std = float(np.std(fold_values)) if cv_mean is not None else None
        return {
            "cv": cv_mean,
            "cv_stdev": cv_std,
            "test": finite_or_none(self.test_scores[self.judgment_metric]),
        }

    # -- using ----------------------------------------------------------------

    def _check_columns(self, frame: pd.DataFrame) -> pd.DataFrame:
        if self.pipeline is None:
            raise InvalidInputError("this model has not been trained")
        names = [str(c) for c in frame.columns]
        missing = [c for c in self.feature_names if c not in names]
        if missing:
            raise InvalidInputError(
                f"missing feature column(s): {', '.join(missing)}; the model expects: "
                f"{', '.join(self.feature_names)}",
                field="rows",
            )
        frame = frame.copy()
        frame.columns = names
        return _as_strings(frame[self.feature_names])

    def predict(self, frame: pd.DataFrame) -> pd.Series:
        """Predicted labels, in the dataset's original form."""
        rows = self._check_columns(frame)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            codes = self.pipeline.predict(rows)
        return pd.Series(self._decode(codes), index=frame.index)

    def predict_proba(self, frame: pd.DataFrame) -> pd.DataFrame | None:
        """Class probabilities (columns are the original labels), where the model has them."""
        rows = self._check_columns(frame)
        if not hasattr(self.pipeline, "predict_proba"):
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                matrix = self.pipeline.predict_proba(rows)
        except (AttributeError, NotImplementedError):
            return None
        return pd.DataFrame(matrix, columns=self._decode(np.arange(matrix.shape[1])),
                            index=frame.index)

    def _decode(self, codes: np.ndarray) -> list[Any]:
        labels = self.encoder.inverse_transform(np.asarray(codes, dtype=int))
        return [self.original_labels.get(label, label) for label in labels]

    # -- files ----------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "wb") as handle:
            pickle.dump(self, handle, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Model:
        """Load a model file written by ATM (only open files you trust: it is a pickle)."""
        with open(path, "rb") as handle:
            model = pickle.load(handle)
        if not isinstance(model, cls):
            raise InvalidInputError(f"{str(path)!r} does not hold an ATM model")
        return model


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
