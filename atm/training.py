"""One classifier's work as a plain, picklable task: load the data, fit and score, write
the files. The worker runs it in its fit process (or in-process without a time limit)."""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from atm.artifacts import save_metrics, save_model
from atm.data import load_dataset_frames
from atm.model import Model, holdout_split

# Datasets kept in memory by a process, most recently used last.
_FRAMES: OrderedDict[tuple[Any, ...], tuple[Any, Any, Any, Any]] = OrderedDict()
MAX_CACHED_DATASETS = 4


@dataclass(frozen=True)
class FitTask:
    """Everything needed to train, score and store one classifier."""

    method: str
    params: dict[str, Any]
    judgment_metric: str
    seed: int
    train_path: str
    test_path: str | None
    class_column: str
    stem: str
    models_dir: str | None  # None: keep no files
    metrics_dir: str | None


def dataset_frames(train_path: str, test_path: str | None, class_column: str,
                   seed: int) -> tuple[Any, Any, Any, Any]:
    """Train and test features and labels; without a test file, the datarun's fixed
    stratified hold-out (same seed, same rows). Cached per process, and read again when
    a file at the same path was replaced or changed (its size or modification time)."""
    key = (train_path, _identity(train_path), test_path, _identity(test_path), class_column,
           seed)
    if key in _FRAMES:
        _FRAMES.move_to_end(key)
        return _FRAMES[key]
    x_train, y_train, x_test, y_test = load_dataset_frames(train_path, test_path, class_column)
    if x_test is None:
        x_train, x_test, y_train, y_test = holdout_split(x_train, y_train, seed)
    _FRAMES[key] = (x_train, y_train, x_test, y_test)
    while len(_FRAMES) > MAX_CACHED_DATASETS:
        _FRAMES.popitem(last=False)
    return _FRAMES[key]


def _identity(path: str | None) -> tuple[int, int] | None:
    """(size, modification time in ns) of a file, or None (loading will say what is wrong)."""
    if path is None:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def train_and_save(task: FitTask) -> tuple[dict[str, Any], str | None, str | None]:
    """Cross-validate, fit and test one classifier and write its files.

    Returns (scores, model path, metrics path); the paths are None without directories.
    """
    data = dataset_frames(task.train_path, task.test_path, task.class_column, task.seed)
    model = Model(task.method, task.params, task.judgment_metric, random_state=task.seed)
    scores = model.train_test(*data)
    if task.models_dir is None or task.metrics_dir is None:
        return scores, None, None
    return (scores, save_model(model, task.models_dir, task.stem),
            save_metrics(model, task.metrics_dir, task.stem))
