"""Registering datasets: every bad input names its problem and writes nothing; the
metadata of good files matches what we compute here independently."""

import csv
import gzip
import os
import shutil
from pathlib import Path

import pytest
from conftest import DEMOS
from sqlalchemy import func, select

from atm import registry
from atm.exceptions import InvalidInputError
from atm.models import TABLES


def row_counts(db):
    with db.session_scope() as session:
        return {name: session.scalar(select(func.count()).select_from(model))
                for name, model in TABLES.items()}


EMPTY = {"datasets": 0, "dataruns": 0, "hyperpartitions": 0, "classifiers": 0}


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path.name


def rows(label, n, start=0):
    return "".join(f"{start + i},{(start + i) * 0.5},{label}\n" for i in range(n))


def assert_rejected(db, message, *args, **kwargs):
    with pytest.raises(InvalidInputError) as info:
        registry.add_dataset(db, *args, **kwargs)
    assert str(info.value) == message
    assert row_counts(db) == EMPTY
    return info.value


# -- bad input: the message names the problem, and no row is written ----------------------


def test_missing_file(db, workdir):
    assert_rejected(db, "train file 'nope.csv' does not exist", "nope.csv")


def test_a_directory_is_not_a_file(db, workdir):
    (workdir / "folder.csv").mkdir()
    assert_rejected(db, "train path 'folder.csv' is not a file", "folder.csv")


def test_empty_file(db, workdir):
    write(workdir / "empty.csv", "")
    assert_rejected(db, "train file 'empty.csv' is empty", "empty.csv")


def test_blank_lines_only(db, workdir):
    write(workdir / "blank.csv", "\n\n  \n")
    assert_rejected(db, "train file 'blank.csv' has no header row", "blank.csv")


def test_header_without_rows(db, workdir):
    write(workdir / "header.csv", "a,b,class\n")
    assert_rejected(db, "train file 'header.csv' has a header but no data rows", "header.csv")


def test_binary_file_that_is_not_utf8(db, workdir):
    (workdir / "image.csv").write_bytes(bytes(range(128, 256)) * 8)
    assert_rejected(db, "train file 'image.csv' is not UTF-8 text (is it a binary file?); "
                        "save it as a UTF-8 CSV",
                    "image.csv")


def test_binary_file_with_nul_bytes(db, workdir):
    # valid UTF-8, but NUL bytes: pandas would split lines on them and accept garbage
    (workdir / "nul.csv").write_bytes(b"a,b,class\n" + b"1,\x00\x02,x\n3,4,y\n" * 10)
    assert_rejected(db, "train file 'nul.csv' contains NUL bytes (is it a binary file?)",
                    "nul.csv")


def test_unparseable_csv(db, workdir):
    write(workdir / "ragged.csv", "a,b,class\n1,2,x\n1,2,3,4,5\n")
    assert_rejected(
        db,
        "train file 'ragged.csv' is not a readable CSV: Error tokenizing data. C error: "
        "Expected 3 fields in line 3, saw 5",
        "ragged.csv",
    )


def test_not_comma_separated(db, workdir):
    write(workdir / "semi.csv", "a;b;class\n1;2;x\n")
    assert_rejected(
        db,
        "train file 'semi.csv' has 1 column(s); it needs a class column and at least one "
        "feature column, separated by commas, but it seems to use ';'",
        "semi.csv",
    )


def test_duplicate_column_names(db, workdir):
    write(workdir / "dup.csv", "a,a,class\n" + rows("x", 5) + rows("y", 5))
    assert_rejected(db, "train file 'dup.csv' has duplicate column names: a; give every column "
                        "its own name", "dup.csv")


def test_class_column_absent_lists_the_columns(db, demo):
    path = demo("iris")
    error = assert_rejected(
        db,
        "train file 'iris.csv' has no column 'label'; columns are: sepal_length_cm, "
        "sepal_width_cm, petal_length_cm, petal_width_cm, class",
        path, class_column="label",
    )
    assert error.field == "class_column"


def test_a_single_class(db, workdir):
    write(workdir / "one.csv", "a,b,class\n" + rows("x", 12))
    assert_rejected(
        db, "train file 'one.csv' has 1 class(es) (only 'x'); classification needs at least 2",
        "one.csv",
    )


