"""ATM (Auto Tune Models): collaborative, multi-worker AutoML over a shared SQL database."""

from atm.core import ATM, DatarunView
from atm.model import Model

__version__ = "0.3.0.dev0"

__all__ = ["ATM", "DatarunView", "Model", "__version__"]
