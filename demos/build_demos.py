"""Build the demo CSVs from datasets that ship inside installed packages.

    python demos/build_demos.py

Writes iris, wine, breast_cancer (scikit-learn) and penguins (palmerpenguins:
string features and missing values) with a ``class`` column, into
``demos/`` and ``atm/demos/`` (shipped in the package, copied out by
``atm get_demos``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sklearn import datasets

HERE = Path(__file__).resolve().parent
TARGETS = (HERE, HERE.parent / "atm" / "demos")


def _from_sklearn(loader) -> pd.DataFrame:
    bunch = loader(as_frame=True)
    frame = bunch.frame.rename(columns={"target": "class"})
    names = list(bunch.target_names)
    frame["class"] = [names[i] for i in frame["class"]]
    frame.columns = [c.replace(" ", "_").replace("(", "").replace(")", "").replace("/", "_")
                     for c in frame.columns]
    return frame


def _penguins() -> pd.DataFrame:
    from palmerpenguins import load_penguins

    frame = load_penguins()
    # Keep the rows without a species label out; keep every other gap (NaN).
    frame = frame.rename(columns={"species": "class"})
    frame = frame[["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm",
                   "body_mass_g", "sex", "year", "class"]]
    return frame


def main() -> None:
    frames = {
        "iris": _from_sklearn(datasets.load_iris),
        "wine": _from_sklearn(datasets.load_wine),
        "breast_cancer": _from_sklearn(datasets.load_breast_cancer),
        "penguins": _penguins(),
    }
    for target in TARGETS:
        target.mkdir(parents=True, exist_ok=True)
        for name, frame in frames.items():
            frame.to_csv(target / f"{name}.csv", index=False)
    for name, frame in frames.items():
        print(f"{name}.csv: {len(frame)} rows, {frame.shape[1] - 1} features, "
              f"{frame['class'].nunique()} classes")


if __name__ == "__main__":
    main()
