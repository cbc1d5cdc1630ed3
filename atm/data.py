"""Reading dataset CSVs, checking them, and computing their metadata.

Missing values: rows whose *class* is missing are dropped (nothing can be
learned from them); missing feature values are kept and imputed inside each
model's pipeline (median for numbers, most frequent value for strings), so a
CSV with gaps trains instead of crashing or silently losing rows.

Every problem with a file is an :class:`InvalidInputError` naming the file, the
problem and the fix; nothing a CSV holds may escape as another exception.
"""

from __future__ import annotations

import csv
import lzma
import os
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from atm.constants import N_FOLDS
from atm.exceptions import InvalidInputError
from atm.models import Dataset

# pandas decompresses these by their suffix
_COMPRESSED = {".gz", ".bz2", ".zip", ".xz", ".zst", ".tar"}
# what a corrupt or mislabelled compressed file raises inside pandas
_DECOMPRESSION_ERRORS = (OSError, EOFError, ImportError, zipfile.BadZipFile, tarfile.TarError,
                         lzma.LZMAError)
_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff")
# separators people use instead of commas, named in the error that a CSV has one column
_OTHER_SEPARATORS = {";": "';'", "\t": "tabs", "|": "'|'"}
# column lengths of the datasets table
_MAX_CLASS_COLUMN = Dataset.__table__.c.class_column.type.length
_MAX_PATH = Dataset.__table__.c.train_path.type.length
_MAX_NAME = Dataset.__table__.c.name.type.length


def read_csv(path: str | os.PathLike, what: str = "CSV") -> pd.DataFrame:
    """Read a comma-separated file with a header row, or raise InvalidInputError."""
    file = Path(path)
    field = "test_path" if what == "test" else "train_path"
    shown = f"{what} file {str(path)!r}"
    if not file.exists():
        raise InvalidInputError(f"{shown} does not exist", field=field)
    if not file.is_file():
        raise InvalidInputError(f"{what} path {str(path)!r} is not a file", field=field)
    compressed = file.suffix.lower() in _COMPRESSED
    try:
        if file.stat().st_size == 0:
            raise InvalidInputError(f"{shown} is empty", field=field)
        if not compressed:
            _check_raw_bytes(file, shown, field)
        header = _read_header(file)
        frame = pd.read_csv(file, encoding="utf-8-sig", low_memory=False)
        if not isinstance(frame.index, pd.RangeIndex):
            frame = _undo_implicit_index(frame, file, shown, field)
    except InvalidInputError:
        raise
    except UnicodeDecodeError:
        raise InvalidInputError(
            f"{shown} is not UTF-8 text (is it a binary file?); save it as a UTF-8 CSV",
            field=field,
        ) from None
    except pd.errors.EmptyDataError:
        raise InvalidInputError(f"{shown} has no header row", field=field) from None
    except (pd.errors.ParserError, csv.Error, ValueError) as e:
        raise InvalidInputError(f"{shown} is not a readable CSV: {_first_line(e)}",
                                field=field) from None
    except _DECOMPRESSION_ERRORS as e:
        if compressed and isinstance(e, ImportError):
            raise InvalidInputError(
                f"{shown} cannot be decompressed: {_first_line(e)} (or give a plain .csv)",
                field=field) from None
        if compressed:
            raise InvalidInputError(
                f"{shown} cannot be decompressed as {file.suffix.lower()}: "
                f"{_first_line(e).rstrip(':')}; "
                "check that the file is complete and that its suffix matches its format "
                "(or give a plain .csv)", field=field) from None
        if isinstance(e, OSError):
            raise InvalidInputError(f"{shown} cannot be read: {e.strerror or e}",
                                    field=field) from None
        raise
    frame = _name_columns(frame, header)
    frame = _drop_trailing_empty_columns(frame)
    frame = _drop_row_index(frame)
    _check_header(frame, shown)
    if frame.empty:
        raise InvalidInputError(f"{shown} has a header but no data rows", field=field)
    return frame


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _check_raw_bytes(file: Path, shown: str, field: str, chunk: int = 1 << 20) -> None:
    """Refuse UTF-16/32 text and NUL bytes, which pandas would misread as line breaks."""
    with open(file, "rb") as handle:
        first = True
        while block := handle.read(chunk):
            if first and block.startswith(_UTF16_32_BOMS):
                raise InvalidInputError(
                    f"{shown} is UTF-16 or UTF-32 text; save it as a UTF-8 CSV", field=field)
            first = False
            if b"\x00" in block:
                raise InvalidInputError(f"{shown} contains NUL bytes (is it a binary file?)",
                                        field=field)


