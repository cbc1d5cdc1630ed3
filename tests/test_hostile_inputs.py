"""A corpus of hostile CSVs, each through `atm enter_data` (a real process) and through
`POST /api/datasets` (a server-side path as JSON, and a multipart upload).

Every file either gets a clear error -- the CLI prints one line naming the file, the problem
and the fix and exits 2; the API answers a 4xx problem+json saying the same -- and then no
row exists in any table and no uploaded file is left behind; or it is registered with the
metadata a user would count by hand, and the ones that should train do train: a real worker
finishes two decision trees on them.

Every file is generated here, in a temporary directory. Each CLI run imports scikit-learn
(seconds), so the CLI cases run two at a time in a module fixture and the tests below check
their recorded results.
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from api_support import PROBLEM, api_settings, assert_problem, snapshot
from conftest import ATM_EXE

from atm import constants as C
from atm.api import create_app
from atm.data import summarize_dataset
from atm.database import Database
from atm.exceptions import InvalidInputError
from atm.models import Classifier, Dataset
from atm.worker import Worker, WorkerOptions

CLI_ERROR_EXIT = 2
EMPTY = {"datasets": 0, "dataruns": 0, "hyperpartitions": 0, "classifiers": 0}
TRAIN_OPTIONS = ["--methods", "dt", "--budget", "2"]
# what `atm enter_data` may leave in an empty directory when it refuses a file
CLI_BOOKKEEPING = {"atm.db", "atm.db-wal", "atm.db-shm", "atm.db-journal", "atm.log"}


# -- the corpus ---------------------------------------------------------------------------


def rows(n: int, labels: tuple[str, ...] = ("yes", "no"), sep: str = ",",
         end: str = "\n") -> str:
    """n data rows of two numeric features and a class, every class at least 5 times."""
    return "".join(f"{i}{sep}{(i * 7) % 10 / 4}{sep}{labels[i % len(labels)]}{end}"
                   for i in range(n))


def wide(n_columns: int, n_rows: int = 20) -> bytes:
    header = ",".join(f"c{i}" for i in range(n_columns)) + ",class\n"
    body = "".join(",".join(str((r * 31 + c) % 97) for c in range(n_columns)) +
                   f",{'ab'[r % 2]}\n" for r in range(n_rows))
    return (header + body).encode()


def quoted_newlines() -> bytes:
    body = "".join(f'{i},"line one of {i}\nline two, with a comma\r\nline three",'
                   f'{"yes" if i % 2 else "no"}\n' for i in range(20))
    return ('x,"a note\nover two lines",class\n' + body).encode()


GIB = 1 << 30
BOMB_LIMIT_MB = C.MAX_DECOMPRESSED_MB  # what the CLI and the test servers run with
# peak RSS allowed to `atm enter_data` refusing the bomb: it peaks at ~190 MB here, as on a
# 1 KB file (pandas and scikit-learn imported); holding what the bomb holds would take 2 GB
BOMB_MAX_RSS_MB = 400


@functools.cache
def gzip_bomb(gigabytes: int = 2) -> bytes:
    """~2 MB of gzip holding a header and 2 GB of '0,0,0,...' rows, written a chunk at a time."""
    chunk = b"0," * (1 << 19) + b"0\n"  # one 1 MiB row
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as handle:
        handle.write(b"a,class\n")
        for _ in range(gigabytes * GIB // len(chunk)):
            handle.write(chunk)
    return buffer.getvalue()


def corrupt_gzip() -> bytes:
    """A valid gzip header, then bytes that are not deflate data."""
    good = gzip.compress(("a,b,class\n" + rows(200)).encode(), mtime=0)
    return good[:10] + random.Random(1).randbytes(200) + good[-8:]


def zip_of(*names: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, "a,b,class\n" + rows(20))
    return buffer.getvalue()


def long_strings() -> bytes:
    body = "".join(f"{i},{chr(65 + i % 3) * 200_000},{'yes' if i % 2 else 'no'}\n"
                   for i in range(20))
    return ("x,note,class\n" + body).encode()


@dataclass(frozen=True)
class Case:
    """One hostile file; either ``message`` (refused) or ``metadata`` (registered)."""

    filename: str
    content: Callable[[], bytes]
    message: str | None = None  # "{file}" stands for the quoted path the user gave
    metadata: dict[str, int] = field(default_factory=dict)
    trains: bool = False
    class_column: str = "class"
    max_rss_mb: float | None = None  # peak memory `atm enter_data` may use on it


LONG_NAME = "c" * 150
CASES: dict[str, Case] = {
    # -- refused ------------------------------------------------------------------------
    "empty file": Case("empty.csv", lambda: b"", "train file {file} is empty"),
    "header only": Case("header.csv", lambda: b"a,b,class\n",
                        "train file {file} has a header but no data rows"),
    "blank lines only": Case("blank.csv", lambda: b"\n\r\n\n",
                             "train file {file} has no header row"),
    "binary garbage": Case("garbage.csv", lambda: random.Random(5).randbytes(64_000),
                           "train file {file} contains NUL bytes (is it a binary file?)"),
    "binary without NUL bytes": Case(
        "latin.csv", lambda: bytes(range(128, 256)) * 40,
        "train file {file} is not UTF-8 text (is it a binary file?); save it as a UTF-8 CSV"),
    "latin-1 text": Case(
        "latin1.csv", lambda: ("größe,class\n" + "1,x\n" * 10).encode("latin-1"),
        "train file {file} is not UTF-8 text (is it a binary file?); save it as a UTF-8 CSV"),
    "UTF-16 text": Case("utf16.csv", lambda: ("a,b,class\n" + rows(20)).encode("utf-16"),
                        "train file {file} is UTF-16 or UTF-32 text; save it as a UTF-8 CSV"),
    "; delimiter": Case(
        "semicolon.csv", lambda: ("a;b;class\n" + rows(20, sep=";")).encode(),
        "train file {file} has 1 column(s); it needs a class column and at least one feature "
        "column, separated by commas, but it seems to use ';'"),
    "tab delimiter": Case(
        "tabs.csv", lambda: ("a\tb\tclass\n" + rows(20, sep="\t")).encode(),
        "train file {file} has 1 column(s); it needs a class column and at least one feature "
        "column, separated by commas, but it seems to use tabs"),
    "class column only": Case(
        "lonely.csv", lambda: ("class\n" + "yes\nno\n" * 10).encode(),
        "train file {file} has 1 column(s); it needs a class column and at least one feature "
        "column, separated by commas"),
    "duplicate column names": Case(
        "dup.csv", lambda: ("a,a,class\n" + rows(20)).encode(),
        "train file {file} has duplicate column names: a; give every column its own name"),
    "duplicate class column": Case(
        "dupclass.csv", lambda: ("class,b,class\n" + rows(20)).encode(),
        "train file {file} has duplicate column names: class; give every column its own name"),
    "empty header name": Case(
        "noname.csv", lambda: ("a,,class\n" + rows(20)).encode(),
        "train file {file} has column(s) without a name at position(s) 2; give every column "
        "a header"),
    "blank header name": Case(
        "blankname.csv", lambda: (" ,b,class\n" + rows(20)).encode(),
        "train file {file} has column(s) without a name at position(s) 1; give every column "
        "a header"),
    "one class only": Case(
        "oneclass.csv", lambda: ("a,b,class\n" + rows(20, labels=("yes",))).encode(),
        "train file {file} has 1 class(es) (only 'yes'); classification needs at least 2"),
    "one numeric class only": Case(
        "onenumber.csv", lambda: ("a,b,class\n" + rows(20, labels=("7",))).encode(),
        "train file {file} has 1 class(es) (only 7); classification needs at least 2"),
    "class column all empty": Case(
        "noclass.csv", lambda: ("a,b,class\n" + "1,2,\n" * 20).encode(),
        "train file {file} has no value in its class column 'class'; fill in the class of "
        "each row (or name the right column)"),
    "a class with 2 rows": Case(
        "rare.csv", lambda: ("a,b,class\n" + rows(20) + "1,1,rare\n2,2,rare\n").encode(),
        "train file {file}: every class needs at least 5 rows for 5-fold cross-validation; "
        "too few rows for class(es) 'rare' (2 rows)"),
    "rows longer than the header": Case(
        "extra.csv", lambda: ("a,b,class\n" + rows(20).replace("\n", ",9\n")).encode(),
        "train file {file} has data rows with 1 field(s) more than its header; give every "
        "column a name in the header (or remove the extra fields)"),
    "unclosed quote": Case(
        "quote.csv", lambda: ('a,b,class\n"1,2,yes\n' + rows(20)).encode(),
        "train file {file} is not a readable CSV: Error tokenizing data. C error: EOF inside "
        "string starting at row 1"),
    "infinite numbers": Case(
        "inf.csv", lambda: ("a,b,class\n" + rows(20) + "1,inf,yes\n2,-inf,no\n").encode(),
        "train file {file} has infinite values in column(s) b (the first in data row 21); "
        "replace them with finite numbers, or leave the cells empty to mark them missing"),
    "infinity written with spaces": Case(  # pandas leaves ' -inf ' as text
        "infspaces.csv", lambda: ("a,b,class\n" + rows(20) + "1, -Infinity ,yes\n").encode(),
        "train file {file} has infinite values in column(s) b (the first in data row 21); "
        "replace them with finite numbers, or leave the cells empty to mark them missing"),
    "a number past the float range": Case(  # pandas reads its column as text
        "1e999.csv", lambda: ("a,b,class\n" + rows(20) + "1,1e999,yes\n").encode(),
        "train file {file}: column 'b', data row 21: 1e999 is beyond the float range "
        "(±1.7977e+308); write a smaller number, or leave the cell empty to mark it missing"),
    "a negative number past the float range": Case(
        "minus1e999.csv", lambda: ("a,b,class\n" + rows(20) + "-1e999,2,no\n").encode(),
        "train file {file}: column 'a', data row 21: -1e999 is beyond the float range "
        "(±1.7977e+308); write a smaller number, or leave the cell empty to mark it missing"),
    "a 400-digit integer": Case(
        "digits.csv", lambda: ("a,b,class\n" + rows(4) + "9" * 400 + ",1,no\n"
                               + rows(20)).encode(),
        "train file {file}: column 'a', data row 5: " + "9" * 40 + "... is beyond the float "
        "range (±1.7977e+308); write a smaller number, or leave the cell empty to mark it "
        "missing"),
    "not really gzip": Case(
        "fake.csv.gz", lambda: ("a,b,class\n" + rows(20)).encode(),
        "train file {file} cannot be decompressed as .gz: Not a gzipped file (b'a,'); check "
        "that the file is complete and that its suffix matches its format (or give a plain "
        ".csv)"),
    "truncated gzip": Case(
        "cut.csv.gz", lambda: gzip.compress(("a,b,class\n" + rows(2000)).encode())[:500],
        "train file {file} cannot be decompressed as .gz: Compressed file ended before the "
        "end-of-stream marker was reached; check that the file is complete and that its suffix "
        "matches its format (or give a plain .csv)"),
    "corrupt gzip data": Case(
        "corrupt.csv.gz", corrupt_gzip,
        "train file {file} cannot be decompressed as .gz: Error -3 while decompressing data: "
        "too many length or distance symbols; check that the file is complete and that its "
        "suffix matches its format (or give a plain .csv)"),
    "gzip of binary": Case(
        "binary.csv.gz", lambda: gzip.compress(random.Random(5).randbytes(64_000), mtime=0),
        "train file {file} contains NUL bytes (is it a binary file?)"),
    "a zip of two files": Case(
        "two.csv.zip", lambda: zip_of("a.csv", "b.csv"),
        "train file {file} must be an archive of exactly one CSV file (or give a plain .csv)"),
    "a gzip bomb (2 GB of zeros in 2 MB)": Case(
        "bomb.csv.gz", gzip_bomb,
        f"train file {{file}} decompresses to more than {BOMB_LIMIT_MB:g} MB, the limit for "
        "compressed files (setting max_decompressed_mb); decompress it and give the plain "
        "CSV, or raise the limit",
        max_rss_mb=BOMB_MAX_RSS_MB),
    "class column name too long": Case(
        "longclass.csv", lambda: (f"a,b,{LONG_NAME}\n" + rows(20)).encode(),
        "class_column must be at most 100 characters, got 150",
        class_column=LONG_NAME),
    # -- registered ---------------------------------------------------------------------
    "UTF-8 BOM": Case("bom.csv", lambda: ("\ufeffa,b,class\n" + rows(20)).encode(),
                      metadata={"n_examples": 20, "k_classes": 2, "d_features": 2},
                      trains=True),
    "quoted newlines": Case("newlines.csv", quoted_newlines,  # 20 distinct notes
                            metadata={"n_examples": 20, "k_classes": 2, "d_features": 21},
                            trains=True),
    "a column of NaN only": Case(
        "nan.csv", lambda: ("a,gone,b,class\n" + "".join(
            f"{i},{'NaN' if i % 2 else ''},{i % 3},{'yes' if i % 2 else 'no'}\n"
            for i in range(20))).encode(),
        metadata={"n_examples": 20, "k_classes": 2, "d_features": 3}, trains=True),
    "CRLF line endings": Case("crlf.csv",
                              lambda: ("a,b,class\r\n" + rows(20, end="\r\n")).encode(),
                              metadata={"n_examples": 20, "k_classes": 2, "d_features": 2},
                              trains=True),
    "unicode header names": Case(
        "unicode.csv",
        lambda: ("größe,名前,😀 emoji,klasse✓\n" + "".join(
            f"{i},{'αβγ'[i % 3]},{i % 4},{'ja' if i % 2 else 'nein'}\n"
            for i in range(20))).encode(),
        metadata={"n_examples": 20, "k_classes": 2, "d_features": 5}, trains=True,
        class_column="klasse✓"),
    "class column of mixed types": Case(
        "mixed.csv", lambda: ("a,b,class\n" + rows(30, labels=("1", "x", "2.5"))).encode(),
        metadata={"n_examples": 30, "k_classes": 3, "d_features": 2}, trains=True),
    "trailing commas on every line": Case(
        "trailing.csv", lambda: ("a,b,class,\n" + rows(20).replace("\n", ",\n")).encode(),
        metadata={"n_examples": 20, "k_classes": 2, "d_features": 2}, trains=True),
    "trailing commas on data lines only": Case(
        "trailingdata.csv", lambda: ("a,b,class\n" + rows(20).replace("\n", ",\n")).encode(),
        metadata={"n_examples": 20, "k_classes": 2, "d_features": 2}),
    "NaN spellings pandas leaves as text": Case(  # missing values, the column stays numeric
        "nanspell.csv", lambda: ("a,b,class\n" + rows(20) + "1,+nan,yes\n2,NAN,no\n").encode(),
        metadata={"n_examples": 22, "k_classes": 2, "d_features": 2}, trains=True),
    "integers past 64 bits": Case(  # numbers, not 21 one-hot categories
        "bigints.csv", lambda: ("a,b,class\n" + rows(20)
                                + "99999999999999999999,1,yes\n").encode(),
        metadata={"n_examples": 21, "k_classes": 2, "d_features": 2}, trains=True),
    "gzip": Case("plain.csv.gz", lambda: gzip.compress(("a,b,class\n" + rows(20)).encode()),
                 metadata={"n_examples": 20, "k_classes": 2, "d_features": 2}, trains=True),
    "very long strings": Case("long.csv", long_strings,
                              metadata={"n_examples": 20, "k_classes": 2, "d_features": 4}),
    "a 300,000-character header name": Case(
        "longheader.csv", lambda: ("a," + "h" * 300_000 + ",class\n" + rows(20)).encode(),
        metadata={"n_examples": 20, "k_classes": 2, "d_features": 2}),
    "5,000 columns": Case("wide.csv", lambda: wide(5000),
                          metadata={"n_examples": 20, "k_classes": 2, "d_features": 5000}),
}
REFUSED = [name for name, case in CASES.items() if case.message]
REGISTERED = [name for name, case in CASES.items() if not case.message]


def expected_message(case: Case, shown_path: str) -> str:
    return case.message.format(file=repr(shown_path))


def assert_names_the_problem(detail: str, case: Case) -> None:
    """The API detail holds the CLI's message around whatever server path it names."""
    for part in case.message.split("{file}"):
        assert part.strip() in detail, detail


