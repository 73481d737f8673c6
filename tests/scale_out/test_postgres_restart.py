"""Two worker processes on one PostgreSQL study, tracked on an MLflow tracking server, with
PostgreSQL restarted under them: the study goes on, the record is whole, the password is
nowhere."""

from __future__ import annotations

import subprocess

import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from tests.scale_out.common import (
    command_lines,
    count,
    counted,
    damage,
    study_of,
    trial_runs,
    wait_until,
)
from tests.services import (
    ENV,
    FMSEARCH,
    free_port,
    postgres_database,
    restart_postgres,
    start,
    start_tracking_server,
    stop,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path):
    port = free_port()
    process = start_tracking_server(tmp_path, port, tmp_path / "server.log")
    yield f"http://127.0.0.1:{port}"
    stop(process)


def test_two_workers_through_a_postgres_restart(tmp_path, server):
    with postgres_database(password="hunter2-secret", exclusive=True) as url:
        run = start(
            [*FMSEARCH, "run", "--arch", "mlp", "--trials", "6", "--workers", "2",
             "--heartbeat-interval", "2", "--subset", "1500", "--val-size", "500",
             "--max-epochs", "3", "--pruner", "none", "--seed", "0", "--storage", url,
             "--tracking-uri", server],
            cwd=tmp_path, log=tmp_path / "run.log",
        )  # fmt: skip
        wait_until(lambda: count(url, "mlp", (TrialState.COMPLETE,)),
              seconds=300, what="complete trial", processes=[run])  # fmt: skip
        # What `ps` shows any user of the machine: the workers' command lines.
        workers = [c for c in command_lines() if "worker" in c and "--worker-index" in c]
        assert len(workers) == 2 and not any("hunter2-secret" in c for c in workers), workers
        restart_postgres()
        assert run.wait(timeout=600) == 0, (tmp_path / "run.log").read_text()
        study = study_of(url, "mlp")
        assert len(counted(study)) == 6
        assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
        # At most the trials in flight (one per worker) were lost.
        assert len(study.get_trials(states=(TrialState.COMPLETE,))) >= 4
        listing = subprocess.run([*FMSEARCH, "studies", "--storage", url], env=ENV,
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
        client = MlflowClient(tracking_uri=server, registry_uri=server)
        assert damage(study, client, asked=6) == {"lost": 0, "duplicated": 0, "running": 0}
    assert "mlp\tmlp\t0\t0\t" in listing
    experiment = client.get_experiment_by_name("mlp")
    (parent,) = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`fmsearch.role` = 'study'"
    )
    runs = trial_runs(client, "mlp")
    assert len(runs) >= 6
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    assert {r.info.status for r in runs} <= {"FINISHED", "KILLED", "FAILED"}
    champion = client.get_model_version_by_alias("fmsearch-mlp", "champion")
    # Chance is 0.1: the champion was judged on the test set by a model that learned.
    assert float(champion.tags["test_accuracy"]) > 0.3
    # The password is nowhere: output, logs, parent run params and tags.
    everything = (tmp_path / "run.log").read_text(errors="replace") + listing + str(parent.data)
    everything += (tmp_path / "server.log").read_text(errors="replace")
    assert "hunter2-secret" not in everything
    assert ":***@" in parent.data.params["storage"]