def _read_header(file: Path) -> list[str]:
    """The header row exactly as written (pandas renames duplicates and empty names)."""
    if file.suffix.lower() not in _COMPRESSED:
        try:
            with open(file, encoding="utf-8-sig", newline="") as handle:
                # pandas skips blank lines before the header, so must we
                return next((row for row in csv.reader(handle) if row), [])
        except csv.Error:  # a field past csv's size limit: let pandas read it
            pass
    head = pd.read_csv(file, header=None, nrows=1, dtype=str, na_filter=False,
                       encoding="utf-8-sig")
    return [str(name) for name in head.iloc[0]] if len(head) else []


def _undo_implicit_index(frame: pd.DataFrame, file: Path, shown: str,
                         field: str) -> pd.DataFrame:
    """Rows with more fields than the header: pandas took the first column(s) as the index.

    Extra fields that are all empty are trailing commas (spreadsheet exports): read
    the file again without an index. Anything else is refused.
    """
    extra = frame.index.nlevels
    if frame.iloc[:, -extra:].isna().all().all():
        return pd.read_csv(file, encoding="utf-8-sig", low_memory=False, index_col=False)
    # Row names without a header (R's write.table) or extra values at the end of each
    # row: pandas would guess the first, and a wrong guess shifts every column.
    raise InvalidInputError(
        f"{shown} has data rows with {extra} field(s) more than its header; give every "
        "column a name in the header (or remove the extra fields)", field=field)


def _name_columns(frame: pd.DataFrame, header: list[str]) -> pd.DataFrame:
    if len(header) == frame.shape[1]:
        frame.columns = header
    else:  # cannot happen with a well-formed file; keep pandas' names
        frame.columns = ["" if str(c).startswith("Unnamed: ") else str(c)
                         for c in frame.columns]
    return frame


def _drop_trailing_empty_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """A comma at the end of every line (header included) adds a nameless, empty column."""
    keep = frame.shape[1]
    while keep > 0 and not str(frame.columns[keep - 1]).strip() \
            and frame.iloc[:, keep - 1].isna().all():
        keep -= 1
    return frame.iloc[:, :keep] if keep < frame.shape[1] else frame


def _is_row_numbering(column: pd.Series) -> bool:
    if not pd.api.types.is_integer_dtype(column) or len(column) == 0:
        return False
    start = int(column.iloc[0])
    return start in (0, 1) and np.array_equal(column.to_numpy(),
                                              np.arange(start, start + len(column)))


def _drop_row_index(frame: pd.DataFrame) -> pd.DataFrame:
    # An unnamed first column that just numbers the rows is an index written by
    # pandas, not a feature (the original ATM trained on it: its bug #14).
    if len(frame.columns) and frame.columns[0] == "" and _is_row_numbering(frame.iloc[:, 0]):
        return frame.iloc[:, 1:]
    return frame


def _check_header(frame: pd.DataFrame, shown: str) -> None:
    names = [str(c) for c in frame.columns]
    if len(names) < 2:
        used = [label for sep, label in _OTHER_SEPARATORS.items()
                if names and sep in names[0]]
        hint = f", but it seems to use {used[0]}" if used else ""
        raise InvalidInputError(
            f"{shown} has {len(names)} column(s); it needs a class column "
            f"and at least one feature column, separated by commas{hint}",
            field="train_path",
        )
    empty = [i + 1 for i, name in enumerate(names) if not name.strip()]
    if empty:
        raise InvalidInputError(
            f"{shown} has column(s) without a name at position(s) "
            f"{', '.join(map(str, empty))}; give every column a header",
            field="train_path",
        )
    seen: set[str] = set()
    duplicates = sorted({n for n in names if n in seen or seen.add(n)})  # type: ignore[func-returns-value]
    if duplicates:
        raise InvalidInputError(
            f"{shown} has duplicate column names: {', '.join(duplicates)}; "
            "give every column its own name",
            field="train_path",
        )