def test_a_class_with_fewer_rows_than_cv_folds(db, workdir):
    write(workdir / "few.csv", "a,b,class\n" + rows("x", 10) + rows("y", 4, 10) + rows("z", 5))
    assert_rejected(
        db,
        "train file 'few.csv': every class needs at least 5 rows for 5-fold cross-validation; "
        "too few rows for class(es) 'y' (4 rows)",
        "few.csv",
    )


def test_a_class_with_exactly_five_rows_is_enough(db, workdir):
    write(workdir / "five.csv", "a,b,class\n" + rows("x", 5) + rows("y", 5, 5))
    dataset = registry.add_dataset(db, "five.csv")
    assert (dataset.n_examples, dataset.k_classes) == (10, 2)


@pytest.fixture
def iris_split(workdir):
    """iris as a train file and a test file (every third row)."""
    with open(DEMOS / "iris.csv", newline="") as handle:
        lines = list(csv.reader(handle))
    header, body = lines[0], lines[1:]
    test = [r for i, r in enumerate(body) if i % 3 == 0]
    train = [r for i, r in enumerate(body) if i % 3 != 0]
    for name, part in (("train.csv", train), ("test.csv", test)):
        with open(workdir / name, "w", newline="") as handle:
            csv.writer(handle).writerows([header] + part)
    return header, train, test


@pytest.mark.parametrize("content, message", [
    (None, "test file 'test_bad.csv' does not exist"),
    (b"", "test file 'test_bad.csv' is empty"),
    (bytes(range(128, 256)) * 4, "test file 'test_bad.csv' is not UTF-8 text (is it a binary "
                                 "file?); save it as a UTF-8 CSV"),
    (b"sepal_length_cm,class\n", "test file 'test_bad.csv' has a header but no data rows"),
    (b"sepal_length_cm,sepal_width_cm,label\n1,2,setosa\n",
     "test file 'test_bad.csv' has no column 'class'; columns are: sepal_length_cm, "
     "sepal_width_cm, label"),
    (b"sepal_length_cm,class\n5.0,setosa\n",
     "test file 'test_bad.csv' lacks the train columns: sepal_width_cm, petal_length_cm, "
     "petal_width_cm"),
    (b"sepal_length_cm,sepal_width_cm,petal_length_cm,petal_width_cm,class\n"
     b"5.0,3.0,1.5,0.2,setosa\n5.0,3.0,1.5,0.2,tulip\n",
     "test file 'test_bad.csv' has class(es) the train file lacks: 'tulip'; a model cannot "
     "predict a class it never saw"),
])
def test_bad_test_csv(db, workdir, iris_split, content, message):
    if content is not None:
        (workdir / "test_bad.csv").write_bytes(content)
    error = assert_rejected(db, message, "train.csv", "test_bad.csv")
    assert error.field in ("test_path", "class_column")


def test_bad_name_and_description(db, demo):
    path = demo("iris")
    assert_rejected(db, "name must be at most 100 characters", path, name="n" * 101)
    assert_rejected(db, "description must be at most 1000 characters", path,
                    description="d" * 1001)


# -- metadata of good files ----------------------------------------------------------------


def expected_metadata(path, class_column="class"):
    """n_examples, k_classes, d_features, majority and size_kb, from first principles."""
    with open(path, newline="", encoding="utf-8") as handle:
        records = [r for r in csv.DictReader(handle) if r[class_column] != ""]
    counts = {}
    for record in records:
        counts[record[class_column]] = counts.get(record[class_column], 0) + 1
    d_features = 0
    for column in records[0]:
        if column == class_column:
            continue
        values = [r[column] for r in records if r[column] != ""]
        try:
            [float(v) for v in values]
            d_features += 1  # a number stays one column
        except ValueError:
            d_features += len(set(values))  # one-hot: a column per distinct string
    return {
        "n_examples": len(records),
        "k_classes": len(counts),
        "d_features": d_features,
        "majority": max(counts.values()) / len(records),
        "size_kb": max(1, round(os.path.getsize(path) / 1024)),
    }


