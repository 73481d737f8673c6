"""Optuna storage: opening it, and creating or resuming a study in it."""

from __future__ import annotations

import logging

import optuna

from runners.errors import FmsearchError
from search.urls import redact, sqlite_path

logger = logging.getLogger(__name__)

ARCH_ATTR = "fmsearch.arch"


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """Connect to an Optuna RDB storage (SQLite, PostgreSQL, MySQL), creating its schema.

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
        db.parent.mkdir(parents=True, exist_ok=True)
        # Wait out another process's write instead of failing with "database is locked".
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        # Optuna pre-pings pooled connections only for MySQL; a restarted server otherwise
        # hands the next query a dead connection.
        engine_kwargs = {"pool_pre_ping": True}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
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


def create_or_load_study(
    *,
    storage: optuna.storages.BaseStorage,
    study_name: str,
    arch: str,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> optuna.Study:
    """Resume study ``study_name``, or create it, maximising validation accuracy.

    Raises:
        FmsearchError: The study exists but searches another architecture.
    """
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        sampler=sampler,
        pruner=pruner,
        direction="maximize",
        load_if_exists=True,
    )
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
