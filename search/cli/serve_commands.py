"""``fmsearch server``, ``ui``, ``predict`` and ``dashboard``."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from runners.errors import FmsearchError
from search.cli.options import (
    host_option,
    port_option,
    setup_logging,
    storage_option,
    tracking_option,
)
from search.storage.urls import redact


@click.command()
@click.option(
    "--backend-store-uri",
    envvar="FMSEARCH_SERVER_BACKEND",
    metavar="URI",
    help="The server's database. Env: FMSEARCH_SERVER_BACKEND. "
    "[default: sqlite:///mlruns/mlflow.db]",
)
@click.option(
    "--artifacts-destination",
    envvar="FMSEARCH_SERVER_ARTIFACTS",
    metavar="URI",
    help="Where the server keeps the artifacts it serves. Env: FMSEARCH_SERVER_ARTIFACTS. "
    "[default: mlruns/artifacts]",
)
@host_option
@port_option(default=5000)
@click.option("--workers", "server_workers", type=click.IntRange(min=1), default=2,
              show_default=True, help="Server processes.")  # fmt: skip
@click.option(
    "--allowed-hosts",
    envvar="FMSEARCH_SERVER_ALLOWED_HOSTS",
    metavar="HOSTS",
    help="Comma-separated names the server answers to (the Host header: 'mlflow', "
    "'tracking-host:5000', wildcards 'app-*'), besides localhost and IP addresses, which it "
    "always answers. Env: FMSEARCH_SERVER_ALLOWED_HOSTS.",
)
def server(
    backend_store_uri, artifacts_destination, host, port, server_workers, allowed_hosts
) -> None:
    """Run an MLflow tracking server over fmsearch's store, for workers on other hosts.

    Point workers at it with --tracking-uri http://HOST:PORT; reached by a name (not an IP
    address), the name must be in --allowed-hosts: MLflow refuses other Host headers (DNS
    rebinding). It listens on 127.0.0.1 unless --host says otherwise: it has no
    authentication, so put a proxy in front to expose it.
    """
    from search.storage.urls import DEFAULT_STORE_DIR, default_tracking_uri, sqlite_path

    uri = backend_store_uri or default_tracking_uri()
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    artifacts = artifacts_destination or (DEFAULT_STORE_DIR / "artifacts").resolve().as_uri()
    command = [_mlflow_executable(), "server", "--artifacts-destination", artifacts]
    command += ["--serve-artifacts", "--host", host, "--port", str(port)]
    command += ["--workers", str(server_workers)]
    if allowed_hosts:
        command += ["--allowed-hosts", _with_local_hosts(allowed_hosts)]
    click.echo(
        f"MLflow tracking server on http://{host}:{port} over {redact(uri)} (Ctrl-C stops it)",
        err=True,
    )
    sys.stdout.flush()
    # The store's URL, password included, goes by environment: a command line is what `ps`
    # shows every user of the host.
    os.execve(command[0], command, {**os.environ, "MLFLOW_BACKEND_STORE_URI": uri})


def _with_local_hosts(allowed_hosts: str) -> str:
    """``allowed_hosts`` as MLflow matches Host headers (exactly, port included: a bare name
    also gets ``name:*``), plus what MLflow allows when not given the option (localhost and
    private IP addresses), which the option would otherwise take away."""
    from mlflow.server.security_utils import get_default_allowed_hosts

    names = [name.strip() for name in allowed_hosts.split(",") if name.strip()]
    with_ports = [f"{name}:*" for name in names if ":" not in name and "*" not in name]
    return ",".join([*names, *with_ports, *get_default_allowed_hosts()])


@click.command()
@tracking_option
@host_option
@port_option(default=5000)
def ui(tracking_uri, host, port) -> None:
    """Serve the MLflow UI over fmsearch's tracking store."""
    from search.storage.urls import default_artifact_root, default_tracking_uri, sqlite_path

    uri = tracking_uri or default_tracking_uri()
    if uri.startswith(("http://", "https://")):
        raise FmsearchError(f"{redact(uri)} is already a tracking server: open it in a browser")
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise FmsearchError(f"no MLflow store at {db}: run `fmsearch run` first")
    command = [_mlflow_executable(), "ui", "--backend-store-uri", uri]
    # One person browsing: one worker process, not MLflow's four (each imports all of MLflow).
    command += ["--host", host, "--port", str(port), "--workers", "1"]
    artifact_root = default_artifact_root(uri)
    if artifact_root is not None:
        command += ["--default-artifact-root", artifact_root.as_uri()]
    click.echo(f"MLflow UI on http://{host}:{port} over {redact(uri)} (Ctrl-C stops it)", err=True)
    sys.stdout.flush()
    os.execv(command[0], command)


def _executable(name: str, *, missing: str) -> str:
    """The command ``name`` beside this Python (the venv's), else on PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise FmsearchError(missing)
    return found


def _mlflow_executable() -> str:
    return _executable("mlflow", missing="the `mlflow` command is not installed beside fmsearch")


@click.command()
@click.argument(
    "files",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option(
    "--model",
    "model_uri",
    required=True,
    help="A registered model (models:/NAME@ALIAS or models:/NAME/VERSION) or a model URI.",
)
@tracking_option
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write every column (all 10 probabilities) to this CSV file.",
)
def predict(files, model_uri, tracking_uri, output) -> None:
    """Classify images from .npy arrays or 28x28 grayscale .png files.

    \b
    Examples:
      fmsearch predict --model models:/fmsearch-resnet@champion shirt.png boot.png
      fmsearch predict --model models:/fmsearch-mlp/3 batch.npy --output predictions.csv
    """
    setup_logging(quiet=True)
    from runners.data import read_image_files
    from search import api

    images, names = read_image_files(files)
    frame = api.predict(model_uri=model_uri, images=images, tracking_uri=tracking_uri)
    frame.insert(0, "image", names)
    for _, row in frame.iterrows():
        probability = row[row["class_name"]]
        click.echo(f"{row['image']}\t{row['class_index']}\t{row['class_name']}\t{probability:.4f}")
    if output is not None:
        frame.to_csv(output, index=False)
        click.echo(f"wrote {len(frame)} rows to {output}", err=True)


@click.command()
@storage_option
@host_option
@port_option(default=8080)
def dashboard(storage, host, port) -> None:
    """Serve optuna-dashboard over the study storage (pip install 'fmsearch[dashboard]')."""
    from search.storage.urls import default_storage

    url = storage or default_storage()
    found = _executable(
        "optuna-dashboard",
        missing="optuna-dashboard is not installed: expected `pip install 'fmsearch[dashboard]'`",
    )
    click.echo(f"optuna-dashboard on http://{host}:{port} over {redact(url)}", err=True)
    sys.stdout.flush()
    os.execv(found, [found, url, "--host", host, "--port", str(port)])


COMMANDS = (server, ui, predict, dashboard)