@pytest.mark.parametrize("name, known", [
    ("iris", {"n_examples": 150, "k_classes": 3, "d_features": 4}),
    ("wine", {"n_examples": 178, "k_classes": 3, "d_features": 13}),
    ("breast_cancer", {"n_examples": 569, "k_classes": 2, "d_features": 30}),
    # island (3 values) + 4 measurements + sex (2 values) + year
    ("penguins", {"n_examples": 344, "k_classes": 3, "d_features": 10}),
])
def test_metadata_of_the_demos(db, demo, name, known):
    path = demo(name)
    dataset = registry.add_dataset(db, path)
    expected = expected_metadata(path)
    assert {k: expected[k] for k in known} == known  # the independent computation is sane
    assert dataset.name == name  # default name: the file stem
    assert dataset.train_path == str(Path(path).resolve()) and dataset.test_path is None
    assert dataset.class_column == "class"
    for key in ("n_examples", "k_classes", "d_features", "size_kb"):
        assert getattr(dataset, key) == expected[key], key
    assert dataset.majority == pytest.approx(expected["majority"])
    assert row_counts(db) == {**EMPTY, "datasets": 1}
    stored = db.get_dataset(dataset.id)
    assert (stored.name, stored.n_examples, stored.d_features) == (
        name, expected["n_examples"], expected["d_features"])


def test_name_description_class_column_and_test_path_are_kept(db, workdir, iris_split):
    with open(workdir / "train.csv") as src, open(workdir / "renamed.csv", "w") as dst:
        dst.write(src.read().replace(",class\n", ",species\n", 1))
    with open(workdir / "test.csv") as src, open(workdir / "renamed_test.csv", "w") as dst:
        dst.write(src.read().replace(",class\n", ",species\n", 1))
    dataset = registry.add_dataset(db, "renamed.csv", "renamed_test.csv", class_column="species",
                                   name="flowers", description="iris, renamed")
    assert (dataset.name, dataset.description) == ("flowers", "iris, renamed")
    assert dataset.class_column == "species"
    assert dataset.test_path == str((workdir / "renamed_test.csv").resolve())
    assert dataset.n_examples == 100  # the train rows only
    assert dataset.majority == pytest.approx(34 / 100)


def test_a_pandas_row_index_column_is_not_a_feature(db, workdir):
    with open(DEMOS / "iris.csv") as src:
        lines = src.read().splitlines()
    with open(workdir / "indexed.csv", "w") as dst:
        dst.write("," + lines[0] + "\n")
        dst.writelines(f"{i},{line}\n" for i, line in enumerate(lines[1:]))
    dataset = registry.add_dataset(db, "indexed.csv")
    assert dataset.d_features == 4


def test_rows_without_a_class_are_not_counted(db, workdir):
    write(workdir / "gaps.csv", "a,b,class\n" + rows("x", 6) + "1,2,\n3,4,\n" + rows("y", 6))
    dataset = registry.add_dataset(db, "gaps.csv")
    assert (dataset.n_examples, dataset.k_classes, dataset.majority) == (12, 2, 0.5)


def test_a_gzipped_csv_is_read(db, workdir):
    with open(DEMOS / "iris.csv", "rb") as src, gzip.open(workdir / "iris.csv.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    dataset = registry.add_dataset(db, "iris.csv.gz")
    assert (dataset.n_examples, dataset.d_features) == (150, 4)


def test_penguins_with_strings_and_missing_values_registers_and_trains(db, demo):
    from atm.data import load_dataset_frames
    from atm.model import Model, holdout_split

    path = demo("penguins")
    dataset = registry.add_dataset(db, path)
    x, y, _, _ = load_dataset_frames(dataset.train_path, None, dataset.class_column)
    assert x.isna().any().any()  # the gaps reach the model: nothing is dropped
    assert len(x) == dataset.n_examples
    x_train, x_test, y_train, y_test = holdout_split(x, y, seed=3)
    for method, params in (
        ("logreg", {"C": 1.0, "tol": 1e-4, "penalty": "l2", "dual": False,
                    "fit_intercept": True, "solver": "liblinear", "class_weight": "balanced",
                    "_scale": True}),
        ("dt", {"criterion": "gini", "max_features": 1.0, "max_depth": 5,
                "min_samples_split": 2, "min_samples_leaf": 1}),
    ):
        model = Model(method, params, "f1_macro", random_state=3)
        scores = model.train_test(x_train, y_train, x_test, y_test)
        assert 0.8 < scores["cv"] <= 1.0
        assert 0.8 < scores["test"] <= 1.0
        predicted = model.predict(x_test)
        assert set(predicted) <= {"Adelie", "Chinstrap", "Gentoo"}
        # a row that is nothing but gaps still gets a label
        blank = x_test.iloc[:1].astype(object)
        blank.loc[:, :] = None
        assert model.predict(blank).iloc[0] in {"Adelie", "Chinstrap", "Gentoo"}