def assert_metadata(dataset: dict | Dataset, case: Case) -> None:
    get = dataset.get if isinstance(dataset, dict) else lambda k: getattr(dataset, k)
    assert {key: get(key) for key in case.metadata} == case.metadata
    assert get("class_column") == case.class_column


def train_two_trees(db: Database, workdir: Path, datarun_ids: list[int]) -> None:
    """A real worker (fits in-process) finishes 2 decision trees of every datarun."""
    options = WorkerOptions(models_dir=str(workdir / "models"),
                            metrics_dir=str(workdir / "metrics"), classifier_timeout=0)
    Worker(db, options).run(max_classifiers=2 * len(datarun_ids))
    for datarun_id in datarun_ids:
        with db.session_scope() as session:
            classifiers = session.query(Classifier).filter_by(datarun_id=datarun_id).all()
            states = [(c.status, c.error_message) for c in classifiers]
            assert states == [(C.CLASSIFIER_COMPLETE, None)] * 2, states
            for classifier in classifiers:
                assert Path(classifier.model_location).is_file()
                assert Path(classifier.metrics_location).is_file()
                assert 0 <= classifier.cv_judgment_metric <= 1


# -- through the CLI ----------------------------------------------------------------------


@dataclass
class CliRun:
    directory: Path
    returncode: int
    stdout: str
    stderr: str
    max_rss_mb: float  # peak resident memory of the process


