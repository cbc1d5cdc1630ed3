"""Typed settings: defaults < config file (YAML) < ``ATM_*`` environment < flags."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from atm.constants import MAX_DECOMPRESSED_MB
from atm.exceptions import InvalidInputError

ENV_PREFIX = "ATM_"


@dataclass
class Settings:
    """Every setting of an ATM process, with its default."""

    sql_url: str = "sqlite:///atm.db"
    models_dir: str = "models"
    metrics_dir: str = "metrics"
    log_file: str = "atm.log"
    log_level: str = "INFO"
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 1
    # REST server processes `atm start` runs on the one port: one process is bound by its
    # interpreter lock to one core. Threads per process: more than 2 wait on that lock and
    # lengthen the slowest answers (p99 31-39 ms with 2, 43-58 ms with 4: BENCHMARKS.md).
    server_processes: int = 2
    server_threads: int = 2
    pid: str = "atm.pid"
    # Seconds between heartbeats of a running classifier, and how old a heartbeat
    # may get before another worker declares the classifier lost.
    heartbeat_interval: float = 5.0
    heartbeat_grace: float = 60.0
    # Seconds a worker sleeps when there is nothing to do (with --wait).
    poll_interval: float = 0.5
    # Seconds one classifier may take (cross-validation, final fit, files); past it the
    # fit is stopped and the classifier errored. 0: no limit (and no child process).
    classifier_timeout: float = 900.0
    verbose_metrics: bool = False
    # REST API
    data_dirs: list[str] = field(default_factory=lambda: ["."])
    upload_dir: str = "uploads"
    max_upload_mb: float = 100.0
    # a compressed dataset file (.gz, .bz2, .xz, .zip, .zst, .tar) may hold at most this
    # many MB of CSV once decompressed, whichever way it arrives (CLI, JSON path, upload)
    max_decompressed_mb: float = MAX_DECOMPRESSED_MB
    allow_urls: bool = False
    api_token: str | None = None
    protect_reads: bool = False
    cors_origins: list[str] = field(default_factory=list)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (unknown names are an error)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(name: str, kind: Any, raw: Any) -> Any:
    """Turn a raw (string or YAML) value into the field's type, or raise."""
    kind = str(kind)
    if raw is None:
        return None
    try:
        if kind.startswith("list"):
            if isinstance(raw, str):
                return [part.strip() for part in raw.split(",") if part.strip()]
            return [str(item) for item in raw]
        if kind.startswith("bool"):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"setting {name!r} must be of type {kind}, got {raw!r}", field=name
        ) from None


def _field_types() -> dict[str, Any]:
    return {f.name: f.type for f in fields(Settings)}


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML config file into a dict of known settings."""
    file = Path(path)
    if not file.is_file():
        raise InvalidInputError(f"config file {str(file)!r} does not exist", field="config")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as e:
        raise InvalidInputError(f"config file {str(file)!r} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise InvalidInputError(f"config file {str(file)!r} must hold a mapping of settings")
    known = _field_types()
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise InvalidInputError(
            f"config file {str(file)!r} has unknown settings: {', '.join(unknown)}; "
            f"known settings are: {', '.join(sorted(known))}"
        )
    return {k: _coerce(k, known[k], v) for k, v in data.items()}


def read_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Settings given as ``ATM_<NAME>`` environment variables."""
    environ = os.environ if environ is None else environ
    known = _field_types()
    found = {}
    for name, kind in known.items():
        key = ENV_PREFIX + name.upper()
        if key in environ:
            found[name] = _coerce(name, kind, environ[key])
    return found


def load_settings(
    config_file: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build settings from a file, then the environment, then explicit overrides.

    ``overrides`` holds command-line values; ``None`` values mean "not given".
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_file = config_file or environ.get(ENV_PREFIX + "CONFIG")
    if config_file:
        values.update(read_config_file(config_file))
    values.update(read_environment(environ))
    known = _field_types()
    for key, value in (overrides or {}).items():
        if value is not None and key in known:
            values[key] = _coerce(key, known[key], value)
    return Settings(**values)


def write_default_config(path: str | os.PathLike) -> Path:
    """Write every setting with its default to a YAML file."""
    file = Path(path)
    text = "# ATM settings; precedence: this file < ATM_* environment < command-line flags\n"
    text += yaml.safe_dump(Settings().as_dict(), sort_keys=False)
    file.write_text(text)
    return file
