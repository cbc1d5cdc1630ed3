"""Model and metrics files: unique names, written to a temporary name and renamed.

A reader never sees a half-written file: either the final name does not exist
yet or it holds the whole content.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from atm.exceptions import StorageError
from atm.model import Model


def _slug(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9 _-]+", "", name).strip().replace(" ", "_")
    return cleaned[:60] or "dataset"


def artifact_stem(dataset_name: str, datarun_id: int, classifier_id: int) -> str:
    """``<dataset>-<datarun>-<classifier>``: unique per classifier (the original
    named files by a hash of the parameters, so equal parameters overwrote)."""
    return f"{_slug(dataset_name)}-{datarun_id}-{classifier_id}"


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        try:
            os.unlink(handle.name)
        except OSError:
            pass
        raise


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item"):
        return _json_safe(value.item())
    return value


def save_model(model: Model, models_dir: str | os.PathLike, stem: str) -> str:
    path = Path(models_dir) / f"{stem}.model"
    try:
        _atomic_write(path, lambda handle: handle.write(_pickled(model)))
    except OSError as e:
        raise StorageError(f"cannot write model file {str(path)!r}: {e.strerror or e}") from e
    return str(path)


def _pickled(model: Model) -> bytes:
    import pickle

    return pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)


def save_metrics(model: Model, metrics_dir: str | os.PathLike, stem: str) -> str:
    path = Path(metrics_dir) / f"{stem}.metric"
    payload = json.dumps(_json_safe({"cv": model.cv_scores, "test": model.test_scores}),
                         indent=1).encode()
    try:
        _atomic_write(path, lambda handle: handle.write(payload))
    except OSError as e:
        raise StorageError(f"cannot write metrics file {str(path)!r}: {e.strerror or e}") from e
    return str(path)


def remove_partial_files(stem: str, *directories: str | os.PathLike) -> None:
    """Delete what an interrupted write of ``stem``'s files left (final names included:
    a classifier that did not complete has no files)."""
    for directory in directories:
        folder = Path(directory)
        if not folder.is_dir():
            continue
        for path in folder.glob(f"*{stem}.*"):
            if path.name.startswith((f".{stem}.", f"{stem}.")):
                try:
                    path.unlink()
                except OSError:
                    pass


def load_metrics(path: str | os.PathLike) -> dict[str, Any]:
    with open(path) as handle:
        return json.load(handle)
