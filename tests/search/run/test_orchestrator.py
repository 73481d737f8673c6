"""The orchestrator's decisions, without training: where a search's trials run and with which
engine and time limit, what local workers are told, and what always happens after the trials.
The phases themselves are stand-ins here; tests/search/test_api.py runs them for real."""

from __future__ import annotations

import time
import types

import optuna
import pytest

from runners.errors import FmsearchError
from search.engines.keras_tuner import KerasTunerEngine
from search.engines.optuna_pool import PoolEngine
from search.run import orchestrator, pipeline, workers
from search.run.config import SearchOptions, check
from search.run.workers import SearchSettings


def opened(tmp_path, *, started_at=None, **options) -> pipeline.Opened:
    config = check(SearchOptions(**options))
    return pipeline.Opened(
        config=config,
        tracker=types.SimpleNamespace(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"),
        storage=f"sqlite:///{tmp_path}/optuna.db",
        data=None,
        split=None,
        settings=SearchSettings(),
        study=optuna.create_study(study_name=config.study_name),
        run_params={"engine": config.engine.name},
        parent_run_id="parent",
        started_at=time.time() if started_at is None else started_at,
    )


@pytest.fixture
def calls(monkeypatch):
    """What the orchestrator asked of the phases and of the worker processes."""
    seen: dict[str, dict] = {}

    def record(name):
        return lambda *args, **kwargs: seen.setdefault(name, kwargs)

    monkeypatch.setattr(pipeline, "work_here", record("work_here"))
    monkeypatch.setattr(pipeline, "estimate", record("estimate"))
    monkeypatch.setattr(pipeline, "refresh_report", record("refresh_report"))
    monkeypatch.setattr(workers, "wait_for_pool", record("wait_for_pool"))
    monkeypatch.setattr(workers, "run_local_workers", lambda command, **kw: seen.setdefault(
        "run_local_workers", {"command": command, **kw}) and [0] * kw["n_workers"])  # fmt: skip
    return seen


def test_one_worker_runs_the_registered_engine_here(tmp_path, calls):
    s = opened(tmp_path, arch="mlp", trials=4, quiet=False)
    assert orchestrator._run_trials(s) == (None, None)
    here = calls["work_here"]
    assert isinstance(here["engine"], PoolEngine)
    assert (here["n_trials"], here["timeout"], here["hard_timeout"]) == (4, None, False)
    assert here["objectives"] == ("accuracy",) and here["run_params"] == s.run_params
    # Trials without a time limit get an estimate first, unless quiet.
    assert calls["estimate"] == {"n_trials": 4}


def test_keras_tuner_is_made_from_the_config_with_its_state_beside_the_study(tmp_path, calls):
    s = opened(tmp_path, arch="cnn", engine="keras-tuner", trials=3, quiet=True)
    orchestrator._run_trials(s)
    engine = calls["work_here"]["engine"]
    assert isinstance(engine, KerasTunerEngine)
    assert engine._directory == tmp_path.resolve() / "keras-tuner"
    assert engine._n_trials == 3
    assert "estimate" not in calls  # quiet


def test_a_hard_budget_counts_the_set_up_already_spent(tmp_path, calls):
    s = opened(tmp_path, arch="knn", budget_hours=0.1, started_at=time.time() - 60)
    orchestrator._run_trials(s)
    here = calls["work_here"]
    assert here["hard_timeout"] is True
    assert 360 - 60 - 5 < here["timeout"] <= 360 - 60
    assert "estimate" not in calls


def test_no_worker_here_waits_for_the_pool_until_the_time_limit(tmp_path, calls):
    s = opened(tmp_path, arch="mlp", trials=4, workers=0, timeout=30)
    orchestrator._run_trials(s)
    assert "work_here" not in calls
    assert calls["wait_for_pool"]["timeout"] == 30 and calls["wait_for_pool"]["hard"] is False


def test_local_workers_get_the_stores_by_environment_not_on_their_command_line(tmp_path, calls):
    s = opened(tmp_path, arch="mlp", trials=4, workers=2, timeout=30, quiet=True,
               data_dir=tmp_path / "data", heartbeat_interval=7)  # fmt: skip
    orchestrator._run_trials(s)
    started = calls["run_local_workers"]
    command = started["command"]
    assert command[command.index("--study-name") + 1] == "mlp"
    assert command[command.index("--heartbeat-interval") + 1] == "7"
    assert command[command.index("--timeout") + 1] == "30"
    assert "--quiet" in command and str(tmp_path / "data") in command
    assert not any("sqlite" in part for part in command)
    assert started["env"] == {"FMSEARCH_STORAGE": s.storage,
                              "MLFLOW_TRACKING_URI": s.tracker.tracking_uri}  # fmt: skip
    assert started["n_workers"] == 2


def test_the_report_is_refreshed_even_when_there_is_nothing_to_promote(tmp_path, calls):
    s = opened(tmp_path, arch="mlp", trials=1, register_as="mine")
    with pytest.raises(FmsearchError, match=r"study 'mlp' has no completed trial to promote"):
        orchestrator._finish(s, plan=None, ladder=None)
    assert calls["refresh_report"]["register_as"] == "mine"


def test_without_promotion_the_search_ends_with_its_outcome(tmp_path, calls):
    s = opened(tmp_path, arch="mlp", trials=1, promote=False)
    result = orchestrator._finish(s, plan=None, ladder=None)
    assert result.promotion is None and result.plan is None and result.refit is None
    assert result.outcome.study_name == "mlp"
    assert "refresh_report" in calls