def check_finite(features: pd.DataFrame, path: str | os.PathLike, what: str = "train") -> None:
    """Refuse infinite numbers ('inf', '1e999'): every model would fail on them."""
    floats = features.select_dtypes(include="floating")
    if floats.shape[1] == 0:
        return
    infinite = [str(name) for name, bad in
                zip(floats.columns, np.isinf(floats.to_numpy()).any(axis=0), strict=True)
                if bad]
    if infinite:
        raise InvalidInputError(
            f"{what} file {str(path)!r} has infinite values in column(s) "
            f"{', '.join(infinite)}; replace them with finite numbers, or leave the cells "
            "empty to mark them missing",
            field="test_path" if what == "test" else "train_path",
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
    numeric = features.select_dtypes(include=["number", "bool"]).shape[1]
    total = numeric
    if numeric < features.shape[1]:
        for position in range(features.shape[1]):
            column = features.iloc[:, position]
            if not is_numeric(column):
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
    if len(class_column) > _MAX_CLASS_COLUMN:
        raise InvalidInputError(  # the wording of the REST API's length check
            f"class_column must be at most {_MAX_CLASS_COLUMN} characters, "
            f"got {len(class_column)}", field="class_column")
    for field, value in (("train_path", train_path), ("test_path", test_path)):
        if value and len(str(value)) > _MAX_PATH:
            raise InvalidInputError(
                f"{field} must be at most {_MAX_PATH} characters, got {len(str(value))}",
                field=field)
    frame = read_csv(train_path, "train")
    features, labels = split_features(frame, class_column, train_path, "train")
    check_labels(labels, train_path)
    if features.shape[1] == 0:
        raise InvalidInputError(f"train file {train_path!r} has no feature columns",
                                field="train_path")
    check_finite(features, train_path, "train")
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
        check_finite(test_features[list(features.columns)], test_path, "test")
    counts = labels.value_counts()
    return DatasetSummary(
        # a name derived from a long file name is shortened, not refused
        name=name or Path(train_path).stem[:_MAX_NAME],
        description=description,
        # Absolute: a worker started in another directory (or on another machine that
        # mounts the same share) must find the file.
        train_path=str(Path(train_path).resolve()),
        test_path=str(Path(test_path).resolve()) if test_path else None,
        class_column=class_column,
        n_examples=int(len(labels)),
        k_classes=int(len(counts)),
        d_features=count_features(features),
        majority=float(counts.max() / counts.sum()),
        size_kb=max(1, int(round(os.path.getsize(train_path) / 1024))),
    )


def check_labels(labels: pd.Series, path: str | os.PathLike) -> None:
    counts = labels.value_counts()
    if len(counts) == 0:
        raise InvalidInputError(
            f"train file {str(path)!r} has no value in its class column {str(labels.name)!r}; "
            "fill in the class of each row (or name the right column)",
            field="class_column",
        )
    if len(counts) < 2:
        only = f" (only {_shown_label(counts.index[0])})" if len(counts) else ""
        raise InvalidInputError(
            f"train file {str(path)!r} has {len(counts)} class(es){only}; "
            "classification needs at least 2",
            field="class_column",
        )
    small = counts[counts < N_FOLDS]
    if len(small):
        listing = ", ".join(f"{_shown_label(label)} ({n} rows)" for label, n in small.items())
        raise InvalidInputError(
            f"train file {str(path)!r}: every class needs at least {N_FOLDS} rows for "
            f"{N_FOLDS}-fold cross-validation; too few rows for class(es) {listing}",
            field="class_column",
        )


def _shown_label(label: Any) -> str:
    """A class label as the CSV holds it: 9, not np.int64(9)."""
    return repr(label.item() if isinstance(label, np.generic) else label)


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
