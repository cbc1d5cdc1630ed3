"""Helpers for tests that drive real ATM processes (not a test module)."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ATM_EXE = str(Path(sys.executable).parent / "atm")
GATE_ENV = "ATM_TEST_GATE"

# A decision tree whose fit waits while a gate file exists: it holds a classifier in the
# middle of its fit for as long as a test needs (to kill its worker, to cut the database).
GATED_MODULE = textwrap.dedent(f"""
    import os
    import time

    from sklearn.tree import DecisionTreeClassifier


    class GatedTree(DecisionTreeClassifier):
        def fit(self, X, y, **kwargs):
            while os.path.exists(os.environ["{GATE_ENV}"]):
                time.sleep(0.05)
            return super().fit(X, y, **kwargs)
""")
GATED_METHOD = {
    "name": "gated",
    "class": "gated.GatedTree",
    "hyperparameters": {"max_depth": {"type": "int", "range": [2, 6]}},
    "root_hyperparameters": ["max_depth"],
}


def write_gated_method(folder: Path) -> tuple[Path, Path, dict[str, str]]:
    """Write the gated method into ``folder`` with its gate closed. Returns the method file,
    the gate file (delete it to let fits finish) and the environment workers need. Put
    ``folder`` on ``sys.path`` while registering a datarun (registering imports the class)."""
    (folder / "gated.py").write_text(GATED_MODULE)
    method = folder / "gated.json"
    method.write_text(json.dumps(GATED_METHOD))
    gate = folder / "gate"
    gate.touch()
    return method, gate, {"PYTHONPATH": str(folder), GATE_ENV: str(gate)}


def wait_for(condition: Callable[[], Any], timeout: float = 120.0,
             what: str = "condition") -> Any:
    """Poll until ``condition()`` is truthy and return it; fail the test (not hang) after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")
