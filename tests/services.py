"""Real services for tests: processes, HTTP, PostgreSQL, an MLflow tracking server."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
ENV = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "TF_CPP_MIN_LOG_LEVEL": "2"}
# `mlflow models serve` starts `uvicorn` from PATH, as in an activated virtual environment.
ENV["PATH"] = f"{BIN}{os.pathsep}{ENV.get('PATH', '')}"
for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "FMSEARCH_STORAGE", "FMSEARCH_DATA_DIR"):
    ENV.pop(key, None)
FMSEARCH = [str(BIN / "fmsearch")]
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, *, data: bytes | None = None, timeout: float = 10):
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, response.read()


def wait_for(url: str, process: subprocess.Popen, *, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args} exited with {process.returncode}")
        try:
            get(url, timeout=2)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {seconds} s")


def start(args: list[str], cwd: Path, log: Path, env=ENV) -> subprocess.Popen:
    return subprocess.Popen(
        args, cwd=cwd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def stop(process: subprocess.Popen, sig: int = 15) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    process.wait(timeout=60)


def _pg_cluster() -> list[str]:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main"]


def _pg_answers() -> bool:
    import psycopg

    try:
        with psycopg.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=3
        ):
            return True
    except psycopg.OperationalError:
        return False


def ensure_postgres() -> None:
    """Find PostgreSQL at 127.0.0.1:5432, or start the local cluster; skip only outside CI."""
    if _pg_answers():
        return
    if os.path.isdir("/etc/postgresql"):
        subprocess.run([*_pg_cluster(), "start"], check=False, capture_output=True)
        for _ in range(30):
            if _pg_answers():
                return
            time.sleep(1)
    if os.environ.get("CI") == "true":
        pytest.fail("PostgreSQL at 127.0.0.1:5432 is not running and could not be started")
    pytest.skip("no PostgreSQL at 127.0.0.1:5432")


def restart_postgres() -> None:
    subprocess.run([*_pg_cluster(), "restart"], check=True, capture_output=True)


@contextlib.contextmanager
def postgres(*, exclusive: bool = False):
    """PostgreSQL at 127.0.0.1:5432, shared by every test process (pytest-xdist runs several):
    a test that restarts it holds it ``exclusive``, the others share it."""
    with open(Path(tempfile.gettempdir()) / "fmsearch-tests-postgres.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            ensure_postgres()
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def postgres_database(password: str = "s3cret-pw", *, exclusive: bool = False):
    """A fresh database, as a URL with a password (trust auth accepts any)."""
    import psycopg

    with postgres(exclusive=exclusive):
        name = f"fmsearch_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        try:
            yield f"postgresql+psycopg://postgres:{password}@127.0.0.1:5432/{name}"
        finally:
            ensure_postgres()
            with psycopg.connect(PG_ADMIN, autocommit=True) as c:
                c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def start_tracking_server(directory: Path, port: int, log: Path) -> subprocess.Popen:
    """``fmsearch server`` on ``port`` over a SQLite store in ``directory``, answering."""
    process = start(
        [*FMSEARCH, "server", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{directory}/mlflow.db",
         "--artifacts-destination", (directory / "artifacts").as_uri(), "--workers", "1"],
        cwd=directory, log=log,
    )  # fmt: skip
    wait_for(f"http://127.0.0.1:{port}/health", process)
    return process
