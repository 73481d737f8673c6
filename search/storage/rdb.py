"""Optuna storage: opening it, and creating or resuming a study in it.

Every fmsearch study runs from a pool of WAITING trials (its budget: ``fmsearch run --trials``
enqueues them, workers pop them). The storage refuses to create a trial outside the pool, so
however many workers share a study it ends with exactly the trials asked for: Optuna's own
``n_trials`` counts per process, and ``MaxTrialsCallback`` overshoots by up to workers - 1.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial

from runners.errors import FmsearchError
from search.names import ARCH_ATTR, HEARTBEAT_ATTR, OBJECTIVES_ATTR
from search.storage.urls import redact, sqlite_path

logger = logging.getLogger(__name__)

# A worker's heartbeat every this many seconds; a trial silent for GRACE_BEATS beats is stale.
HEARTBEAT_INTERVAL = 10
GRACE_BEATS = 6
# A trial whose worker dies this many times (an out-of-memory kill, say) is not retried again.
MAX_RETRY = 2
SQLITE_BUSY_TIMEOUT = 60
SCHEMA_RACE_ATTEMPTS = 5

StaleTrialHook = Callable[[optuna.Study, FrozenTrial], None]


class PoolEmpty(Exception):
    """The study has no WAITING trial left: its budget is spent (or being spent by others)."""


class FmsearchStorage(RDBStorage):
    """Optuna's RDB storage, with the two changes fmsearch's workers need.

    - Trials come only from the study's pool (``enqueue_trial``, retries of stale trials):
      ``ask()`` on an empty pool raises :class:`PoolEmpty` instead of creating one.
    - A failed heartbeat write is logged and retried at the next beat. Optuna's heartbeat
      thread exits on its first failed write (a locked SQLite file, a restarting PostgreSQL),
      after which the live trial is reaped as stale and its result lost (optuna#5986).
    """

    def __init__(self, url: str, **storage_args: Any) -> None:
        # What runs when a trial's worker went silent; fmsearch adds its hooks to it.
        self.on_stale = _OnStale()
        super().__init__(url, heartbeat_stale_trial_callback=self.on_stale, **storage_args)

    # Optuna wraps RDB storages in a cache that calls this private method, not the public one.
    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None):
        if template_trial is None:
            raise PoolEmpty(f"study {study_id} has no WAITING trial")
        return super()._create_new_trial(study_id, template_trial)

    def set_trial_state_values(self, trial_id, state, values=None) -> bool:
        taken = super().set_trial_state_values(trial_id, state, values)
        if taken and state == optuna.trial.TrialState.RUNNING and self.heartbeat_interval:
            # Whoever judges this trial stale judges it by its own worker's beat, not theirs.
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, self.heartbeat_interval)
        return taken

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        """RUNNING trials silent for ``GRACE_BEATS`` of their own worker's heartbeats.

        Optuna judges every trial by the grace of the process that looks: a coordinator
        started with ``--heartbeat-interval 1`` failed a healthy worker's trial (beating every
        10 s) after 6 s. A trial that never beat (its worker killed between popping it and its
        first beat), which Optuna never calls stale, is judged from its start.
        """
        from datetime import datetime, timedelta, timezone

        import sqlalchemy
        import sqlalchemy.orm
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        own = self.heartbeat_interval or HEARTBEAT_INTERVAL
        stale = []
        with _create_scoped_session(self.scoped_session) as session:
            # Beats carry the database's clock; a start, the popping worker's (naive UTC).
            database_now = session.execute(sqlalchemy.func.now()).scalar().replace(tzinfo=None)
            local_now = datetime.now(timezone.utc).replace(tzinfo=None)
            running = (
                session.query(models.TrialModel)
                .options(
                    sqlalchemy.orm.selectinload(models.TrialModel.heartbeats),
                    sqlalchemy.orm.selectinload(models.TrialModel.system_attributes),
                )
                .filter(models.TrialModel.study_id == study_id)
                .filter(models.TrialModel.state == optuna.trial.TrialState.RUNNING)
                .all()
            )
            for trial in running:
                attrs = {a.key: a.value_json for a in trial.system_attributes}
                interval = json.loads(attrs[HEARTBEAT_ATTR]) if HEARTBEAT_ATTR in attrs else own
                grace = timedelta(seconds=GRACE_BEATS * interval)
                if trial.heartbeats:
                    silent = database_now - trial.heartbeats[0].heartbeat
                elif trial._datetime_start_utc is not None:
                    silent = local_now - trial._datetime_start_utc
                else:
                    continue
                if silent > grace:
                    stale.append(trial.trial_id)
        return stale

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except Exception as exc:
            logger.warning(
                "heartbeat of trial id %d not recorded, retrying at the next beat: %s",
                trial_id,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )


class _OnStale:
    """Re-enqueue a stale trial (Optuna's retry callback), then let fmsearch mend its record."""

    def __init__(self) -> None:
        with warnings.catch_warnings():  # experimental since Optuna 2.8, unchanged since
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
        self.hooks: list[StaleTrialHook] = []

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._retry(study, trial)
        logger.warning("trial %d's worker stopped sending heartbeats: trial failed", trial.number)
        for hook in self.hooks:
            try:
                hook(study, trial)
            except Exception:  # the reaper must not die with a worker's record
                logger.warning("could not mend trial %d's record", trial.number, exc_info=True)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it hides) says the database could not be reached or written.

    Optuna wraps a failed commit in ``StorageInternalError``; when ``tell()`` fails that way
    inside ``optimize()``, a ``finally`` block then raises ``UnboundLocalError`` over it.
    """
    import sqlalchemy.exc

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(
            exc,
            (
                optuna.exceptions.StorageInternalError,
                sqlalchemy.exc.OperationalError,
                sqlalchemy.exc.InterfaceError,
                sqlalchemy.exc.DisconnectionError,
            ),
        ):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def backend_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage behind ``study`` (Optuna wraps RDB storages in a cache)."""
    storage = study._storage
    return getattr(storage, "_backend", storage)


