"""Two worker processes on one PostgreSQL study, tracked on an MLflow tracking server."""

from __future__ import annotations

import subprocess

import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from tests.scale_out.common import TINY, counted, study_of, trial_runs
from tests.services import ENV, FMSEARCH, free_port, postgres_database, start_tracking_server, stop

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path):
    port = free_port()
    process = start_tracking_server(tmp_path, port, tmp_path / "server.log")
    yield f"http://127.0.0.1:{port}", process
    stop(process)


def test_two_workers_on_postgres_and_a_tracking_server(tmp_path, server):
    uri, _ = server
    with postgres_database(password="hunter2-secret") as url:
        result = subprocess.run(
            [*FMSEARCH, "run", "--arch", "mlp", "--trials", "4", "--workers", "2", *TINY,
             "--storage", url, "--tracking-uri", uri],
            cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        study = study_of(url, "mlp")
        assert len(counted(study)) == 4
        assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
        listing = subprocess.run([*FMSEARCH, "studies", "--storage", url], env=ENV,
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "mlp\tmlp\t0\t0\t" in listing
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("mlp")
    parents = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`fmsearch.role` = 'study'"
    )
    assert len(parents) == 1
    runs = trial_runs(client, "mlp")
    assert len(runs) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}
    assert {r.info.status for r in runs} <= {"FINISHED", "KILLED"}
    champion = client.get_model_version_by_alias("fmsearch-mlp", "champion")
    assert float(champion.tags["test_accuracy"]) > 0.3
    # The password is nowhere: output, logs, parent run params and tags.
    everything = result.stdout + result.stderr + listing + str(parents[0].data)
    everything += (tmp_path / "server.log").read_text(errors="replace")
    assert "hunter2-secret" not in everything
    assert ":***@" in parents[0].data.params["storage"]
