"""The servers fmsearch starts over its stores: an MLflow tracking server for workers on other
hosts, the MLflow UI, and optuna-dashboard. Each is a :class:`Service` (a command line and the
environment it needs), which ``fmsearch server|ui|dashboard`` becomes and a notebook starts in
the background."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from runners.errors import FmsearchError
from search.storage.urls import (
    DEFAULT_STORE_DIR,
    default_artifact_root,
    default_storage,
    default_tracking_uri,
    redact,
    sqlite_path,
)


@dataclass(frozen=True)
class Service:
    """A server's command line.

    Attributes:
        name: What it is, for people.
        url: Where it answers once started.
        store: The store it serves, its password hidden.
        argv: The command line; never a password on it (``ps`` shows it to every user).
        env: What it needs in its environment beyond this process's (a store's URL).
    """

    name: str
    url: str
    store: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict, repr=False)

    def describe(self) -> str:
        return f"{self.name} on {self.url} over {self.store}"

    def start(self) -> subprocess.Popen:
        """Run it in the background; stop it with the returned process's ``terminate()``."""
        return subprocess.Popen(self.argv, env={**os.environ, **self.env})

    def exec(self) -> NoReturn:
        """Become it: this process is replaced (what the command line does)."""
        sys.stdout.flush()
        os.execve(self.argv[0], self.argv, {**os.environ, **self.env})


def tracking_server(
    *,
    backend_store_uri: str | None = None,
    artifacts_destination: str | None = None,
    host: str = "127.0.0.1",
    port: int = 5000,
    workers: int = 2,
    allowed_hosts: str | None = None,
) -> Service:
    """An MLflow tracking server over fmsearch's store (see ``fmsearch server --help``)."""
    uri = backend_store_uri or default_tracking_uri()
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    artifacts = artifacts_destination or (DEFAULT_STORE_DIR / "artifacts").resolve().as_uri()
    argv = [_mlflow_executable(), "server", "--artifacts-destination", artifacts]
    argv += ["--serve-artifacts", "--host", host, "--port", str(port), "--workers", str(workers)]
    if allowed_hosts:
        argv += ["--allowed-hosts", with_local_hosts(allowed_hosts)]
    # The store's URL, password included, goes by environment.
    return Service(name="MLflow tracking server", url=f"http://{host}:{port}", store=redact(uri),
                   argv=argv, env={"MLFLOW_BACKEND_STORE_URI": uri})  # fmt: skip


def with_local_hosts(allowed_hosts: str) -> str:
    """``allowed_hosts`` as MLflow matches Host headers (exactly, port included: a bare name
    also gets ``name:*``), plus what MLflow allows when not given the option (localhost and
    private IP addresses), which the option would otherwise take away."""
    from mlflow.server.security_utils import get_default_allowed_hosts

    names = [name.strip() for name in allowed_hosts.split(",") if name.strip()]
    with_ports = [f"{name}:*" for name in names if ":" not in name and "*" not in name]
    return ",".join([*names, *with_ports, *get_default_allowed_hosts()])


def mlflow_ui(
    *, tracking_uri: str | None = None, host: str = "127.0.0.1", port: int = 5000
) -> Service:
    """The MLflow UI over fmsearch's tracking store.

    Raises:
        FmsearchError: The store is a tracking server already, or a SQLite file that does not
            exist.
    """
    uri = tracking_uri or default_tracking_uri()
    if uri.startswith(("http://", "https://")):
        raise FmsearchError(f"{redact(uri)} is already a tracking server: open it in a browser")
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise FmsearchError(f"no MLflow store at {db}: run `fmsearch run` first")
    # One person browsing: one worker process, not MLflow's four (each imports all of MLflow).
    argv = [_mlflow_executable(), "ui", "--host", host, "--port", str(port), "--workers", "1"]
    artifact_root = default_artifact_root(uri)
    if artifact_root is not None:
        argv += ["--default-artifact-root", artifact_root.as_uri()]
    return Service(name="MLflow UI", url=f"http://{host}:{port}", store=redact(uri), argv=argv,
                   env={"MLFLOW_BACKEND_STORE_URI": uri})  # fmt: skip


def optuna_dashboard(*, storage: str | None = None, host: str = "127.0.0.1",
                     port: int = 8080) -> Service:  # fmt: skip
    """optuna-dashboard over the study storage (``pip install 'fmsearch[dashboard]'``).

    Raises:
        FmsearchError: optuna-dashboard is not installed.
    """
    url = storage or default_storage()
    found = _executable(
        "optuna-dashboard",
        missing="optuna-dashboard is not installed: expected `pip install 'fmsearch[dashboard]'`",
    )
    # optuna-dashboard takes its storage as an argument only.
    argv = [found, url, "--host", host, "--port", str(port)]
    return Service(name="optuna-dashboard", url=f"http://{host}:{port}", store=redact(url),
                   argv=argv)  # fmt: skip


def _executable(name: str, *, missing: str) -> str:
    """The command ``name`` beside this Python (the venv's), else on PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise FmsearchError(missing)
    return found


def _mlflow_executable() -> str:
    return _executable("mlflow", missing="the `mlflow` command is not installed beside fmsearch")
