"""The Python API: ``ATM`` ties the database, the registry and the worker together.

    from atm import ATM
    atm = ATM(sql_url="sqlite:///atm.db")
    run = atm.run("demos/iris.csv", budget=50)
    run.describe(); run.get_best_classifier(); run.export_best_classifier("best.model")
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from atm import constants as C
from atm import registry
from atm.database import Database
from atm.exceptions import InvalidInputError, NotFoundError
from atm.model import Model
from atm.models import Classifier, Datarun, Dataset
from atm.worker import Worker, WorkerOptions


class DatarunView:
    """A datarun row plus helpers to read its results (attributes pass through)."""

    def __init__(self, atm: ATM, datarun_id: int) -> None:
        self._atm = atm
        self.id = datarun_id

    @property
    def row(self) -> Datarun:
        return self._atm.db.get_datarun(self.id)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.row, name)

    def __repr__(self) -> str:
        row = self.row
        return f"<Datarun {row.id} {row.description} status={row.status}>"

    @property
    def completed_classifiers(self) -> list[Classifier]:
        return self._atm.db.get_classifiers(self.id, [C.CLASSIFIER_COMPLETE])

    def get_scores(self) -> pd.DataFrame:
        """The complete classifiers' scores, best cv first, with their rank."""
        rows = [{
            "id": c.id,
            "cv_judgment_metric": c.cv_judgment_metric,
            "cv_judgment_metric_stdev": c.cv_judgment_metric_stdev,
            "test_judgment_metric": c.test_judgment_metric,
        } for c in self.completed_classifiers]
        frame = pd.DataFrame(rows, columns=["id", "cv_judgment_metric",
                                            "cv_judgment_metric_stdev", "test_judgment_metric"])
        # ties go to the older classifier, as in get_best_classifier
        frame = frame.sort_values(["cv_judgment_metric", "id"], ascending=[False, True],
                                  na_position="last")
        frame["rank"] = range(1, len(frame) + 1)
        return frame.set_index("id")

    def get_best_classifier(self) -> Classifier | None:
        return self._atm.db.get_best_classifier(self.id, self.row.score_target)

    def describe(self) -> str:
        """A short text summary of the run and its best classifier (also printed)."""
        row = self.row
        counts = self._atm.db.count_classifiers(self.id)
        best = self.get_best_classifier()
        lines = [
            f"Datarun {row.id} on dataset {row.dataset_id} ({row.dataset.name}): {row.status}",
            f"  tuner {row.tuner}, selector {row.selector}, metric {row.metric}, "
            f"target {row.score_target}",
            f"  budget {row.budget} {row.budget_type}; classifiers: "
            f"{counts[C.CLASSIFIER_COMPLETE]} complete, {counts[C.CLASSIFIER_ERRORED]} errored, "
            f"{counts[C.CLASSIFIER_RUNNING]} running",
        ]
        if best is not None:
            lines.append(f"  best classifier {best.id}: {row.score_target} "
                         f"{getattr(best, row.score_target):.4f}")
        text = "\n".join(lines)
        print(text)
        return text

    def export_best_classifier(self, path: str | os.PathLike, force: bool = False) -> Path:
        """Copy the best classifier's model file to ``path`` (refuses to overwrite)."""
        best = self.get_best_classifier()
        if best is None or not best.model_location:
            raise NotFoundError(f"datarun {self.id} has no complete classifier with a model file")
        target = Path(path)
        if target.exists() and not force:
            raise InvalidInputError(f"{str(target)!r} exists; pass force=True to overwrite it")
        shutil.copyfile(best.model_location, target)
        return target


class ATM:
    """Entry point of the Python API."""

    def __init__(self, sql_url: str = "sqlite:///atm.db", models_dir: str = "models",
                 metrics_dir: str = "metrics", **worker_options: Any) -> None:
        self.db = Database(sql_url)
        self.options = WorkerOptions(models_dir=models_dir, metrics_dir=metrics_dir,
                                     **worker_options)

    def add_dataset(self, train_path: str, test_path: str | None = None,
                    name: str | None = None, description: str | None = None,
                    class_column: str = "class") -> Dataset:
        return registry.add_dataset(self.db, train_path, test_path, class_column, name,
                                    description)

    def add_datarun(self, dataset_id: int, **options: Any) -> DatarunView:
        run = registry.add_datarun(self.db, dataset_id, **options)
        return DatarunView(self, run.id)

    def work(self, datarun_ids: Sequence[int] | None = None, wait: bool = False,
             total_time: float | None = None, max_classifiers: int | None = None) -> int:
        """Run a worker in this process; returns how many classifiers it trained."""
        worker = Worker(self.db, self.options, datarun_ids)
        return worker.run(wait=wait, total_time=total_time, max_classifiers=max_classifiers)

    def run(self, train_path: str, test_path: str | None = None, name: str | None = None,
            description: str | None = None, class_column: str = "class",
            **options: Any) -> DatarunView:
        """Register a dataset, start a datarun on it and work it to the end."""
        dataset = self.add_dataset(train_path, test_path, name, description, class_column)
        run = self.add_datarun(dataset.id, **options)
        self.work([run.id])
        return run

    def get_datarun(self, datarun_id: int) -> DatarunView:
        self.db.get_datarun(datarun_id)
        return DatarunView(self, datarun_id)

    def load_model(self, classifier_id: int) -> Model:
        classifier = self.db.get_classifier(classifier_id)
        if not classifier.model_location:
            raise NotFoundError(f"classifier {classifier_id} has no model file "
                                f"(status {classifier.status})")
        return Model.load(classifier.model_location)
