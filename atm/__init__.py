"""ATM (Auto Tune Models): collaborative, multi-worker AutoML over a shared SQL database."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.3.0.dev0"

__all__ = ["ATM", "DatarunView", "Model", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from atm.core import ATM, DatarunView
    from atm.model import Model


def __getattr__(name: str) -> Any:
    # Imported on first use: `atm status` or a claim loop need no scikit-learn.
    if name in ("ATM", "DatarunView"):
        from atm import core

        return getattr(core, name)
    if name == "Model":
        from atm.model import Model

        return Model
    raise AttributeError(f"module 'atm' has no attribute {name!r}")
