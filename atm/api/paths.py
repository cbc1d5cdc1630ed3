"""Where the server may read dataset files from, and how uploads are stored.

A client names files on the *server*; every such path must resolve (after
symlinks) inside the allowed data directories or the upload directory.
URLs are fetched only when ``allow_urls`` is set.
"""

from __future__ import annotations

import os
import re
import secrets
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from werkzeug.utils import secure_filename

from atm.api.errors import ApiError, invalid
from atm.config import Settings

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
FETCH_TIMEOUT_SECONDS = 30
CHUNK = 1 << 16


def allowed_roots(settings: Settings) -> list[Path]:
    """The resolved directories dataset files may live in (uploads included)."""
    roots = [Path(d).resolve() for d in settings.data_dirs]
    return roots + [upload_root(settings)]


def upload_root(settings: Settings) -> Path:
    return Path(settings.upload_dir).resolve()


def is_url(text: str) -> bool:
    return bool(_URL.match(text))


def resolve_data_path(raw: str, settings: Settings, field: str) -> Path:
    """The real path of a server-side file named by a client, or a 400 saying why not."""
    if is_url(raw):
        raise invalid(f"{field} {raw!r} is a URL; this server does not fetch URLs "
                      "(start it with allow_urls enabled, or upload the file)", field)
    if not raw.strip():
        raise invalid(f"{field} must not be empty", field)
    resolved = Path(raw).resolve()
    roots = allowed_roots(settings)
    if not any(resolved.is_relative_to(root) for root in roots):
        raise invalid(
            f"{field} {raw!r} resolves to {str(resolved)!r}, outside the allowed data "
            f"directories ({', '.join(str(r) for r in roots)}); copy the file there or "
            "upload it", field)
    return resolved


def unique_upload_path(settings: Settings, filename: str | None) -> Path:
    """A fresh file name in the upload directory, keeping the client's name readable."""
    name = secure_filename(filename or "") or "upload.csv"
    root = upload_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    return root / f"{secrets.token_hex(4)}-{name}"


def save_stream(stream: IO[bytes], target: Path, max_bytes: int) -> None:
    """Copy a stream to ``target``; 413 (and nothing kept) past ``max_bytes``."""
    written = 0
    try:
        with open(target, "wb") as handle:
            while chunk := stream.read(CHUNK):
                written += len(chunk)
                if written > max_bytes:
                    raise ApiError(413, f"the file is larger than the upload limit of "
                                        f"{max_bytes / 1e6:g} MB")
                handle.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def fetch_url(url: str, settings: Settings, field: str) -> Path:
    """Download a dataset URL into the upload directory (only with ``allow_urls``)."""
    if not url.lower().startswith(("http://", "https://")):
        raise invalid(f"{field} {url!r}: only http and https URLs can be fetched", field)
    target = unique_upload_path(settings, os.path.basename(url.split("?")[0]))
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_SECONDS) as response:
            save_stream(response, target, int(settings.max_upload_mb * 1e6))
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise invalid(f"{field} {url!r} could not be fetched: {e}", field) from None
    return target
