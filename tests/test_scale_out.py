"""Scale-out against real services: worker processes, PostgreSQL, an MLflow tracking server,
and the faults of RELIABILITY.md injected for real (SIGKILL, a database restart, a tracking
server that goes away)."""

from __future__ import annotations

import functools
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from search.storage import open_storage
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
TINY = ["--subset", "300", "--val-size", "200", "--max-epochs", "2", "--seed", "0"]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@functools.cache
def _storage(url: str):
    # One storage (one connection pool) per database: a new one per poll would exhaust
    # PostgreSQL's connection slots. fmsearch's, because polling a database that a worker is
    # creating races Optuna's schema creation.
    return open_storage(url)


def _study(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=_storage(url))


def _counted(study: optuna.Study) -> list:
    """Finished trials, a re-run trial counted once (as its re-run)."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    return [t for t in trials if t.state in FINISHED and t.number not in retried]


def _wait(condition, *, seconds: float, what: str, processes=()) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        for p in processes:
            if p.poll() is not None:
                raise AssertionError(f"{p.args} exited with {p.returncode} before {what}")
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {seconds} s")


def _trial_runs(client: MlflowClient, study_name: str) -> list:
    experiment = client.get_experiment_by_name(study_name)
    return client.search_runs(
        [experiment.experiment_id], filter_string="tags.`fmsearch.role` = 'trial'"
    )


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
        study = _study(url, "mlp")
        assert len(_counted(study)) == 4
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
    runs = _trial_runs(client, "mlp")
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


def test_a_killed_worker_s_trial_fails_and_runs_again(tmp_path):
    """SIGKILL mid-trial: heartbeats fail the trial, another worker re-runs it, the study
    ends with the trials asked for; a restarted worker rejoins."""
    store = f"sqlite:///{tmp_path}/mlruns/optuna.db"
    beat = ["--heartbeat-interval", "1"]
    coordinator = start(
        [*FMSEARCH, "run", "--arch", "cnn", "--trials", "2", "--workers", "0", *beat,
         "--subset", "600", "--val-size", "200", "--max-epochs", "3", "--pruner", "none",
         "--patience", "0", "--seed", "0"],
        cwd=tmp_path, log=tmp_path / "run.log",
    )  # fmt: skip
    _wait(lambda: (tmp_path / "mlruns/optuna.db").exists() and _has_study(store, "cnn"),
          seconds=120, what="study", processes=[coordinator])  # fmt: skip
    worker = [*FMSEARCH, "worker", "--study-name", "cnn", *beat, "--threads", "1"]
    victim = start(worker, cwd=tmp_path, log=tmp_path / "victim.log")
    survivor = start(worker, cwd=tmp_path, log=tmp_path / "survivor.log")

    def victim_mid_trial():
        for t in _study(store, "cnn").get_trials(states=(TrialState.RUNNING,)):
            if t.user_attrs.get("worker", "").endswith(f":{victim.pid}") and t.intermediate_values:
                return t.number
        return None

    _wait(lambda: victim_mid_trial() is not None, seconds=300, what="victim trial",
          processes=[victim])  # fmt: skip
    killed = victim_mid_trial()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    rejoined = start(worker, cwd=tmp_path, log=tmp_path / "rejoined.log")
    assert coordinator.wait(timeout=600) == 0, (tmp_path / "run.log").read_text()
    assert survivor.wait(timeout=120) == 0
    assert rejoined.wait(timeout=120) == 0
    study = _study(store, "cnn")
    assert len(_counted(study)) == 2
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    dead = study.trials[killed]
    assert dead.state == TrialState.FAIL
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    run = client.get_run(dead.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert "stopped sending heartbeats" in run.data.tags["fmsearch.reason"]
    assert all(r.info.status != "RUNNING" for r in _trial_runs(client, "cnn"))


def _count(url: str, name: str, states) -> int:
    """Trials of ``states`` in the study, 0 while it does not exist yet."""
    try:
        return len(_study(url, name).get_trials(deepcopy=False, states=states))
    except KeyError:
        return 0


def _has_study(url: str, name: str) -> bool:
    return _count(url, name, (TrialState.WAITING,)) > 0


def test_postgres_restart_during_a_study(tmp_path):
    with postgres_database(exclusive=True) as url:
        run = start(
            [*FMSEARCH, "run", "--arch", "mlp", "--trials", "6", "--workers", "2",
             "--heartbeat-interval", "2", "--subset", "3000", "--val-size", "500",
             "--max-epochs", "3", "--pruner", "none", "--seed", "0", "--storage", url,
             "--no-promote"],
            cwd=tmp_path, log=tmp_path / "run.log",
        )  # fmt: skip
        _wait(lambda: _count(url, "mlp", (TrialState.COMPLETE,)),
              seconds=300, what="complete trial", processes=[run])  # fmt: skip
        restart_postgres()
        assert run.wait(timeout=600) == 0, (tmp_path / "run.log").read_text()
        study = _study(url, "mlp")
        assert len(_counted(study)) == 6
        assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
        # At most the trials in flight (one per worker) were lost.
        assert len(study.get_trials(states=(TrialState.COMPLETE,))) >= 4


def test_tracking_server_down_for_part_of_a_study(tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_tracking_server(tmp_path, port, tmp_path / "server.log")
    store = f"sqlite:///{tmp_path}/optuna.db"
    # Fewer HTTP retries than fmsearch's default, to keep the test short.
    env = {**ENV, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
    run = start(
        [*FMSEARCH, "run", "--arch", "mlp", "--trials", "4", "--subset", "2000",
         "--val-size", "500", "--max-epochs", "2", "--pruner", "none", "--seed", "0",
         "--storage", store, "--tracking-uri", uri, "--no-promote"],
        cwd=tmp_path, log=tmp_path / "run.log", env=env,
    )  # fmt: skip
    try:
        _wait(lambda: _count(store, "mlp", (TrialState.COMPLETE,)),
              seconds=300, what="complete trial", processes=[run])  # fmt: skip
        stop(server)
        down_at = time.monotonic()
        _wait(lambda: _count(store, "mlp", FINISHED) >= 2,
              seconds=300, what="trials while the server is down", processes=[run])  # fmt: skip
        server = start_tracking_server(tmp_path, port, tmp_path / "server2.log")
        assert run.wait(timeout=600) == 0, (tmp_path / "run.log").read_text()
    finally:
        stop(server)
    assert time.monotonic() - down_at < 600
    study = _study(store, "mlp")
    assert len(_counted(study)) == 4
    server = start_tracking_server(tmp_path, port, tmp_path / "server3.log")
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        runs = {r.info.run_id: r for r in _trial_runs(client, "mlp")}
        missed = [t for t in study.trials if t.user_attrs.get("mlflow_unlogged")]
        assert missed, "the outage should have cost some trial part of its record"
        for trial in study.trials:
            unlogged = trial.user_attrs.get("mlflow_unlogged", [])
            run = runs.get(trial.user_attrs.get("mlflow_run_id"))
            if not unlogged:  # a full record
                assert run is not None and run.info.status == "FINISHED"
                assert "best_val_accuracy" in run.data.metrics
            # What was logged before the outage is still there.
            if run is not None and "epoch 1 metrics" not in unlogged:
                assert client.get_metric_history(run.info.run_id, "val_accuracy")
    finally:
        stop(server)
    log = Path(tmp_path / "run.log").read_text()
    assert "does not answer" in log
