"""One trial through the objective: what it trains on (its fidelity), how early stopping
watches it, what it records and returns, and how a broken configuration fails it alone.
Fast: the fidelity and patience need no training, and a k-NN trial needs no TensorFlow."""

from __future__ import annotations

import types

import mlflow
import numpy as np
import optuna
import pytest

from runners.data import Split
from runners.errors import TrialFailed
from search.names import (
    FAIL_REASON_ATTR,
    LATENCY_ATTR,
    REFIT_ATTR,
    REFIT_EPOCHS_ATTR,
    RUN_ID_ATTR,
    RUNG_ATTR,
    STANDS_IN_ATTR,
    TRAIN_IMAGES_ATTR,
    WORKER_ATTR,
)
from search.trials.objective import Objective, TrialRules
from spaces import ARCHITECTURES


def split(n: int) -> Split:
    rng = np.random.default_rng(n)
    x = rng.integers(0, 255, size=(n, 28, 28), dtype=np.uint8)
    y = np.arange(n) % 10
    return Split(x_train=x, y_train=y, x_val=x[: n // 2], y_val=y[: n // 2])


def objective(*, arch="mlp", tracker=None, objectives=("accuracy",), **kwargs) -> Objective:
    settings = {
        "space": ARCHITECTURES[arch], "arch": arch, "split": split(40),
        "tracker": tracker, "experiment_id": "0", "parent_run_id": "parent",
        "rules": TrialRules(max_epochs=6, seed=0, patience=2, objectives=objectives),
        "narrowed": {},
    }  # fmt: skip
    return Objective(**{**settings, **kwargs})


def new_trial(params=None, **attrs) -> optuna.Trial:
    study = optuna.create_study()
    if params is not None:
        study.enqueue_trial(params)
    trial = study.ask()
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    return trial


def test_a_search_trial_trains_on_the_search_s_images_for_its_epochs():
    o = objective()
    assert o._fidelity(new_trial(), None) == (o._split, 6, None)


def test_a_planned_trial_trains_at_its_rung_s_fidelity():
    rungs = {0: types.SimpleNamespace(split=split(20), epochs=1),
             2: types.SimpleNamespace(split=split(60), epochs=4)}  # fmt: skip
    o = objective(ladder=types.SimpleNamespace(data=rungs.__getitem__))
    trial = new_trial(**{RUNG_ATTR: 2})
    assert o._fidelity(trial, None) == (rungs[2].split, 4, 2)
    first = new_trial()  # from the plain pool: the lowest rung, and marked so
    assert o._fidelity(first, None)[1:] == (1, 0)
    assert first.user_attrs[RUNG_ATTR] == 0


def test_a_refit_trains_on_all_images_for_its_own_epochs():
    full = split(80)
    o = objective(refit_split=full)
    trial = new_trial(**{REFIT_ATTR: 3, REFIT_EPOCHS_ATTR: 20})
    assert o._fidelity(trial, 3) == (full, 20, None)


def test_patience_is_the_search_s_for_search_trials_and_longer_for_a_constant_rate_refit():
    o = objective()
    params = {"lr_schedule": "constant"}
    assert o._patience_for(new_trial(), params, 6) == 2
    refit = new_trial(**{REFIT_ATTR: 0})
    assert o._patience_for(refit, params, 30) == 10  # a third of its epochs
    # A model standing in for one trained with the validation images has nothing to watch.
    assert o._patience_for(new_trial(**{REFIT_ATTR: 0, STANDS_IN_ATTR: 1}), params, 30) is None
    # A fine-tuning grid searches patience itself.
    assert o._patience_for(new_trial(), {**params, "patience": 7}, 6) == 7


def test_a_trial_records_itself_and_returns_its_validation_accuracy(tracker):
    o = objective(arch="knn", tracker=tracker, objectives=("accuracy", "latency"),
                  split=split(200), experiment_id=tracker.experiment_id("objective"))  # fmt: skip
    # The published configuration: a drawn n_neighbors may exceed the first share's images.
    trial = new_trial(ARCHITECTURES["knn"].DEFAULTS)
    accuracy, latency = o(trial)
    assert 0.0 <= accuracy <= 1.0 and latency == trial.user_attrs[LATENCY_ATTR] > 0
    assert trial.user_attrs[TRAIN_IMAGES_ATTR] == 200
    assert ":" in trial.user_attrs[WORKER_ATTR]  # host:pid
    run = mlflow.MlflowClient(tracker.tracking_uri).get_run(trial.user_attrs[RUN_ID_ATTR])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["best_val_accuracy"] == pytest.approx(accuracy)
    assert run.data.params["n_neighbors"] == str(trial.params["n_neighbors"])


def test_a_configuration_that_breaks_fails_its_trial_only(tracker, monkeypatch):
    o = objective(arch="knn", tracker=tracker, experiment_id=tracker.experiment_id("objective"))

    def broken(space, request, trial):
        raise ValueError("no such metric")

    monkeypatch.setattr(o._runner, "fit", broken)
    trial = new_trial(ARCHITECTURES["knn"].DEFAULTS)
    with pytest.raises(TrialFailed, match="ValueError: no such metric"):
        o(trial)
    assert trial.user_attrs[FAIL_REASON_ATTR] == "ValueError: no such metric"
    run = mlflow.MlflowClient(tracker.tracking_uri).get_run(trial.user_attrs[RUN_ID_ATTR])
    assert run.info.status == "FAILED"