def _prepare_sqlite(path) -> None:
    """WAL lets readers work beside one writer; the mode is stored in the file, set once.

    Switching the mode answers "database is locked" at once, without waiting, while another
    process creates the same new file: wait and try again.
    """
    import contextlib

    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT
    while True:
        try:
            with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT)) as db:
                if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _serialise_sqlite(engine) -> None:
    """Real transactions on SQLite: ``BEGIN IMMEDIATE`` takes the write lock up front.

    Python's sqlite3 driver begins a transaction only at the first write, so two workers can
    both read a trial as WAITING and both set it RUNNING: the same trial run twice. This is
    SQLAlchemy's documented recipe for serializable SQLite.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, connection_record) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the hooks were attached


def open_storage(url: str, *, heartbeat_interval: int = HEARTBEAT_INTERVAL) -> FmsearchStorage:
    """Connect to an Optuna RDB storage (SQLite, PostgreSQL, MySQL), creating its schema.

    Heartbeats are on: a trial whose worker dies is failed ``GRACE_BEATS`` beats later by any
    live worker and re-enqueued (at most ``MAX_RETRY`` times). Add to ``storage.on_stale.hooks``
    to be told about each such trial.

    Raises:
        FmsearchError: The URL does not parse, its driver is missing, or it cannot connect.
    """
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        driver = make_url(url).drivername
    except sqlalchemy.exc.ArgumentError as exc:
        raise FmsearchError(
            f"--storage {redact(url)!r} does not parse: expected a database URL such as "
            "sqlite:///mlruns/optuna.db or postgresql://user@host:5432/db"
        ) from exc
    db = sqlite_path(url)
    if db is not None:
        _prepare_sqlite(db)
        # Wait out another process's write instead of failing with "database is locked".
        engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT}}
    else:
        # Optuna pre-pings pooled connections only for MySQL; a restarted server otherwise
        # hands the next query a dead connection.
        engine_kwargs = {"pool_pre_ping": True}
    try:
        storage = _connect(
            url,
            engine_kwargs=engine_kwargs,
            # No grace_period: FmsearchStorage judges each trial by GRACE_BEATS of its own
            # worker's interval, not one grace for all.
            heartbeat_interval=heartbeat_interval,
        )
    except ImportError as exc:
        module = getattr(exc.__cause__, "name", None)
        raise FmsearchError(
            f"--storage {redact(url)}: the database driver for {driver!r} "
            f"(module {module or 'unknown'}) is not installed"
        ) from exc
    except Exception as exc:
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
        raise FmsearchError(f"cannot connect to storage {redact(url)}: {reason}") from exc
    if db is not None:
        _serialise_sqlite(storage.engine)
    return storage


def _connect(url: str, **storage_args) -> FmsearchStorage:
    """Optuna creates a new database's schema without a lock: of two processes that create it at
    once, one fails on a duplicate (the alembic version row, a table). The schema is there by
    then, so connecting again succeeds."""
    import sqlalchemy.exc

    for attempt in range(SCHEMA_RACE_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return FmsearchStorage(url, **storage_args)
        except sqlalchemy.exc.DBAPIError as exc:
            # Duplicates surface as IntegrityError, or as "table ... already exists" in an
            # OperationalError (SQLite, MySQL) or ProgrammingError (PostgreSQL).
            duplicate = isinstance(exc, sqlalchemy.exc.IntegrityError) or "already exists" in str(
                exc.orig
            )
            if not duplicate or attempt + 1 == SCHEMA_RACE_ATTEMPTS:
                raise
            logger.info("another process is creating the storage's schema (%s): retrying", exc)
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def create_or_load_study(
    *,
    storage: optuna.storages.BaseStorage,
    study_name: str,
    arch: str,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
    objectives: tuple[str, ...] = ("accuracy",),
) -> optuna.Study:
    """Resume study ``study_name``, or create it, optimising ``objectives``.

    Validation accuracy is maximised; a second objective (``params``, ``latency``) minimised.

    Raises:
        FmsearchError: The study exists but searches another architecture or objective.
    """
    directions = ["maximize" if o == "accuracy" else "minimize" for o in objectives]
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        sampler=sampler,
        pruner=pruner,
        directions=directions,
        load_if_exists=True,
    )
    # Optuna loads a study whatever directions it is asked for; a mismatch is an error here.
    # A study without the attribute is new, or older than multi-objective fmsearch (accuracy).
    existing = study.user_attrs.get(OBJECTIVES_ATTR)
    if existing is None and len(study.directions) != len(objectives):
        existing = ["accuracy"]
    if existing is not None and existing != list(objectives):
        raise FmsearchError(
            f"study {study_name!r} optimises --objective {','.join(existing)}, "
            f"got {','.join(objectives)}: pick another --study-name"
        )
    study.set_user_attr(OBJECTIVES_ATTR, list(objectives))
    existing = study.user_attrs.get(ARCH_ATTR)
    if existing is None:
        study.set_user_attr(ARCH_ATTR, arch)
    elif existing != arch:
        raise FmsearchError(
            f"study {study_name!r} searches --arch {existing}, got --arch {arch}: "
            "pick another --study-name"
        )
    return study


def load_study(*, storage: optuna.storages.BaseStorage, study_name: str) -> optuna.Study:
    """An existing study.

    Raises:
        FmsearchError: No study of that name is in the storage.
    """
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError as exc:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
        raise FmsearchError(
            f"no study named {study_name!r} in this storage; it holds: {', '.join(names) or 'none'}"
        ) from exc
