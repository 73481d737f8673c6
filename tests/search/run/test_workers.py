"""Creating and resuming a study's record of how its trials train."""

from __future__ import annotations

import re

import optuna
import pytest
from optuna.trial import TrialState

from runners.errors import FmsearchError
from search.names import SETTINGS_ATTR
from search.run.workers import SearchSettings, prepare_study
from search.storage.rdb import open_storage


def _prepare(url: str, **settings):
    return prepare_study(
        storage=open_storage(url), storage_url=url, study_name="logreg", arch="logreg",
        objectives=("accuracy",), settings=SearchSettings(**settings), n_trials=1,
    )  # fmt: skip


def test_a_study_resumes_with_new_settings_but_not_another_validation_set(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    _prepare(url, val_size=1000, max_epochs=3)
    # How trials train may change between sessions: they still compare on one validation set.
    resumed = _prepare(url, val_size=1000, max_epochs=5, sampler="random")
    assert resumed.user_attrs[SETTINGS_ATTR]["max_epochs"] == 5
    with pytest.raises(FmsearchError, match=(
        r"study 'logreg' validates its trials on 1000 images: expected --val-size 1000 to "
        r"resume it, got 20 \(trials judged on different validation sets cannot compete"
    )):  # fmt: skip
        _prepare(url, val_size=20)
    study = optuna.load_study(study_name="logreg", storage=url)
    assert study.user_attrs[SETTINGS_ATTR]["val_size"] == 1000
    assert study.user_attrs[SETTINGS_ATTR]["max_epochs"] == 5


def test_waiting_for_other_workers_ends_at_the_timeout(tmp_path, tracker):
    import threading

    from search.engines.optuna_pool import add_budget
    from search.run.workers import wait_for_pool

    url = f"sqlite:///{tmp_path}/optuna.db"
    study = _prepare(url)  # one trial waits in the pool; no worker takes it
    wait_for_pool(study, tracker=tracker, timeout=0.2, poll_seconds=0.05)
    assert [t.state for t in study.trials] == [TrialState.WAITING]

    # A trial that a worker runs is waited for past --timeout, until it ends ...
    running = study.ask()
    threading.Timer(1.0, lambda: study.tell(running, 0.5)).start()
    wait_for_pool(study, tracker=tracker, timeout=0.2, poll_seconds=0.05)
    assert study.trials[running.number].state == TrialState.COMPLETE
    # ... but not past --budget-hours (hard): the whole command keeps to the budget.
    add_budget(study, 2)
    late = study.ask()
    wait_for_pool(study, tracker=tracker, timeout=0.2, hard=True, poll_seconds=0.05)
    assert [t.state for t in study.trials[late.number :]] == [
        TrialState.RUNNING, TrialState.WAITING,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        ({"max_trials": 2, "max_memory_mib": None}, r"2 trials"),
        # Every Python process is over 1 MiB: the first trial already passes the ceiling.
        ({"max_trials": None, "max_memory_mib": 1.0}, r"\d+ MiB resident \(limit 1\)"),
    ],
)
def test_a_worker_stops_after_its_trials_or_past_its_memory_ceiling(limits, reason):
    from search.run.workers import Recycler, resident_mib

    recycler = Recycler(**limits)
    study = optuna.create_study()
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=5, callbacks=[recycler])
    assert len(study.trials) == recycler.trials == (limits["max_trials"] or 1)
    assert re.fullmatch(reason, recycler.reason or "")
    assert resident_mib() > 1


def test_without_limits_a_worker_runs_on():
    from search.run.workers import Recycler

    recycler = Recycler(max_trials=None, max_memory_mib=None)
    study = optuna.create_study()
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=5, callbacks=[recycler])
    assert len(study.trials) == 5 and recycler.reason is None
