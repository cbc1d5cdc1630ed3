"""Reading dataset CSVs, checking them, and computing their metadata.

Missing values: rows whose *class* is missing are dropped (nothing can be
learned from them); missing feature values are kept and imputed inside each
model's pipeline (median for numbers, most frequent value for strings), so a
CSV with gaps trains instead of crashing or silently losing rows.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from atm.constants import N_FOLDS
from atm.exceptions import InvalidInputError

# An unnamed first column that just numbers the rows is an index written by
# pandas, not a feature (the original ATM trained on it: its bug #14).
_UNNAMED = "Unnamed: 0"
# pandas decompresses these by their suffix
_COMPRESSED = {".gz", ".bz2", ".zip", ".xz", ".zst", ".tar"}


def read_csv(path: str | os.PathLike, what: str = "CSV") -> pd.DataFrame:
    """Read a comma-separated file with a header row, or raise InvalidInputError."""
    file = Path(path)
    field = "test_path" if what == "test" else "train_path"
    if not file.exists():
        raise InvalidInputError(f"{what} file {str(path)!r} does not exist", field=field)
    if not file.is_file():
        raise InvalidInputError(f"{what} path {str(path)!r} is not a file", field=field)
    if file.stat().st_size == 0:
        raise InvalidInputError(f"{what} file {str(path)!r} is empty", field=field)
    if file.suffix.lower() not in _COMPRESSED and _has_nul_bytes(file):
        # pandas reads NUL as a line break and would accept garbage rows.
        raise InvalidInputError(
            f"{what} file {str(path)!r} contains NUL bytes (is it a binary file?)", field=field
        )
    try:
        frame = pd.read_csv(file, encoding="utf-8-sig", low_memory=False)
    except UnicodeDecodeError:
        raise InvalidInputError(
            f"{what} file {str(path)!r} is not UTF-8 text (is it a binary file?)",
            field=field,
        ) from None
    except pd.errors.EmptyDataError:
        raise InvalidInputError(
            f"{what} file {str(path)!r} has no header row", field=field
        ) from None
    except (pd.errors.ParserError, csv.Error, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InvalidInputError(
            f"{what} file {str(path)!r} is not a readable CSV: {first}", field=field
        ) from None
    frame = _drop_row_index(frame)
    _check_header(frame, path, what)
    if frame.empty:
        raise InvalidInputError(
            f"{what} file {str(path)!r} has a header but no data rows", field=field
        )
    return frame


def _has_nul_bytes(file: Path, chunk: int = 1 << 20) -> bool:
    with open(file, "rb") as handle:
        while block := handle.read(chunk):
            if b"\x00" in block:
                return True
    return False


def _drop_row_index(frame: pd.DataFrame) -> pd.DataFrame:
    if len(frame.columns) and frame.columns[0] == _UNNAMED:
        column = frame[_UNNAMED]
        if pd.api.types.is_integer_dtype(column) and len(column) > 0:
            start = int(column.iloc[0])
            numbered = np.arange(start, start + len(column))
            if start in (0, 1) and np.array_equal(column.to_numpy(), numbered):
                return frame.drop(columns=[_UNNAMED])
    return frame


def _check_header(frame: pd.DataFrame, path: str | os.PathLike, what: str) -> None:
    names = [str(c) for c in frame.columns]
    if len(names) < 2:
        raise InvalidInputError(
            f"{what} file {str(path)!r} has {len(names)} column(s); it needs a class column "
            "and at least one feature column, separated by commas",
            field="train_path",
        )
    empty = [i + 1 for i, name in enumerate(names)
             if name.startswith("Unnamed: ") or not name.strip()]
    if empty:
        raise InvalidInputError(
            f"{what} file {str(path)!r} has column(s) without a name at position(s) "
            f"{', '.join(map(str, empty))}; give every column a header",
            field="train_path",
        )
    # pandas renames duplicates to "a.1"; compare against the raw header.
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        header = next(csv.reader(handle), [])
    seen: set[str] = set()
    duplicates = sorted({h for h in header if h in seen or seen.add(h)})  # type: ignore[func-returns-value]
    if duplicates:
        raise InvalidInputError(
            f"{what} file {str(path)!r} has duplicate column names: {', '.join(duplicates)}",
            field="train_path",
        )


def split_features(frame: pd.DataFrame, class_column: str, path: str | os.PathLike = "",
                   what: str = "CSV") -> tuple[pd.DataFrame, pd.Series]:
    """Features and labels of a frame; rows without a label are dropped."""
    if class_column not in frame.columns:
        columns = ", ".join(str(c) for c in frame.columns)
        raise InvalidInputError(
            f"{what} file {str(path)!r} has no column {class_column!r}; columns are: {columns}",
            field="class_column",
        )
    frame = frame[frame[class_column].notna()]
    features = frame.drop(columns=[class_column])
    labels = frame[class_column]
    if pd.api.types.is_float_dtype(labels) and labels.map(float.is_integer).all():
        # A gap in an integer class column makes pandas read floats (3 -> 3.0);
        # the labels are the integers the CSV holds.
        labels = labels.astype("int64")
    return features, labels


def count_features(features: pd.DataFrame) -> int:
    """Columns after one-hot encoding: one per number, one per distinct string."""
    total = 0
    for name in features.columns:
        column = features[name]
        if is_numeric(column):
            total += 1
        else:
            total += max(1, int(column.dropna().astype(str).nunique()))
    return total


def is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)


@dataclass(frozen=True)
class DatasetSummary:
    """What ATM records about a dataset: the `datasets` row minus its id."""

    name: str
    description: str | None
    train_path: str
    test_path: str | None
    class_column: str
    n_examples: int
    k_classes: int
    d_features: int
    majority: float
    size_kb: int

    def as_row(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarize_dataset(train_path: str, test_path: str | None = None,
                      class_column: str = "class", name: str | None = None,
                      description: str | None = None) -> DatasetSummary:
    """Read and check a dataset's CSV files and compute its metadata.

    Raises InvalidInputError naming the problem: a missing, empty or unreadable
    file, an absent class column, fewer than 2 classes, or a class with fewer
    rows than cross-validation folds.
    """
    if not class_column or not str(class_column).strip():
        raise InvalidInputError("class_column must be a non-empty column name",
                                field="class_column")
    frame = read_csv(train_path, "train")
    features, labels = split_features(frame, class_column, train_path, "train")
    check_labels(labels, train_path)
    if features.shape[1] == 0:
        raise InvalidInputError(f"train file {train_path!r} has no feature columns",
                                field="train_path")
    if test_path:
        test_frame = read_csv(test_path, "test")
        test_features, test_labels = split_features(test_frame, class_column, test_path, "test")
        train_classes = set(labels.astype(str))
        unseen = sorted({str(v) for v in test_labels} - train_classes)
        if unseen:
            raise InvalidInputError(
                f"test file {test_path!r} has class(es) the train file lacks: "
                f"{', '.join(map(repr, unseen))}; a model cannot predict a class it never saw",
                field="test_path",
            )
        missing = [c for c in features.columns if c not in test_features.columns]
        if missing:
            raise InvalidInputError(
                f"test file {test_path!r} lacks the train columns: {', '.join(map(str, missing))}",
                field="test_path",
            )
    counts = labels.value_counts()
    return DatasetSummary(
        name=name or Path(train_path).stem,
        description=description,
        train_path=str(train_path),
        test_path=str(test_path) if test_path else None,
        class_column=class_column,
        n_examples=int(len(labels)),
        k_classes=int(len(counts)),
        d_features=count_features(features),
        majority=float(counts.max() / counts.sum()),
        size_kb=max(1, int(round(os.path.getsize(train_path) / 1024))),
    )


def check_labels(labels: pd.Series, path: str | os.PathLike) -> None:
    counts = labels.value_counts()
    if len(counts) < 2:
        only = f" (only {counts.index[0]!r})" if len(counts) else ""
        raise InvalidInputError(
            f"train file {str(path)!r} has {len(counts)} class(es){only}; "
            "classification needs at least 2",
            field="class_column",
        )
    small = counts[counts < N_FOLDS]
    if len(small):
        listing = ", ".join(f"{label!r} ({n} rows)" for label, n in small.items())
        raise InvalidInputError(
            f"train file {str(path)!r}: every class needs at least {N_FOLDS} rows for "
            f"{N_FOLDS}-fold cross-validation; too few rows for class(es) {listing}",
            field="class_column",
        )


def load_dataset_frames(train_path: str, test_path: str | None,
                        class_column: str) -> tuple[pd.DataFrame, pd.Series,
                                                    pd.DataFrame | None, pd.Series | None]:
    """The features and labels of a registered dataset's train and test files."""
    x_train, y_train = split_features(read_csv(train_path, "train"), class_column, train_path,
                                      "train")
    if not test_path:
        return x_train, y_train, None, None
    x_test, y_test = split_features(read_csv(test_path, "test"), class_column, test_path, "test")
    return x_train, y_train, x_test[list(x_train.columns)], y_test
