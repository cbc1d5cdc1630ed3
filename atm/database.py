"""Every SQL statement ATM issues, and the claim protocol that keeps workers honest.

One :class:`Database` per process (engines are built lazily and rebuilt after a
fork). State changes are compare-and-set updates whose row count says who won;
losing a race is a normal ``False`` return, never an error (DESIGN.md §3).
"""

from __future__ import annotations

import enum
import functools
import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import and_, case, create_engine, event, func, or_, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, joinedload, selectinload, sessionmaker
from sqlalchemy.pool import StaticPool

from atm import constants as C
from atm.exceptions import DatabaseUnavailableError, NotFoundError
from atm.models import Base, Classifier, Datarun, Dataset, Hyperpartition

LOGGER = logging.getLogger(__name__)

T = TypeVar("T")

MAX_ATTEMPTS = 8
RETRY_BASE_SECONDS = 0.05
RETRY_MAX_SECONDS = 2.0


def _is_transient(error: DBAPIError) -> bool:
    """Locked SQLite files, deadlocks and dropped connections are worth a retry."""
    if error.connection_invalidated:
        return True
    if isinstance(error, OperationalError):
        return True
    text = str(error.orig).lower() if error.orig is not None else ""
    return "deadlock" in text or "lock wait timeout" in text


def retrying(method: Callable[..., T]) -> Callable[..., T]:
    """Retry a whole transaction on transient errors, with jittered back-off."""

    @functools.wraps(method)
    def wrapper(self: Database, *args: Any, **kwargs: Any) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                return method(self, *args, **kwargs)
            except DBAPIError as e:
                if not _is_transient(e) or attempt >= self.max_attempts:
                    raise DatabaseUnavailableError(
                        f"database operation {method.__name__} failed after "
                        f"{attempt} attempt(s): {e.orig if e.orig is not None else e}"
                    ) from e
                delay = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.5)
                LOGGER.debug("retrying %s in %.3fs after %s", method.__name__, delay, e.orig)
                time.sleep(delay)

    return wrapper


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide where transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Any) -> None:
        # Writers take the lock up front, so a read-then-write transaction can
        # never fail half-way on a lock upgrade.
        if conn.get_execution_options().get("sqlite_immediate"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


def _configure_utc(engine: Engine, statement: str) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(statement)
        cursor.close()
        dbapi_connection.commit()


def build_engine(url: str) -> Engine:
    """An engine configured for concurrent workers on the given backend."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        kwargs: dict[str, Any] = {"connect_args": {"timeout": 30, "check_same_thread": False}}
        if parsed.database in (None, "", ":memory:"):
            kwargs["poolclass"] = StaticPool
        engine = create_engine(parsed, **kwargs)
        _configure_sqlite(engine)
        return engine
    if backend == "mysql" and parsed.drivername == "mysql":
        parsed = parsed.set(drivername="mysql+pymysql")
    if backend == "postgresql" and parsed.drivername == "postgres":
        parsed = parsed.set(drivername="postgresql")
    # A server that does not answer a connection attempt fails it in 10 s (pymysql's
    # default too), so retries and 503s happen instead of an endless wait.
    connect_args = {"connect_timeout": 10} if backend == "postgresql" else {}
    engine = create_engine(parsed, pool_pre_ping=True, pool_recycle=1800,
                           connect_args=connect_args)
    if backend == "postgresql":
        _configure_utc(engine, "SET TIME ZONE 'UTC'")
    elif backend in ("mysql", "mariadb"):
        _configure_utc(engine, "SET time_zone = '+00:00'")
    return engine


def score_of(classifier: Classifier, score_target: str) -> float | None:
    """The classifier's value of a score target column (``*_judgment_metric``)."""
    return getattr(classifier, score_target)


class Database:
    """The ModelHub: the shared SQL database of datasets, runs and classifiers."""

    def __init__(self, url: str = "sqlite:///atm.db", create: bool = True,
                 max_attempts: int = MAX_ATTEMPTS) -> None:
        self.url = url
        self.max_attempts = max_attempts
        self._engine: Engine | None = None
        self._sessionmaker: sessionmaker[Session] | None = None
        self._pid = -1
        if create:
            self.create_schema()

    # -- plumbing -------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """This process's engine (rebuilt after a fork: connections never cross one)."""
        if self._engine is None or self._pid != os.getpid():
            if self._engine is not None:
                self._engine.dispose(close=False)
            self._engine = build_engine(self.url)
            self._sessionmaker = sessionmaker(self._engine, expire_on_commit=False)
            self._pid = os.getpid()
        return self._engine

    @property
    def backend(self) -> str:
        return self.engine.url.get_backend_name()

    @contextmanager
    def session_scope(self, write: bool = False) -> Iterator[Session]:
        """A session that commits on success, rolls back on error and always closes."""
        self.engine  # noqa: B018 - builds the sessionmaker for this process
        assert self._sessionmaker is not None
        session = self._sessionmaker()
        try:
            if write and self.backend == "sqlite":
                session.connection(execution_options={"sqlite_immediate": True})
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @retrying
    def create_schema(self) -> None:
        """Create the four tables and their indexes where they do not exist."""
        Base.metadata.create_all(self.engine)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    @retrying
    def now(self) -> datetime:
        """The database clock (UTC, naive), the only clock heartbeats use."""
        with self.session_scope() as session:
            return _db_now(session)

    # -- finders --------------------------------------------------------------

    @staticmethod
    def _get_or_raise(session: Session, model: type, row_id: int, options: Sequence = ()) -> Any:
        row = session.get(model, row_id, options=list(options))
        if row is None:
            raise NotFoundError(f"{model.__tablename__[:-1]} {row_id} does not exist")
        return row

    @retrying
    def get_dataset(self, dataset_id: int) -> Dataset:
        with self.session_scope() as session:
            return self._get_or_raise(session, Dataset, dataset_id)

    @retrying
    def get_datarun(self, datarun_id: int) -> Datarun:
        with self.session_scope() as session:
            return self._get_or_raise(
                session, Datarun, datarun_id, [selectinload(Datarun.dataset)]
            )

    @retrying
    def get_hyperpartition(self, hyperpartition_id: int) -> Hyperpartition:
        with self.session_scope() as session:
            return self._get_or_raise(session, Hyperpartition, hyperpartition_id)

    @retrying
    def get_classifier(self, classifier_id: int) -> Classifier:
        with self.session_scope() as session:
            return self._get_or_raise(
                session, Classifier, classifier_id,
                [selectinload(Classifier.datarun).selectinload(Datarun.dataset),
                 selectinload(Classifier.hyperpartition)],
            )

    @retrying
    def get_dataruns(self, statuses: Sequence[str] | None = None,
                     ids: Sequence[int] | None = None) -> list[Datarun]:
        """Dataruns by status and id, highest priority first, then oldest first."""
        with self.session_scope() as session:
            query = select(Datarun).options(joinedload(Datarun.dataset))
            if statuses is not None:
                query = query.where(Datarun.status.in_(list(statuses)))
            if ids is not None:
                query = query.where(Datarun.id.in_(list(ids)))
            query = query.order_by(Datarun.priority.desc(), Datarun.id.asc())
            return list(session.scalars(query))

    def get_unfinished_dataruns(self, ids: Sequence[int] | None = None) -> list[Datarun]:
        return self.get_dataruns(C.UNFINISHED_DATARUN_STATUSES, ids)

    @retrying
    def get_hyperpartitions(self, datarun_id: int,
                            statuses: Sequence[str] | None = None) -> list[Hyperpartition]:
        with self.session_scope() as session:
            query = select(Hyperpartition).where(Hyperpartition.datarun_id == datarun_id)
            if statuses is not None:
                query = query.where(Hyperpartition.status.in_(list(statuses)))
            return list(session.scalars(query.order_by(Hyperpartition.id)))

    @retrying
    def get_classifiers(self, datarun_id: int | None = None,
                        statuses: Sequence[str] | None = None,
                        hyperpartition_id: int | None = None) -> list[Classifier]:
        with self.session_scope() as session:
            query = select(Classifier)
            if datarun_id is not None:
                query = query.where(Classifier.datarun_id == datarun_id)
            if hyperpartition_id is not None:
                query = query.where(Classifier.hyperpartition_id == hyperpartition_id)
            if statuses is not None:
                query = query.where(Classifier.status.in_(list(statuses)))
            return list(session.scalars(query.order_by(Classifier.id)))

    @retrying
    def count_classifiers(self, datarun_id: int) -> dict[str, int]:
        """Classifiers of a datarun by status (every status present, zeros included)."""
        with self.session_scope() as session:
            rows = session.execute(
                select(Classifier.status, func.count())
                .where(Classifier.datarun_id == datarun_id)
                .group_by(Classifier.status)
            ).all()
        counts = {status: 0 for status in C.CLASSIFIER_STATUSES}
        counts.update({status: n for status, n in rows})
        return counts

    @retrying
    def recent_storage_failures(self, minutes: float) -> tuple[int, Classifier | None]:
        """Classifiers handed back in the last ``minutes`` (database clock) because their
        files could not be written: how many, and the latest one (None if none)."""
        with self.session_scope() as session:
            cutoff = _db_now(session) - timedelta(minutes=minutes)
            recent = (Classifier.status == C.CLASSIFIER_ERRORED,
                      Classifier.error_message.startswith(C.STORAGE_ERROR_PREFIX),
                      Classifier.end_time >= cutoff)
            count = session.scalar(select(func.count()).select_from(Classifier).where(*recent))
            latest = session.scalars(
                select(Classifier).where(*recent)
                .order_by(Classifier.end_time.desc(), Classifier.id.desc()).limit(1)
            ).first()
        return count or 0, latest

    # -- creators -------------------------------------------------------------

    @retrying
    def create_dataset(self, **fields: Any) -> Dataset:
        with self.session_scope(write=True) as session:
            dataset = Dataset(**fields)
            session.add(dataset)
            session.flush()
            return dataset

    @retrying
    def create_datarun(self, partitions: Sequence[dict[str, Any]], **fields: Any) -> Datarun:
        """Insert a datarun and its hyperpartitions in one transaction."""
        with self.session_scope(write=True) as session:
            self._get_or_raise(session, Dataset, fields["dataset_id"])
            datarun = Datarun(**fields)
            session.add(datarun)
            session.flush()
            session.add_all(
                Hyperpartition(datarun_id=datarun.id, **partition) for partition in partitions
            )
            session.flush()
            session.refresh(datarun, ["hyperpartitions"])
            return datarun

    # -- datarun state --------------------------------------------------------

    @retrying
    def mark_datarun_running(self, datarun_id: int) -> bool:
        """pending -> running (sets start_time and, for walltime runs, the deadline)."""
        with self.session_scope(write=True) as session:
            run = self._get_or_raise(session, Datarun, datarun_id)
            if run.status != C.DATARUN_PENDING:
                return False
            now = _db_now(session)
            values: dict[str, Any] = {"status": C.DATARUN_RUNNING, "start_time": now}
            if run.budget_type == C.BUDGET_WALLTIME and run.deadline is None:
                values["deadline"] = now + timedelta(minutes=run.budget)
            result = session.execute(
                update(Datarun)
                .where(Datarun.id == datarun_id, Datarun.status == C.DATARUN_PENDING)
                .values(**values)
            )
            return result.rowcount == 1

    @retrying
    def complete_datarun_if_done(self, datarun_id: int) -> bool:
        """Mark a datarun complete once its budget or partitions are used up and
        nothing of it still runs. True only for the caller that made the change."""
        with self.session_scope(write=True) as session:
            if _finish_run_if_done(session, datarun_id):
                return True
            self._get_or_raise(session, Datarun, datarun_id)
            return False

    @retrying
    def stop_datarun(self, datarun_id: int) -> bool:
        """pending/running -> stopped: no new classifier starts; running ones finish."""
        with self.session_scope(write=True) as session:
            self._get_or_raise(session, Datarun, datarun_id)
            result = session.execute(
                update(Datarun)
                .where(Datarun.id == datarun_id,
                       Datarun.status.in_(C.UNFINISHED_DATARUN_STATUSES))
                .values(status=C.DATARUN_STOPPED, end_time=func.current_timestamp())
            )
            return result.rowcount == 1

    # -- hyperpartition state -------------------------------------------------

    @retrying
    def set_hyperpartition_status(self, hyperpartition_id: int, new: str,
                                  expected: str = C.PARTITION_INCOMPLETE) -> bool:
        with self.session_scope(write=True) as session:
            result = session.execute(
                update(Hyperpartition)
                .where(Hyperpartition.id == hyperpartition_id,
                       Hyperpartition.status == expected)
                .values(status=new)
            )
            return result.rowcount == 1

    # -- classifier state -----------------------------------------------------

    @retrying
    def claim_classifier(self, datarun_id: int, hyperpartition_id: int,
                         hyperparameter_values: dict[str, Any], host: str, worker_id: str,
                         pid: int, last_of_partition: bool = False) -> int | Refused:
        """Take a budget slot and insert a ``running`` classifier in one transaction.

        Returns the new classifier's id, or why nothing was claimed:
        :attr:`Refused.NO_BUDGET` (budget or deadline used up, or the run has ended), or
        :attr:`Refused.PARTITION_TAKEN` when ``last_of_partition`` asked to close a
        partition (``gridding_done``: it has nothing to tune) that another worker
        closed first. A refusal writes nothing. A worker runs one classifier at a
        time, so a running row of ``worker_id`` in this run can only come from an earlier
        attempt of this call whose commit went through before its connection dropped:
        that row is returned instead of claiming a second one.
        """
        with self.session_scope(write=True) as session:
            earlier = _running_row_of(session, worker_id, datarun_id)
            if earlier is not None:
                return earlier
            if not _take_budget_slot(session, datarun_id):
                return Refused.NO_BUDGET
            if last_of_partition and not _close_partition(session, hyperpartition_id):
                session.rollback()  # hand the slot back: nothing of this claim remains
                return Refused.PARTITION_TAKEN
            return _insert_running(session, datarun_id, hyperpartition_id,
                                   hyperparameter_values, host, worker_id, pid)

    @retrying
    def heartbeat(self, classifier_id: int, worker_id: str) -> bool:
        """Refresh a running classifier's heartbeat; False if it is no longer ours."""
        with self.session_scope(write=True) as session:
            result = session.execute(
                update(Classifier)
                .where(Classifier.id == classifier_id,
                       Classifier.worker_id == worker_id,
                       Classifier.status == C.CLASSIFIER_RUNNING)
                .values(heartbeat_at=func.current_timestamp())
            )
            return result.rowcount == 1

    @retrying
    def complete_classifier(self, classifier_id: int, worker_id: str, *,
                            model_location: str | None, metrics_location: str | None,
                            cv_score: float | None, cv_stdev: float | None,
                            test_score: float | None) -> bool:
        """running -> complete with the scores; False if the row was reaped meanwhile.
        The datarun is marked complete in the same transaction if this was its last.
        Idempotent: asked again with the same result, it answers True and writes nothing."""
        with self.session_scope(write=True) as session:
            result = session.execute(
                update(Classifier)
                .where(Classifier.id == classifier_id,
                       Classifier.worker_id == worker_id,
                       Classifier.status == C.CLASSIFIER_RUNNING)
                .values(
                    status=C.CLASSIFIER_COMPLETE,
                    model_location=model_location,
                    metrics_location=metrics_location,
                    cv_judgment_metric=cv_score,
                    cv_judgment_metric_stdev=cv_stdev,
                    test_judgment_metric=test_score,
                    end_time=func.current_timestamp(),
                )
            )
            if result.rowcount != 1:
                # An earlier attempt of this call whose commit went through before its
                # connection dropped already recorded this very result: a success (the
                # worker must keep its files), not a reap. Reaped rows are never complete.
                row = session.get(Classifier, classifier_id)
                return (row is not None and row.status == C.CLASSIFIER_COMPLETE
                        and row.worker_id == worker_id
                        and row.model_location == model_location)
            _finish_run_of(session, classifier_id)
            return True

    @retrying
    def mark_classifier_errored(self, classifier_id: int, worker_id: str,
                                error_message: str) -> bool:
        """running -> errored; errors the hyperpartition after too many failures, and
        marks the datarun complete if this was its last classifier."""
        with self.session_scope(write=True) as session:
            result = session.execute(
                update(Classifier)
                .where(Classifier.id == classifier_id,
                       Classifier.worker_id == worker_id,
                       Classifier.status == C.CLASSIFIER_RUNNING)
                .values(status=C.CLASSIFIER_ERRORED, error_message=error_message,
                        end_time=func.current_timestamp())
            )
            if result.rowcount != 1:
                return False
            partition_id = session.scalar(
                select(Classifier.hyperpartition_id).where(Classifier.id == classifier_id)
            )
            errors = session.scalar(
                select(func.count()).where(
                    Classifier.hyperpartition_id == partition_id,
                    Classifier.status == C.CLASSIFIER_ERRORED,
                    *[~Classifier.error_message.startswith(prefix)
                      for prefix in C.HANDED_BACK_PREFIXES],
                )
            )
            if errors > C.MAX_HYPERPARTITION_ERRORS:
                session.execute(
                    update(Hyperpartition)
                    .where(Hyperpartition.id == partition_id,
                           Hyperpartition.status == C.PARTITION_INCOMPLETE)
                    .values(status=C.PARTITION_ERRORED)
                )
            _finish_run_of(session, classifier_id)
            return True

    @retrying
    def reap_stale_classifiers(self, grace_seconds: float) -> list[int]:
        """Error the running classifiers whose heartbeat is older than the grace
        period and give their budget slots back. Returns the ids this call reaped."""
        reaped: list[int] = []
        with self.session_scope() as session:
            cutoff = _db_now(session) - timedelta(seconds=grace_seconds)
            stale = session.execute(
                select(Classifier.id, Classifier.datarun_id, Classifier.worker_id,
                       Classifier.host, Classifier.pid, Classifier.heartbeat_at)
                .where(Classifier.status == C.CLASSIFIER_RUNNING,
                       Classifier.heartbeat_at < cutoff)
            ).all()
        for row in stale:
            message = (
                f"{C.WORKER_LOST_PREFIX}: worker {row.worker_id} (host {row.host}, "
                f"pid {row.pid}) sent no heartbeat since {row.heartbeat_at:%Y-%m-%d %H:%M:%S} "
                f"UTC (grace {grace_seconds:g} s); its budget slot was returned"
            )
            if self._give_back(row.id, row.datarun_id, message,
                               Classifier.heartbeat_at < cutoff):
                reaped.append(row.id)
        return reaped

    def hand_back_classifier(self, classifier_id: int, worker_id: str, reason: str,
                             prefix: str = C.WORKER_LOST_PREFIX) -> bool:
        """A worker that must stop mid-fit, or cannot store its result, gives its
        classifier and budget slot back (``prefix`` is one of HANDED_BACK_PREFIXES)."""
        classifier = self.get_classifier(classifier_id)
        return self._give_back(
            classifier_id, classifier.datarun_id,
            f"{prefix}: {reason} (worker {worker_id}); its budget slot was returned",
            Classifier.worker_id == worker_id,
        )

    @retrying
    def _give_back(self, classifier_id: int, datarun_id: int, message: str,
                   condition: Any) -> bool:
        """running -> errored ("worker lost ...") and the budget slot returned, atomically."""
        with self.session_scope(write=True) as session:
            result = session.execute(
                update(Classifier)
                .where(Classifier.id == classifier_id,
                       Classifier.status == C.CLASSIFIER_RUNNING, condition)
                .values(status=C.CLASSIFIER_ERRORED, error_message=message,
                        end_time=func.current_timestamp())
            )
            if result.rowcount != 1:
                return False
            session.execute(
                update(Datarun)
                .where(Datarun.id == datarun_id, Datarun.n_started > 0)
                .values(n_started=Datarun.n_started - 1)
            )
            return True

    # -- what the selector and tuner read -------------------------------------

    @retrying
    def get_selection_state(self, datarun_id: int, score_target: str, after_id: int,
                            also_ids: Sequence[int] = ()) -> SelectionState:
        """What a worker needs to choose its next classifier, read incrementally: the ids
        of the run's open (``incomplete``) partitions, and its classifiers whose id is
        above ``after_id`` or in ``also_ids`` (the rows the caller saw running, and the
        gaps it has not seen yet), oldest first. :mod:`atm.scoreboard` keeps the rest."""
        ids = sorted(set(also_ids))
        with self.session_scope() as session:
            partitions = session.scalars(
                select(Hyperpartition.id).where(
                    Hyperpartition.datarun_id == datarun_id,
                    Hyperpartition.status == C.PARTITION_INCOMPLETE,
                ).order_by(Hyperpartition.id)
            ).all()
            which = Classifier.id > after_id
            if ids:
                which = or_(which, Classifier.id.in_(ids))
            # The score and "handed back" are computed by the database: no traceback
            # text crosses the wire for errored rows.
            rows = session.execute(
                select(Classifier.id, Classifier.hyperpartition_id, Classifier.status,
                       ~_not_handed_back().label("handed_back"),
                       case((Classifier.status == C.CLASSIFIER_COMPLETE,
                             score_expression(score_target)), else_=None).label("score"),
                       Classifier.hyperparameter_values)
                .where(Classifier.datarun_id == datarun_id, which)
                .order_by(Classifier.id)
            ).all()
        return SelectionState(
            list(partitions),
            [ClassifierState(row.id, row.hyperpartition_id, row.status,
                             bool(row.handed_back),
                             None if row.score is None else float(row.score),
                             row.hyperparameter_values)
             for row in rows],
        )

    @retrying
    def get_best_classifier(self, datarun_id: int, score_target: str) -> Classifier | None:
        """The complete classifier with the highest score target (oldest on ties), or None."""
        score = score_expression(score_target)
        with self.session_scope() as session:
            return session.scalars(
                select(Classifier)
                .where(Classifier.datarun_id == datarun_id,
                       Classifier.status == C.CLASSIFIER_COMPLETE, score.is_not(None))
                .order_by(score.desc(), Classifier.id.asc())
                .limit(1)
            ).first()

    # -- REST queries ---------------------------------------------------------
    # Generic reads for atm/api over any table of models.TABLES: filtered,
    # ordered and paged listings, single rows and children, each row with its
    # relationships loaded one level deep, plus datarun progress figures.

    @staticmethod
    def _rest_filter_clause(model: type[Base], name: str, op: str, value: Any) -> Any:
        """The SQL condition of one ``{"name", "op", "val"}`` filter (names pre-checked)."""
        column = getattr(model, name)
        clauses: dict[str, Callable[[], Any]] = {
            "eq": lambda: column.is_(None) if value is None else column == value,
            "neq": lambda: column.is_not(None) if value is None else column != value,
            "lt": lambda: column < value,
            "le": lambda: column <= value,
            "gt": lambda: column > value,
            "ge": lambda: column >= value,
            "in": lambda: column.in_(list(value)),
            "not_in": lambda: column.not_in(list(value)),
            "like": lambda: column.like(value),
            "is_null": lambda: column.is_(None),
            "is_not_null": lambda: column.is_not(None),
        }
        if op not in clauses:
            raise ValueError(f"unknown filter operator {op!r}")
        return clauses[op]()

    @retrying
    def page_rows(self, model: type[Base], filters: Sequence[tuple[str, str, Any]] = (),
                  order_by: Sequence[tuple[str, str]] = (), offset: int = 0,
                  limit: int | None = None,
                  parent: tuple[type[Base], int, str] | None = None,
                  ) -> tuple[int, list[dict[str, Any]]]:
        """``(number of matching rows, one page of them)`` of a table, each row a dict
        of its columns plus its relationships one level deep (see :func:`_attach_related`).

        ``filters`` are ``(column, op, value)``, ``order_by`` ``(column, "asc"|"desc")``
        (ties broken by id); ``parent=(model, id, relation)`` keeps the rows that
        are that parent's relation (NotFoundError if the parent does not exist).
        """
        table = model.__table__
        with self.session_scope() as session:
            conditions = [self._rest_filter_clause(model, *f) for f in filters]
            if parent is not None:
                parent_model, parent_id, relation = parent
                if session.scalar(select(parent_model.id).where(
                        parent_model.id == parent_id)) is None:
                    raise NotFoundError(
                        f"{parent_model.__tablename__[:-1]} {parent_id} does not exist")
                conditions.append(_children_of(parent_model, relation, parent_id))
            total = session.scalar(select(func.count()).select_from(table).where(*conditions))
            ordering = [getattr(model, name).desc() if direction == "desc"
                        else getattr(model, name).asc() for name, direction in order_by]
            query = (select(table).where(*conditions)
                     .order_by(*ordering, table.c.id.asc()).offset(offset))
            if limit is not None:
                query = query.limit(limit)
            rows = [dict(row) for row in session.execute(query).mappings()]
            _attach_related(session, model, rows)
            return int(total or 0), rows

    @retrying
    def get_row(self, model: type[Base], row_id: int) -> dict[str, Any]:
        """One row of any table (a dict, with its relationships one level deep), or
        NotFoundError."""
        table = model.__table__
        with self.session_scope() as session:
            row = session.execute(select(table).where(table.c.id == row_id)).mappings().first()
            if row is None:
                raise NotFoundError(f"{model.__tablename__[:-1]} {row_id} does not exist")
            rows = [dict(row)]
            _attach_related(session, model, rows)
            return rows[0]

    @retrying
    def count_rows(self, model: type[Base]) -> int:
        """How many rows a table holds."""
        with self.session_scope() as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)

    @retrying
    def datarun_progress(self, datarun_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Per datarun: classifiers by status, budget, best classifier and elapsed seconds."""
        ids = sorted(set(datarun_ids))
        if not ids:
            return {}
        with self.session_scope() as session:
            now = _db_now(session)
            runs = session.execute(
                select(Datarun.id, Datarun.budget, Datarun.budget_type, Datarun.score_target,
                       Datarun.start_time, Datarun.end_time).where(Datarun.id.in_(ids))
            ).all()
            counts = session.execute(
                select(Classifier.datarun_id, Classifier.status, func.count())
                .where(Classifier.datarun_id.in_(ids))
                .group_by(Classifier.datarun_id, Classifier.status)
            ).all()
            # The best classifier of each run is found by the database (one indexed
            # LIMIT 1 query per run), not by reading every complete row into Python:
            # list pages of classifiers embed their datarun, so this runs per request.
            best: dict[int, Any] = {}
            for run in runs:
                score = score_expression(run.score_target)
                best[run.id] = session.execute(
                    select(Classifier.id, score.label("score"))
                    .where(Classifier.datarun_id == run.id,
                           Classifier.status == C.CLASSIFIER_COMPLETE, score.is_not(None))
                    .order_by(score.desc(), Classifier.id.asc())
                    .limit(1)
                ).first()
        progress: dict[int, dict[str, Any]] = {}
        for run in runs:
            elapsed = None
            if run.start_time is not None:
                elapsed = max(0.0, ((run.end_time or now) - run.start_time).total_seconds())
            progress[run.id] = {
                **{f"classifiers_{status}": 0 for status in C.CLASSIFIER_STATUSES},
                "budget": run.budget,
                "budget_type": run.budget_type,
                "best_classifier_id": None,
                "best_score": None,
                "elapsed_seconds": elapsed,
            }
        for datarun_id, status, number in counts:
            progress[datarun_id][f"classifiers_{status}"] = int(number)
        for run_id, row in best.items():
            if row is not None:
                progress[run_id]["best_classifier_id"] = row.id
                progress[run_id]["best_score"] = float(row.score)
        return progress


def _children_of(parent_model: type[Base], relation: str, parent_id: int) -> Any:
    """SQL: the rows of ``parent_model.<relation>`` for one parent."""
    (local, remote), = sa_inspect(parent_model).relationships[relation].local_remote_pairs
    if local.table is parent_model.__table__ and local.primary_key:
        return remote == parent_id  # one-to-many: the child's foreign key
    raise ValueError(f"{relation} is not a collection of {parent_model.__name__}")


def _attach_related(session: Session, model: type[Base], rows: list[dict[str, Any]]) -> None:
    """Give each row dict its relationships, one level deep and as plain column dicts:
    ``row[name]`` is the related row (or None) for a to-one relationship, the list of
    related rows (oldest first) for a to-many one. One query per relationship for the
    whole page, reading columns only (no ORM objects: list pages stay cheap)."""
    for relationship in sa_inspect(model).relationships:
        target = relationship.mapper.class_.__table__
        (local, remote), = relationship.local_remote_pairs
        keys = {row[local.key] for row in rows if row[local.key] is not None}
        found: dict[Any, Any] = {}
        if keys:
            related = session.execute(
                select(target).where(remote.in_(sorted(keys))).order_by(target.c.id)
            ).mappings()
            for item in related:
                if relationship.uselist:
                    found.setdefault(item[remote.key], []).append(dict(item))
                else:
                    found[item[remote.key]] = dict(item)
        for row in rows:
            value = found.get(row[local.key])
            if value is None and relationship.uselist:
                value = []
            row[relationship.key] = value  # shared between rows: read it, do not change it


class Refused(enum.Enum):
    """Why :meth:`Database.claim_classifier` claimed nothing."""

    NO_BUDGET = "no budget slot left"
    PARTITION_TAKEN = "another worker closed the partition"


class ClassifierState(NamedTuple):
    """One classifier as the selector and tuner see it."""

    id: int
    hyperpartition_id: int
    status: str
    handed_back: bool  # reaped or handed back: it counts for nothing
    score: float | None  # the run's score target, for complete rows
    hyperparameter_values: dict[str, Any]


class SelectionState(NamedTuple):
    open_partitions: list[int]
    classifiers: list[ClassifierState]


def _take_budget_slot(session: Session, datarun_id: int) -> bool:
    """One budget slot of an unfinished run, compare-and-set in a single UPDATE."""
    has_room = or_(
        and_(Datarun.budget_type == C.BUDGET_CLASSIFIER, Datarun.n_started < Datarun.budget),
        and_(Datarun.budget_type != C.BUDGET_CLASSIFIER,
             or_(Datarun.deadline.is_(None), Datarun.deadline > func.current_timestamp())),
    )
    result = session.execute(
        update(Datarun)
        .where(Datarun.id == datarun_id,
               Datarun.status.in_(C.UNFINISHED_DATARUN_STATUSES), has_room)
        .values(n_started=Datarun.n_started + 1)
    )
    if result.rowcount == 1:
        return True
    if session.get(Datarun, datarun_id) is None:
        raise NotFoundError(f"datarun {datarun_id} does not exist")
    return False


def _close_partition(session: Session, hyperpartition_id: int) -> bool:
    result = session.execute(
        update(Hyperpartition)
        .where(Hyperpartition.id == hyperpartition_id,
               Hyperpartition.status == C.PARTITION_INCOMPLETE)
        .values(status=C.PARTITION_GRIDDING_DONE)
    )
    return result.rowcount == 1


def _running_row_of(session: Session, worker_id: str, datarun_id: int) -> int | None:
    """The running classifier of a worker in a run (a worker runs one at a time)."""
    return session.scalar(
        select(Classifier.id).where(Classifier.worker_id == worker_id,
                                    Classifier.status == C.CLASSIFIER_RUNNING,
                                    Classifier.datarun_id == datarun_id)
    )


def _insert_running(session: Session, datarun_id: int, hyperpartition_id: int,
                    hyperparameter_values: dict[str, Any], host: str, worker_id: str,
                    pid: int) -> int:
    classifier = Classifier(
        datarun_id=datarun_id,
        hyperpartition_id=hyperpartition_id,
        hyperparameter_values=hyperparameter_values,
        host=host,
        worker_id=worker_id,
        pid=pid,
        status=C.CLASSIFIER_RUNNING,
        start_time=func.current_timestamp(),
        heartbeat_at=func.current_timestamp(),
    )
    session.add(classifier)
    session.flush()
    return classifier.id


def _finish_run_if_done(session: Session, datarun_id: int) -> bool:
    """Mark an unfinished run complete once nothing of it runs and its budget, its
    deadline or its open partitions are used up: one compare-and-set UPDATE."""
    nothing_runs = ~(
        select(Classifier.id)
        .where(Classifier.datarun_id == datarun_id, Classifier.status == C.CLASSIFIER_RUNNING)
        .exists()
    )
    no_open_partition = ~(
        select(Hyperpartition.id)
        .where(Hyperpartition.datarun_id == datarun_id,
               Hyperpartition.status == C.PARTITION_INCOMPLETE)
        .exists()
    )
    budget_used = or_(
        and_(Datarun.budget_type == C.BUDGET_CLASSIFIER, Datarun.n_started >= Datarun.budget),
        and_(Datarun.budget_type != C.BUDGET_CLASSIFIER, Datarun.deadline.is_not(None),
             Datarun.deadline <= func.current_timestamp()),
    )
    result = session.execute(
        update(Datarun)
        .where(Datarun.id == datarun_id, Datarun.status.in_(C.UNFINISHED_DATARUN_STATUSES),
               nothing_runs, or_(budget_used, no_open_partition))
        .values(status=C.DATARUN_COMPLETE, end_time=func.current_timestamp())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    LOGGER.info("datarun %s has ended", datarun_id)
    return True


def _finish_run_of(session: Session, classifier_id: int) -> bool:
    datarun_id = session.scalar(
        select(Classifier.datarun_id).where(Classifier.id == classifier_id))
    return _finish_run_if_done(session, datarun_id)


def _db_now(session: Session) -> datetime:
    """The database's current time as a naive UTC datetime, to the second."""
    value = session.execute(select(func.current_timestamp())).scalar_one()
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=None, microsecond=0)


def _not_handed_back() -> Any:
    """SQL: the classifier was not handed back ("worker lost", "storage error")."""
    return or_(
        Classifier.status != C.CLASSIFIER_ERRORED,
        Classifier.error_message.is_(None),
        and_(*[~Classifier.error_message.startswith(prefix)
               for prefix in C.HANDED_BACK_PREFIXES]),
    )


def score_expression(score_target: str) -> Any:
    """A SQL expression of a ``*_judgment_metric`` score target."""
    if score_target == "mu_sigma_judgment_metric":
        return Classifier.cv_judgment_metric - 2 * Classifier.cv_judgment_metric_stdev
    if score_target not in ("cv_judgment_metric", "test_judgment_metric"):
        raise ValueError(f"unknown score target {score_target!r}")
    return getattr(Classifier, score_target)


__all__ = ["ClassifierState", "Database", "Refused", "SelectionState", "build_engine",
           "retrying", "score_of", "SQLAlchemyError"]
