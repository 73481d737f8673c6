"""``fmsearch server``, ``ui``, ``predict`` and ``dashboard``."""

from __future__ import annotations

from pathlib import Path

import click

from search.cli.options import (
    host_option,
    port_option,
    setup_logging,
    storage_option,
    tracking_option,
)


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
    from search import api

    service = api.server(backend_store_uri=backend_store_uri,
                         artifacts_destination=artifacts_destination, host=host, port=port,
                         workers=server_workers, allowed_hosts=allowed_hosts)  # fmt: skip
    click.echo(f"{service.describe()} (Ctrl-C stops it)", err=True)
    service.exec()


@click.command()
@tracking_option
@host_option
@port_option(default=5000)
def ui(tracking_uri, host, port) -> None:
    """Serve the MLflow UI over fmsearch's tracking store."""
    from search import api

    service = api.ui(tracking_uri=tracking_uri, host=host, port=port)
    click.echo(f"{service.describe()} (Ctrl-C stops it)", err=True)
    service.exec()


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
    from search import api

    service = api.dashboard(storage=storage, host=host, port=port)
    click.echo(service.describe(), err=True)
    service.exec()


COMMANDS = (server, ui, predict, dashboard)
