"""A worker killed mid-trial (SIGKILL): its trial fails by heartbeat and runs again."""

from __future__ import annotations

import signal

import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from tests.scale_out.common import counted, damage, has_study, study_of, trial_runs, wait_until
from tests.services import FMSEARCH, start

pytestmark = pytest.mark.slow


def test_a_killed_worker_s_trial_fails_and_runs_again(tmp_path):
    """SIGKILL mid-trial: heartbeats fail the trial, another worker re-runs it, the study
    ends with the trials asked for; a restarted worker rejoins."""
    store = f"sqlite:///{tmp_path}/mlruns/optuna.db"
    beat = ["--heartbeat-interval", "1"]
    coordinator = start(
        [*FMSEARCH, "run", "--arch", "cnn", "--trials", "2", "--workers", "0", *beat,
         "--subset", "600", "--val-size", "200", "--max-epochs", "3", "--pruner", "none",
         "--patience", "0", "--seed", "0", "--no-promote"],
        cwd=tmp_path, log=tmp_path / "run.log",
    )  # fmt: skip
    wait_until(lambda: (tmp_path / "mlruns/optuna.db").exists() and has_study(store, "cnn"),
               seconds=120, what="study", processes=[coordinator])  # fmt: skip
    worker = [*FMSEARCH, "worker", "--study-name", "cnn", *beat, "--threads", "1"]
    victim = start(worker, cwd=tmp_path, log=tmp_path / "victim.log")
    survivor = start(worker, cwd=tmp_path, log=tmp_path / "survivor.log")

    def victim_mid_trial():
        for t in study_of(store, "cnn").get_trials(states=(TrialState.RUNNING,)):
            if t.user_attrs.get("worker", "").endswith(f":{victim.pid}") and t.intermediate_values:
                return t.number
        return None

    wait_until(lambda: victim_mid_trial() is not None, seconds=300, what="victim trial",
               processes=[victim])  # fmt: skip
    killed = victim_mid_trial()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    rejoined = start(worker, cwd=tmp_path, log=tmp_path / "rejoined.log")
    assert coordinator.wait(timeout=600) == 0, (tmp_path / "run.log").read_text()
    assert survivor.wait(timeout=120) == 0
    assert rejoined.wait(timeout=120) == 0
    study = study_of(store, "cnn")
    assert len(counted(study)) == 2
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    dead = study.trials[killed]
    assert dead.state == TrialState.FAIL
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    run = client.get_run(dead.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert "stopped sending heartbeats" in run.data.tags["fmsearch.reason"]
    assert all(r.info.status != "RUNNING" for r in trial_runs(client, "cnn"))
    assert damage(study, client, asked=2) == {"lost": 0, "duplicated": 0, "running": 0}
