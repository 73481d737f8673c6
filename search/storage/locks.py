"""Locks shared by every process that uses one study storage, on whatever host.

Each kind of storage brings its own lock, released by the operating system or the database
when its holder dies (no lease to expire): a file lock beside a SQLite file (``filelock``),
an advisory lock on PostgreSQL, ``GET_LOCK`` on MySQL/MariaDB.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import time
from collections.abc import Iterator

from runners.errors import FmsearchError
from search.storage.urls import redact, sqlite_path

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0
_POLL = 0.2


@contextlib.contextmanager
def storage_lock(url: str, name: str, *, timeout: float = DEFAULT_TIMEOUT) -> Iterator[None]:
    """Hold lock ``name`` among all processes sharing the storage at ``url``.

    Raises:
        FmsearchError: The lock was not acquired within ``timeout`` seconds, or the storage
            has no lock fmsearch knows.
    """
    db = sqlite_path(url)
    if db is not None:
        with _file_lock(db, name, timeout=timeout):
            yield
        return
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    backend = make_url(url).get_backend_name()
    if backend not in ("postgresql", "mysql", "mariadb"):
        raise FmsearchError(
            f"no shared lock for storage {redact(url)}: expected sqlite, postgresql or mysql"
        )
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            if backend == "postgresql":
                with _advisory_lock(connection, name, timeout=timeout):
                    yield
            else:
                with _mysql_lock(connection, name, timeout=timeout):
                    yield
    finally:
        engine.dispose()


@contextlib.contextmanager
def _file_lock(db, name: str, *, timeout: float) -> Iterator[None]:
    import filelock

    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    lock = filelock.FileLock(f"{db}.{safe}.lock")
    try:
        lock.acquire(timeout=timeout)
    except filelock.Timeout as exc:
        raise FmsearchError(
            f"lock {name!r} still held by another process after {timeout:g} s"
        ) from exc
    try:
        yield
    finally:
        lock.release()


def _key(name: str) -> int:
    """A stable signed 64-bit key for PostgreSQL's advisory locks."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def _advisory_lock(connection, name: str, *, timeout: float) -> Iterator[None]:
    from sqlalchemy import text

    key = _key(f"fmsearch:{name}")
    deadline = time.monotonic() + timeout
    # Try-and-poll rather than pg_advisory_lock: a blocked call could not honour the timeout.
    while not connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
        connection.commit()
        if time.monotonic() > deadline:
            raise FmsearchError(f"lock {name!r} still held by another process after {timeout:g} s")
        time.sleep(_POLL)
    connection.commit()
    try:
        yield
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        connection.commit()


@contextlib.contextmanager
def _mysql_lock(connection, name: str, *, timeout: float) -> Iterator[None]:
    from sqlalchemy import text

    # MySQL limits lock names to 64 characters.
    lock_name = "fmsearch:" + hashlib.sha256(name.encode()).hexdigest()[:40]
    got = connection.execute(
        text("SELECT GET_LOCK(:n, :t)"), {"n": lock_name, "t": int(timeout)}
    ).scalar()
    if got != 1:
        raise FmsearchError(f"lock {name!r} still held by another process after {timeout:g} s")
    try:
        yield
    finally:
        connection.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": lock_name})
