"""A worker that starts again as a new process every few trials: the study goes on, nothing
is lost, and whatever supervises the worker sees one process throughout."""

from __future__ import annotations

import socket

import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from tests.scale_out.common import TINY, damage, has_study, study_of, wait_until
from tests.services import FMSEARCH, start

pytestmark = pytest.mark.slow


def test_a_worker_starts_again_as_a_new_process_after_its_trials(tmp_path):
    store = f"sqlite:///{tmp_path}/mlruns/optuna.db"
    # scikit-learn trials: the two processes of the worker pay no TensorFlow start-up.
    coordinator = start(
        [*FMSEARCH, "run", "--arch", "logreg", "--trials", "3", "--workers", "0", "--pruner",
         "none", "--no-promote", *TINY],
        cwd=tmp_path, log=tmp_path / "run.log",
    )  # fmt: skip
    wait_until(lambda: (tmp_path / "mlruns/optuna.db").exists() and has_study(store, "logreg"),
               seconds=120, what="study", processes=[coordinator])  # fmt: skip
    worker = start(
        [*FMSEARCH, "worker", "--study-name", "logreg", "--max-trials-per-process", "2"],
        cwd=tmp_path, log=tmp_path / "worker.log",
    )  # fmt: skip
    assert coordinator.wait(timeout=300) == 0, (tmp_path / "run.log").read_text()
    assert worker.wait(timeout=120) == 0
    log = (tmp_path / "worker.log").read_text()
    assert log.count("worker starts again as a new process after 2 trials") == 1, log
    assert log.count("Fashion-MNIST loaded") == 2, log  # each process loads the data
    study = study_of(store, "logreg")
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    assert damage(study, client, asked=3) == {"lost": 0, "duplicated": 0, "running": 0}
    # exec: one process id throughout, so a supervisor (Kubernetes, `run --workers N`) sees
    # one worker that never exited.
    assert {t.user_attrs["worker"] for t in trials} == {f"{socket.gethostname()}:{worker.pid}"}
