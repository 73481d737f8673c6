"""A canary password, written into the store URLs every way a user may write it, appears in
nothing fmsearch prints, logs or stores: output, MLflow params, tags and artifacts (the report),
the registry, Optuna's study and trial attributes, the tracking server's log."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from tests.services import free_port, postgres_database, start_tracking_server, stop

pytestmark = pytest.mark.slow

CANARY = "Can@ry/p:ss%w0rd"
QUOTED = urllib.parse.quote(CANARY, safe="")
TEXT_SUFFIXES = (".html", ".json", ".csv", ".txt", ".yaml", ".md")
TINY = ["--subset", "300", "--val-size", "200", "--max-epochs", "1", "--seed", "0"]


def _storage_shapes(url: str) -> dict[str, str]:
    """The study database's URL with the canary as its password, written three ways (trust
    authentication: PostgreSQL takes any password)."""
    base = url.replace("postgres:s3cret-pw@", "postgres@")
    return {
        "percent-encoded": base.replace("postgres@", f"postgres:{QUOTED}@"),
        "query string": f"{base}?password={QUOTED}",
        "plain": base.replace("postgres@", "postgres:Plain-Canary-42@"),
    }


def _everything(client: MlflowClient, storage: str, study_name: str, tmp_path: Path) -> str:
    """Every text fmsearch stored about the study, in MLflow and in Optuna."""
    texts = []
    experiment = client.get_experiment_by_name(study_name)
    for run in client.search_runs([experiment.experiment_id]):
        texts += [str(run.data.params), str(run.data.tags), run.info.run_name or ""]
        local = client.download_artifacts(run.info.run_id, "", str(tmp_path / run.info.run_id))
        texts += [
            p.read_text(errors="replace")
            for p in Path(local).rglob("*")
            if p.is_file() and p.suffix in TEXT_SUFFIXES
        ]
    for version in client.search_model_versions(f"name = 'fmsearch-{study_name}'"):
        texts += [str(version.tags), version.description or "", version.source or ""]
    study = optuna.load_study(study_name=study_name, storage=storage)
    system = study._storage.get_study_system_attrs(study._study_id)  # no public reader in Optuna 5
    texts += [str(study.user_attrs), str(system)]
    texts += [str(t.user_attrs) + str(t.system_attrs) for t in study.trials]
    return "\n".join(texts)


def test_no_password_anywhere_whatever_the_url_shape(cli, tmp_path):
    port = free_port()
    server = start_tracking_server(tmp_path, port, tmp_path / "server.log")
    # HTTP basic auth in the tracking URI (a server without authentication ignores it).
    tracking = f"http://bob:Basic-Canary-7@127.0.0.1:{port}"
    secrets = [CANARY, QUOTED, "Plain-Canary-42", "Basic-Canary-7"]
    try:
        with postgres_database() as url:
            for i, (shape, storage) in enumerate(_storage_shapes(url).items()):
                name = f"knn-{i}"
                # A promotion writes nothing of the study's storage URL: one (through the
                # same tracking URL as the others) shows what the registry keeps; the other
                # shapes differ only where the storage URL itself is written.
                promote = [] if i == 0 else ["--no-promote"]
                result = cli("run", "--arch", "knn", "--trials", 2, "--study-name", name,
                             "--storage", storage, "--tracking-uri", tracking, *promote,
                             *TINY)  # fmt: skip
                assert result.exit_code == 0, (shape, result.output)
                listing = cli("studies", "--storage", storage)
                client = MlflowClient(f"http://127.0.0.1:{port}")
                seen = result.output + listing.output
                seen += _everything(client, storage, name, tmp_path / name)
                assert ":***@" in seen or "password=***" in seen, shape
                for secret in secrets:
                    assert secret not in seen, (shape, secret)
    finally:
        stop(server)
    log = (tmp_path / "server.log").read_text(errors="replace")
    assert not any(secret in log for secret in secrets)
