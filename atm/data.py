"""Reading dataset CSVs, checking them, and computing their metadata.

Missing values: rows whose *class* is missing are dropped (nothing can be
learned from them); missing feature values are kept and imputed inside each
model's pipeline (median for numbers, most frequent value for strings), so a
CSV with gaps trains instead of crashing or silently losing rows.

Compressed files (pandas decompresses them by their suffix) are read once as a
stream before pandas parses them, and refused past ``max_decompressed_mb`` (a
setting; :data:`atm.constants.MAX_DECOMPRESSED_MB` by default): a small ``.gz``
cannot make a process hold gigabytes.

Numbers pandas leaves as text are read here: a number past the float range
(``1e999``) is refused, naming its column and row, instead of turning its column
into text that would be one-hot encoded; integers past 64 bits become floats and
NaN / infinity spellings pandas does not know (``+nan``, `` -inf ``) are read as such.

Every problem with a file is an :class:`InvalidInputError` naming the file, the
problem and the fix; nothing a CSV holds may escape as another exception.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import lzma
import os
import re
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from atm.constants import MAX_DECOMPRESSED_MB, N_FOLDS
from atm.exceptions import InvalidInputError
from atm.models import Dataset

# pandas decompresses these by their suffix
_COMPRESSED = {".gz", ".bz2", ".zip", ".xz", ".zst", ".tar"}
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tar.bz2", ".tar.xz")  # pandas reads these as tar
# what a corrupt or mislabelled compressed file raises (zlib.error: bad deflate data)
_DECOMPRESSION_ERRORS = (OSError, EOFError, ImportError, zipfile.BadZipFile, tarfile.TarError,
                         lzma.LZMAError, zlib.error)
_CHUNK = 1 << 20
_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff")
# separators people use instead of commas, named in the error that a CSV has one column
_OTHER_SEPARATORS = {";": "';'", "\t": "tabs", "|": "'|'"}
# numbers as people write them, which float() reads but pandas may leave as text
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INFINITY_OR_NAN = re.compile(r"[+-]?(?:inf|infinity|nan)", re.IGNORECASE)
_SHOWN_NUMBER = 40  # characters of a refused number quoted in an error
# column lengths of the datasets table
_MAX_CLASS_COLUMN = Dataset.__table__.c.class_column.type.length
_MAX_PATH = Dataset.__table__.c.train_path.type.length
_MAX_NAME = Dataset.__table__.c.name.type.length


def read_csv(path: str | os.PathLike, what: str = "CSV",
             max_decompressed_mb: float | None = None) -> pd.DataFrame:
    """Read a comma-separated file with a header row, or raise InvalidInputError.

    A compressed file holding more than ``max_decompressed_mb`` MB once decompressed is
    refused before pandas reads it (None: no limit).
    """
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
        if compressed:
            _check_decompressed(file, shown, field, max_decompressed_mb)
        else:
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


def _blocks(stream: IO[bytes]) -> Iterator[bytes]:
    while block := stream.read(_CHUNK):
        yield block


def _check_blocks(blocks: Iterable[bytes], shown: str, field: str) -> Iterator[int]:
    """Refuse UTF-16/32 text and NUL bytes, which pandas would misread as line breaks;
    yields the number of bytes checked so far."""
    total = 0
    for block in blocks:
        if total == 0 and block.startswith(_UTF16_32_BOMS):
            raise InvalidInputError(
                f"{shown} is UTF-16 or UTF-32 text; save it as a UTF-8 CSV", field=field)
        if b"\x00" in block:
            raise InvalidInputError(f"{shown} contains NUL bytes (is it a binary file?)",
                                    field=field)
        total += len(block)
        yield total


def _check_raw_bytes(file: Path, shown: str, field: str) -> None:
    with open(file, "rb") as handle:
        for _ in _check_blocks(_blocks(handle), shown, field):
            pass


def _check_decompressed(file: Path, shown: str, field: str,
                        max_decompressed_mb: float | None) -> None:
    """Decompress the file as a stream (a block at a time, never all of it) and refuse it
    past the limit, or if it holds NUL bytes or UTF-16/32 text."""
    limit = None if max_decompressed_mb is None else int(max_decompressed_mb * 1e6)
    with _open_decompressed(file, shown, field) as stream:
        if stream is None:
            return
        for total in _check_blocks(_blocks(stream), shown, field):
            if limit is not None and total > limit:
                if limit <= 0:
                    raise InvalidInputError(
                        f"{shown} is compressed, and compressed files are not accepted "
                        "(setting max_decompressed_mb is 0); give the plain CSV", field=field)
                raise InvalidInputError(
                    f"{shown} decompresses to more than {max_decompressed_mb:g} MB, the limit "
                    "for compressed files (setting max_decompressed_mb); decompress it and "
                    "give the plain CSV, or raise the limit", field=field)


@contextmanager
def _open_decompressed(file: Path, shown: str, field: str) -> Iterator[IO[bytes] | None]:
    """The bytes pandas would parse, decompressed the way it would (by the file's suffix).

    None when pandas cannot read the format at all (it names the package to install).
    """
    name = file.name.lower()
    one_file = f"{shown} must be an archive of exactly one CSV file (or give a plain .csv)"
    if name.endswith(_TAR_SUFFIXES):
        # Members one at a time: listing them first would decompress the whole archive.
        with tarfile.open(file, "r:*") as archive:
            member = archive.next()
            if member is None:
                raise InvalidInputError(one_file, field=field)
            stream = archive.extractfile(member)
            if stream is None:
                raise InvalidInputError(f"{shown} holds {member.name!r}, which is not a file; "
                                        "give an archive of one CSV file (or a plain .csv)",
                                        field=field)
            yield stream
            if archive.next() is not None:  # cheap now: the first member has been read
                raise InvalidInputError(one_file, field=field)
    elif name.endswith(".zip"):
        with zipfile.ZipFile(file) as archive:
            names = archive.namelist()
            if len(names) != 1:
                raise InvalidInputError(one_file, field=field)
            with archive.open(names[0]) as stream:
                yield stream
    elif name.endswith(".zst"):
        try:
            import zstandard
        except ImportError:  # pandas says which package to install
            yield None
            return
        with open(file, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as stream:
            yield stream
    else:
        opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(file.suffix.lower())
        if opener is None:
            yield None
            return
        with opener(file, "rb") as stream:
            yield stream


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
    """Refuse infinite numbers ('inf', '-Infinity'): every model would fail on them."""
    floats = features.select_dtypes(include="floating")
    if floats.shape[1] == 0:
        return
    bad = np.isinf(floats.to_numpy())
    infinite = [str(name) for name, column_bad in
                zip(floats.columns, bad.any(axis=0), strict=True) if column_bad]
    if infinite:
        first_row = _data_row(floats.index[bad.any(axis=1).argmax()])
        raise InvalidInputError(
            f"{what} file {str(path)!r} has infinite values in column(s) "
            f"{', '.join(infinite)} (the first in data row {first_row}); replace them with "
            "finite numbers, or leave the cells empty to mark them missing",
            field="test_path" if what == "test" else "train_path",
        )


def _data_row(label: Any) -> int:
    """The 1-based data row (header and blank lines not counted) of a frame's row label."""
    return int(label) + 1


def read_numbers_left_as_text(features: pd.DataFrame, path: str | os.PathLike = "",
                              what: str = "CSV") -> pd.DataFrame:
    """Feature columns of numbers that pandas left as text, as floats.

    pandas reads a column as text when one of its numbers is past the float range
    (``1e999``), an integer past 64 bits, or a NaN / infinity spelling it does not know
    (``+nan``, `` -inf ``). A column whose every value is a number is numeric: such NaNs are
    missing values, infinities are left for :func:`check_finite`, and a number past the
    float range is refused with its column and row, since no model can use it.
    """
    converted: dict[int, pd.Series] = {}
    for position in range(features.shape[1]):
        column = features.iloc[:, position]
        if column.dtype != object:
            continue
        present = column.dropna()
        if present.empty or not _is_number_text(present.iloc[0]):  # most text columns
            continue
        if not all(_is_number_text(v) for v in pd.unique(present)):
            continue
        numbers = present.map(lambda v: float(v.strip()))
        too_large = [label for label, value in present[np.isinf(numbers.to_numpy())].items()
                     if _DECIMAL.fullmatch(value.strip())]  # not 'inf' itself
        if too_large:
            text = present[too_large[0]].strip()
            shown = text if len(text) <= _SHOWN_NUMBER else f"{text[:_SHOWN_NUMBER]}..."
            raise InvalidInputError(
                f"{what} file {str(path)!r}: column {str(features.columns[position])!r}, "
                f"data row {_data_row(too_large[0])}: {shown} is beyond the float range "
                f"(±{np.finfo(np.float64).max:.5g}); write a smaller number, or leave "
                "the cell empty to mark it missing",
                field="test_path" if what == "test" else "train_path",
            )
        converted[position] = numbers.reindex(column.index).astype("float64")
    if not converted:
        return features
    features = features.copy()
    for position, numbers in converted.items():
        features.isetitem(position, numbers)
    return features


def _is_number_text(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    text = value.strip()
    return bool(_DECIMAL.fullmatch(text) or _INFINITY_OR_NAN.fullmatch(text))


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
    features = read_numbers_left_as_text(frame.drop(columns=[class_column]), path, what)
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
                      description: str | None = None,
                      max_decompressed_mb: float | None = MAX_DECOMPRESSED_MB
                      ) -> DatasetSummary:
    """Read and check a dataset's CSV files and compute its metadata.

    Raises InvalidInputError naming the problem: a missing, empty or unreadable
    file, a compressed file holding more than ``max_decompressed_mb`` MB, a number
    past the float range, an absent class column, fewer than 2 classes, or a class
    with fewer rows than cross-validation folds.
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
    frame = read_csv(train_path, "train", max_decompressed_mb)
    features, labels = split_features(frame, class_column, train_path, "train")
    check_labels(labels, train_path)
    if features.shape[1] == 0:
        raise InvalidInputError(f"train file {train_path!r} has no feature columns",
                                field="train_path")
    check_finite(features, train_path, "train")
    if test_path:
        test_frame = read_csv(test_path, "test", max_decompressed_mb)
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