# Linux keeps a process's peak memory across exec(), so a command forked straight from
# this (large) test process would report the test process's size. A small Python process
# forks the command instead and reports the command's own peak (wait4) in a file.
MEASURER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(command: list[str], cwd: Path, timeout: float = 300,
                 env: dict[str, str] | None = None) -> CliRun:
    """Run a command to its end, with the peak memory of that one process."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.TemporaryDirectory() as scratch:
        rss_file = Path(scratch) / "maxrss"
        process = subprocess.Popen([sys.executable, "-c", MEASURER, str(rss_file), *command],
                                   cwd=cwd, stdout=out, stderr=err, start_new_session=True,
                                   env={**os.environ, "PYTHONWARNINGS": "", **(env or {})})
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        out.seek(0)
        err.seek(0)
        max_rss_kib = int(rss_file.read_text()) if rss_file.exists() else 0
        return CliRun(cwd, process.returncode, out.read().decode(), err.read().decode(),
                      max_rss_kib / 1024)


def run_enter_data(directory: Path, case: Case) -> CliRun:
    (directory / case.filename).write_bytes(case.content())
    args = ["--train-path", case.filename, *TRAIN_OPTIONS]
    if case.class_column != "class":
        args += ["--class-column", case.class_column]
    return run_measured([ATM_EXE, "enter_data", *args], directory)


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory) -> dict[str, CliRun]:
    """Every case through `atm enter_data`, each in its own empty directory."""
    def run(name: str) -> tuple[str, CliRun]:
        directory = tmp_path_factory.mktemp(re.sub(r"\W+", "_", name))
        return name, run_enter_data(directory, CASES[name])

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, CASES))


def cli_database(directory: Path) -> Database:
    return Database(f"sqlite:///{directory / 'atm.db'}")


@pytest.mark.parametrize("name", REFUSED)
def test_cli_refuses_with_one_line_and_writes_nothing(cli_runs, name):
    case, run = CASES[name], cli_runs[name]
    assert run.returncode == CLI_ERROR_EXIT, run.stderr
    assert run.stderr == (f"atm enter_data: error: "
                          f"{expected_message(case, case.filename)}\n")
    assert run.stdout == ""
    if case.max_rss_mb is not None:
        assert run.max_rss_mb < case.max_rss_mb
    db = cli_database(run.directory)
    try:
        assert snapshot(db) == EMPTY
    finally:
        db.dispose()
    assert {p.name for p in run.directory.iterdir()} - CLI_BOOKKEEPING == {case.filename}


@pytest.mark.parametrize("name", REGISTERED)
def test_cli_registers_with_the_right_metadata(cli_runs, name, monkeypatch):
    case, run = CASES[name], cli_runs[name]
    assert run.returncode == 0, run.stderr
    meta = case.metadata
    assert run.stdout.splitlines()[0] == (
        f"dataset 1 ({Path(case.filename).stem}): {meta['n_examples']} rows, "
        f"{meta['d_features']} features, {meta['k_classes']} classes")
    assert "Traceback" not in run.stderr
    db = cli_database(run.directory)
    try:
        assert_metadata(db.get_row(Dataset, 1), case)
        assert snapshot(db)["dataruns"] == 1
        if case.trains:
            # the CLI records the path as given: a worker runs where the user ran the CLI
            monkeypatch.chdir(run.directory)
            train_two_trees(db, run.directory, [1])
    finally:
        db.dispose()


# -- through the REST API -----------------------------------------------------------------


@pytest.fixture
def client(db, workdir):
    return create_app(api_settings(db, workdir), db).test_client()


def post_path(client, case: Case):
    return client.post("/api/datasets",
                       json={"train_path": case.filename, "class_column": case.class_column})


def post_upload(client, case: Case, content: bytes | None = None):
    data = {"file": (io.BytesIO(case.content() if content is None else content), case.filename),
            "class_column": case.class_column}
    return client.post("/api/datasets", data=data, content_type="multipart/form-data")


def assert_refused(response, case: Case) -> None:
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert body["status"] == response.status_code
    assert_names_the_problem(body["detail"], case)


@pytest.mark.parametrize("name", REFUSED)
def test_api_refuses_with_a_problem_and_writes_nothing(client, db, workdir, name):
    case = CASES[name]
    (workdir / case.filename).write_bytes(case.content())
    response = post_path(client, case)
    assert_refused(response, case)
    assert repr(str(workdir / case.filename)) in response.get_json()["detail"] \
        or case.message.startswith("class_column")
    assert_refused(post_upload(client, case), case)
    assert snapshot(db, workdir) == {**EMPTY, "uploads": []}


@pytest.mark.parametrize("name", REGISTERED)
def test_api_registers_with_the_right_metadata(client, db, workdir, name):
    case = CASES[name]
    (workdir / case.filename).write_bytes(case.content())
    by_path = post_path(client, case)
    assert by_path.status_code == 201, by_path.get_json()
    uploaded = post_upload(client, case)
    assert uploaded.status_code == 201, uploaded.get_json()
    for response in (by_path, uploaded):
        assert_metadata(response.get_json(), case)
        assert client.get(f"/api/datasets/{response.get_json()['id']}").status_code == 200
    assert Path(uploaded.get_json()["train_path"]).parent == workdir / "uploads"
    if case.trains:
        runs = [client.post("/api/run", json={"dataset_id": r.get_json()["id"], "budget": 2,
                                              "methods": ["dt"]}) for r in (by_path, uploaded)]
        assert [r.status_code for r in runs] == [200, 200]
        train_two_trees(db, workdir, [r.get_json()["datarun_ids"][0] for r in runs])


def test_the_corpus_is_large_and_covers_the_issue():
    """The count RELIABILITY.md quotes (plus the 50 MB file below)."""
    assert len(CASES) + 1 >= 35
    assert len(REFUSED) >= 20 and len(REGISTERED) >= 10


# -- a 50 MB file -------------------------------------------------------------------------

BIG_ROWS_PER_BLOCK = 10_000
BIG_HEADER = b"f0,f1,f2,f3,f4,f5,f6,f7,colour,class\n"


def write_big_csv(path: Path, megabytes: int = 50) -> dict[str, int]:
    """~50 MB of rows (a block of distinct rows written many times); returns its metadata."""
    rng = random.Random(0)
    lines = []
    for i in range(BIG_ROWS_PER_BLOCK):
        numbers = ",".join(f"{rng.gauss(0, 1):.5f}" for _ in range(8))
        lines.append(f"{numbers},{('red', 'green', 'blue')[i % 3]},{'yes' if i % 2 else 'no'}")
    block = ("\n".join(lines) + "\n").encode()
    repeats = megabytes * 1_000_000 // len(block) + 1
    with open(path, "wb") as handle:
        handle.write(BIG_HEADER)
        for _ in range(repeats):
            handle.write(block)
    assert path.stat().st_size >= megabytes * 1_000_000
    return {"n_examples": repeats * BIG_ROWS_PER_BLOCK, "k_classes": 2, "d_features": 11}


@pytest.mark.slow
def test_a_50_mb_file_through_the_cli(tmp_path):
    metadata = write_big_csv(tmp_path / "big.csv")
    done = subprocess.run([ATM_EXE, "enter_data", "--train-path", "big.csv", *TRAIN_OPTIONS],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"dataset 1 (big): {metadata['n_examples']} rows, 11 features, "
                                  "2 classes\n")
    db = cli_database(tmp_path)
    try:
        row = db.get_row(Dataset, 1)
        assert_metadata(row, Case("big.csv", bytes, metadata=metadata))
        size_kb = row["size_kb"] if isinstance(row, dict) else row.size_kb
        assert size_kb == round((tmp_path / "big.csv").stat().st_size / 1024)
    finally:
        db.dispose()


@pytest.mark.slow
def test_a_50_mb_file_through_the_api(client, db, workdir):
    metadata = write_big_csv(workdir / "big.csv")
    case = Case("big.csv", bytes, metadata=metadata)
    by_path = post_path(client, case)
    assert by_path.status_code == 201, by_path.get_json()
    uploaded = post_upload(client, case, (workdir / "big.csv").read_bytes())
    assert uploaded.status_code == 201, uploaded.get_json()
    for response in (by_path, uploaded):
        assert_metadata(response.get_json(), case)
    stored = Path(uploaded.get_json()["train_path"])
    assert stored.read_bytes() == (workdir / "big.csv").read_bytes()


def upload_past_the_limit(db, workdir):
    """A 6 MB upload to a server whose limit is 5 MB."""
    client = create_app(api_settings(db, workdir, max_upload_mb=5), db).test_client()
    write_big_csv(workdir / "big.csv", megabytes=6)
    return post_upload(client, Case("big.csv", bytes), (workdir / "big.csv").read_bytes())


def test_an_upload_past_the_limit_is_refused_and_not_kept(db, workdir):
    response = upload_past_the_limit(db, workdir)
    assert response.status_code == 413
    assert response.mimetype == PROBLEM
    assert snapshot(db, workdir) == {**EMPTY, "uploads": []}


def test_an_upload_past_the_limit_is_told_the_limit(db, workdir):
    response = upload_past_the_limit(db, workdir)
    assert "5 MB" in response.get_json()["detail"]


# -- compressed files: every format pandas infers is capped by max_decompressed_mb -----------

COMPRESSED_ROWS = 150_000  # ~3 MB of CSV


def write_compressed(path: Path, n_rows: int = COMPRESSED_ROWS) -> int:
    """A compressed CSV of ``n_rows`` rows in the format its suffix names; returns its CSV size."""
    text = ("a,b,class\n" + rows(n_rows)).encode()
    name = path.name
    if name.endswith((".tar", ".tar.gz", ".tar.bz2", ".tar.xz")):
        import tarfile
        mode = "w" if name.endswith(".tar") else "w:" + name.rsplit(".", 1)[1]
        with tarfile.open(path, mode) as archive:
            info = tarfile.TarInfo("data.csv")
            info.size = len(text)
            archive.addfile(info, io.BytesIO(text))
    elif name.endswith(".zip"):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("data.csv", text)
    else:
        import bz2
        import lzma
        opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}[path.suffix]
        with opener(path, "wb") as handle:
            handle.write(text)
    return len(text)


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz", ".zip", ".tar", ".tar.gz"])
def test_every_compression_format_is_capped_and_otherwise_read(tmp_path, suffix):
    path = tmp_path / f"data.csv{suffix}"
    assert write_compressed(path) > 2_000_000
    with pytest.raises(InvalidInputError, match=r"decompresses to more than 2 MB, the limit "
                       r"for compressed files \(setting max_decompressed_mb\)"):
        summarize_dataset(str(path), max_decompressed_mb=2)
    summary = summarize_dataset(str(path), max_decompressed_mb=4)
    assert (summary.n_examples, summary.d_features) == (COMPRESSED_ROWS, 2)


def test_a_tar_of_two_files_is_refused(tmp_path):
    import tarfile
    path = tmp_path / "two.tar"
    with tarfile.open(path, "w") as archive:
        for name in ("a.csv", "b.csv"):
            text = ("a,b,class\n" + rows(20)).encode()
            info = tarfile.TarInfo(name)
            info.size = len(text)
            archive.addfile(info, io.BytesIO(text))
    with pytest.raises(InvalidInputError, match="must be an archive of exactly one CSV file"):
        summarize_dataset(str(path))


def test_the_decompression_limit_is_a_setting_of_the_api(db, workdir):
    """An upload and a server path over a 2 MB limit, and a server taking no compressed files."""
    write_compressed(workdir / "data.csv.gz")
    case = Case("data.csv.gz", (workdir / "data.csv.gz").read_bytes)
    for limit, message in ((2, "decompresses to more than 2 MB, the limit for compressed "
                               "files (setting max_decompressed_mb)"),
                           (0, "is compressed, and compressed files are not accepted "
                               "(setting max_decompressed_mb is 0); give the plain CSV")):
        settings = api_settings(db, workdir, max_decompressed_mb=limit)
        client = create_app(settings, db).test_client()
        for response in (post_path(client, case), post_upload(client, case)):
            assert_problem(response, 400, message, field="train_path")
        assert snapshot(db, workdir) == {**EMPTY, "uploads": []}
    client = create_app(api_settings(db, workdir, max_decompressed_mb=4), db).test_client()
    assert post_upload(client, case).status_code == 201


def test_the_decompression_limit_is_a_setting_of_the_cli(tmp_path):
    write_compressed(tmp_path / "data.csv.gz")
    run = run_measured([ATM_EXE, "enter_data", "--train-path", "data.csv.gz", *TRAIN_OPTIONS],
                       tmp_path, env={"ATM_MAX_DECOMPRESSED_MB": "2"})
    assert run.returncode == CLI_ERROR_EXIT
    assert run.stderr == ("atm enter_data: error: train file 'data.csv.gz' decompresses to "
                          "more than 2 MB, the limit for compressed files (setting "
                          "max_decompressed_mb); decompress it and give the plain CSV, or "
                          "raise the limit\n")
    db = cli_database(tmp_path)
    try:
        assert snapshot(db) == EMPTY
    finally:
        db.dispose()
