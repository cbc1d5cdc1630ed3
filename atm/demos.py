"""The demo datasets shipped inside the package (``atm/demos/*.csv``)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from atm.data import summarize_dataset
from atm.exceptions import InvalidInputError


@dataclass(frozen=True)
class Demo:
    """One demo CSV copied to disk, with what ATM will record about it."""

    path: Path
    rows: int
    features: int
    classes: int
    copied: bool  # False: a file of that name was already there and was kept
    problem: str | None = None  # why a kept file is not a usable dataset


def demo_names() -> list[str]:
    """File names of the bundled demo CSVs."""
    folder = resources.files("atm") / "demos"
    return sorted(item.name for item in folder.iterdir() if item.name.endswith(".csv"))


def copy_demos(target: str | Path = "demos", overwrite: bool = False) -> list[Demo]:
    """Copy the bundled demo CSVs into ``target`` and describe each one."""
    folder = Path(target)
    folder.mkdir(parents=True, exist_ok=True)
    demos = []
    for name in demo_names():
        destination = folder / name
        copied = overwrite or not destination.exists()
        if copied:
            with resources.as_file(resources.files("atm") / "demos" / name) as source:
                shutil.copyfile(source, destination)
        try:
            summary = summarize_dataset(str(destination))
        except InvalidInputError as e:  # only a kept file of the user's can be unusable
            demos.append(Demo(destination, 0, 0, 0, copied, str(e)))
            continue
        demos.append(Demo(destination, summary.n_examples, summary.d_features,
                          summary.k_classes, copied))
    return demos


__all__ = ["Demo", "copy_demos", "demo_names"]
