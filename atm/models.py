"""The ModelHub tables as SQLAlchemy declarative models.

Column names are a public contract: they are served as-is by the REST API and
match the original ATM. No Flask and no scikit-learn here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from atm import constants as C

# Times are UTC from the database clock, to the second. On SQLite they are stored
# in the same text form as CURRENT_TIMESTAMP so that comparisons are exact.
UTCDateTime = DateTime().with_variant(
    sqlite.DATETIME(
        storage_format="%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d"
    ),
    "sqlite",
)

# TEXT on MySQL stops at 64 KiB; tracebacks and big JSON need more.
LongText = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")


class Base(DeclarativeBase):
    """Declarative base of the four ModelHub tables."""


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    description: Mapped[str | None] = mapped_column(String(1000))
    train_path: Mapped[str] = mapped_column(String(500), nullable=False)
    test_path: Mapped[str | None] = mapped_column(String(500))
    class_column: Mapped[str] = mapped_column(String(100), nullable=False)
    n_examples: Mapped[int] = mapped_column(Integer, nullable=False)
    k_classes: Mapped[int] = mapped_column(Integer, nullable=False)
    d_features: Mapped[int] = mapped_column(Integer, nullable=False)
    majority: Mapped[float] = mapped_column(Float, nullable=False)
    size_kb: Mapped[int] = mapped_column(Integer, nullable=False)

    dataruns: Mapped[list[Datarun]] = relationship(
        back_populates="dataset", order_by="Datarun.id"
    )


class Datarun(Base):
    __tablename__ = "dataruns"
    __table_args__ = (Index("ix_dataruns_status_priority", "status", "priority"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), nullable=False)
    description: Mapped[str] = mapped_column(String(200), nullable=False)
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    selector: Mapped[str] = mapped_column(String(200), nullable=False)
    tuner: Mapped[str] = mapped_column(String(200), nullable=False)
    k_window: Mapped[int] = mapped_column(Integer, nullable=False)
    r_minimum: Mapped[int] = mapped_column(Integer, nullable=False)
    gridding: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    budget_type: Mapped[str] = mapped_column(String(20), nullable=False)
    budget: Mapped[int] = mapped_column(Integer, nullable=False)
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime)
    metric: Mapped[str] = mapped_column(String(20), nullable=False)
    score_target: Mapped[str] = mapped_column(String(40), nullable=False)
    status: Mapped[str] = mapped_column(
        String(20), nullable=False, default=C.DATARUN_PENDING
    )
    start_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Budget slots reserved so far (compare-and-set counter, DESIGN.md §3.2).
    n_started: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # Seed of the fixed stratified hold-out shared by every classifier of the run.
    random_seed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    dataset: Mapped[Dataset] = relationship(back_populates="dataruns")
    hyperpartitions: Mapped[list[Hyperpartition]] = relationship(
        back_populates="datarun", order_by="Hyperpartition.id"
    )
    classifiers: Mapped[list[Classifier]] = relationship(
        back_populates="datarun", order_by="Classifier.id"
    )


class Hyperpartition(Base):
    __tablename__ = "hyperpartitions"
    __table_args__ = (Index("ix_hyperpartitions_run_status", "datarun_id", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    datarun_id: Mapped[int] = mapped_column(ForeignKey("dataruns.id"), nullable=False)
    method: Mapped[str] = mapped_column(String(255), nullable=False)
    # JSON lists of [name, value] / [name, spec] pairs, readable by any client.
    categorical_hyperparameters: Mapped[list] = mapped_column(JSON, nullable=False)
    constant_hyperparameters: Mapped[list] = mapped_column(JSON, nullable=False)
    tunable_hyperparameters: Mapped[list] = mapped_column(JSON, nullable=False)
    status: Mapped[str] = mapped_column(
        String(20), nullable=False, default=C.PARTITION_INCOMPLETE
    )

    datarun: Mapped[Datarun] = relationship(back_populates="hyperpartitions")
    classifiers: Mapped[list[Classifier]] = relationship(
        back_populates="hyperpartition", order_by="Classifier.id"
    )

    @property
    def categoricals(self) -> list[tuple[str, Any]]:
        return [(name, value) for name, value in self.categorical_hyperparameters or []]

    @property
    def constants(self) -> list[tuple[str, Any]]:
        return [(name, value) for name, value in self.constant_hyperparameters or []]

    @property
    def tunables(self) -> list[tuple[str, dict]]:
        return [(name, spec) for name, spec in self.tunable_hyperparameters or []]


class Classifier(Base):
    __tablename__ = "classifiers"
    __table_args__ = (
        Index("ix_classifiers_run_status", "datarun_id", "status"),
        Index("ix_classifiers_partition_status", "hyperpartition_id", "status"),
        Index("ix_classifiers_status_heartbeat", "status", "heartbeat_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    datarun_id: Mapped[int] = mapped_column(ForeignKey("dataruns.id"), nullable=False)
    hyperpartition_id: Mapped[int] = mapped_column(
        ForeignKey("hyperpartitions.id"), nullable=False
    )
    host: Mapped[str | None] = mapped_column(String(255))
    model_location: Mapped[str | None] = mapped_column(String(500))
    metrics_location: Mapped[str | None] = mapped_column(String(500))
    hyperparameter_values: Mapped[dict] = mapped_column(JSON, nullable=False)
    cv_judgment_metric: Mapped[float | None] = mapped_column(Float)
    cv_judgment_metric_stdev: Mapped[float | None] = mapped_column(Float)
    test_judgment_metric: Mapped[float | None] = mapped_column(Float)
    start_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    error_message: Mapped[str | None] = mapped_column(LongText)
    # What the claim protocol needs (DESIGN.md §3.3).
    worker_id: Mapped[str | None] = mapped_column(String(100))
    pid: Mapped[int | None] = mapped_column(Integer)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    datarun: Mapped[Datarun] = relationship(back_populates="classifiers")
    hyperpartition: Mapped[Hyperpartition] = relationship(back_populates="classifiers")

    @property
    def mu_sigma_judgment_metric(self) -> float | None:
        return mu_sigma(self.cv_judgment_metric, self.cv_judgment_metric_stdev)


def mu_sigma(cv: float | None, cv_stdev: float | None) -> float | None:
    """The ``mu_sigma`` score target: the cross-validation mean minus two deviations."""
    if cv is None or cv_stdev is None:
        return None
    return cv - 2 * cv_stdev


TABLES: dict[str, type[Base]] = {
    "datasets": Dataset,
    "dataruns": Datarun,
    "hyperpartitions": Hyperpartition,
    "classifiers": Classifier,
}
