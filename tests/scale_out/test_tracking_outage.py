"""The MLflow tracking server down for part of a study: trials go on, the record says what
it missed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from tests.scale_out.common import (
    FINISHED,
    count,
    counted,
    damage,
    study_of,
    trial_runs,
    wait_until,
)
from tests.services import ENV, FMSEARCH, free_port, start, start_tracking_server, stop

pytestmark = pytest.mark.slow


def test_tracking_server_down_for_part_of_a_study(tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_tracking_server(tmp_path, port, tmp_path / "server.log")
    store = f"sqlite:///{tmp_path}/optuna.db"
    # Fewer HTTP retries than fmsearch's default, to keep the test short.
    env = {**ENV, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
    run = start(
        [*FMSEARCH, "run", "--arch", "mlp", "--trials", "3", "--subset", "1000",
         "--val-size", "500", "--max-epochs", "2", "--pruner", "none", "--seed", "0",
         "--storage", store, "--tracking-uri", uri, "--no-promote"],
        cwd=tmp_path, log=tmp_path / "run.log", env=env,
    )  # fmt: skip
    try:
        wait_until(lambda: count(store, "mlp", (TrialState.COMPLETE,)),
              seconds=300, what="complete trial", processes=[run])  # fmt: skip
        stop(server)
        down_at = time.monotonic()
        wait_until(lambda: count(store, "mlp", FINISHED) >= 2,
              seconds=300, what="trials while the server is down", processes=[run])  # fmt: skip
        server = start_tracking_server(tmp_path, port, tmp_path / "server2.log")
        assert run.wait(timeout=600) == 0, (tmp_path / "run.log").read_text()
    finally:
        stop(server)
    assert time.monotonic() - down_at < 600
    study = study_of(store, "mlp")
    assert len(counted(study)) == 3
    # The server's own store, read directly: what the server wrote is what it would serve.
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    runs = {r.info.run_id: r for r in trial_runs(client, "mlp")}
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
    log = Path(tmp_path / "run.log").read_text()
    assert "does not answer" in log
    cost = damage(study, client, asked=3)
    # A run whose end never reached the server is ended once the server is back.
    assert cost == {"lost": 0, "duplicated": 0, "running": 0}
