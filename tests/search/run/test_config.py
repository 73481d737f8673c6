"""The validated config: each way of giving a budget names its mode, the options land in their
groups, and what cannot work together is refused in one line, before anything is created."""

from __future__ import annotations

import dataclasses

import pytest

from runners.errors import FmsearchError
from search.engines.keras_tuner import KerasTunerEngine
from search.engines.optuna_pool import PoolEngine
from search.run.config import Mode, SearchOptions, check
from search.trials.choices import PLANNED_PRUNER
from spaces.common import AUGMENTED_MIN_EPOCHS, NO_AUGMENTATION


def config(**options):
    return check(SearchOptions(**options))


def test_trials_alone_run_that_many_without_a_time_limit():
    c = config(arch="mlp", trials=5, seed=3, subset=1000, storage="sqlite:///x.db")
    assert c.mode is Mode.TRIALS and not c.planned
    assert (c.budget.n_trials, c.budget.seconds, c.budget.hard) == (5, None, False)
    assert (c.training.seed, c.training.subset) == (3, 1000)
    assert c.stores.storage == "sqlite:///x.db"
    assert c.engine.cls is PoolEngine and c.study_name == "mlp"
    assert c.enqueue is True  # the published configuration first, by default


def test_no_trials_means_the_default_twenty():
    assert config(arch="mlp").budget.n_trials == 20


def test_a_timeout_bounds_the_trials_and_lets_the_running_ones_finish():
    c = config(arch="mlp", timeout=90)
    assert c.mode is Mode.TIMEOUT
    assert (c.budget.seconds, c.budget.hard) == (90, False)


def test_budget_hours_without_trials_is_a_plan_pruned_inside_its_rungs():
    c = config(arch="mlp", budget_hours=0.5)
    assert c.mode is Mode.PLAN and c.planned
    assert (c.budget.seconds, c.budget.hard) == (1800, True)
    assert c.engine.pruner == PLANNED_PRUNER
    # A plan's short rungs are its own business: no augmentation pinned off.
    assert c.training.fixed == {}


@pytest.mark.parametrize(
    "options",
    [
        {"arch": "mlp", "budget_hours": 0.5, "trials": 4},  # the trials asked for
        {"arch": "knn", "budget_hours": 0.5},  # scikit-learn: no epochs to plan
        {"arch": "mlp", "budget_hours": 0.5, "objective": "accuracy,params"},
        {"arch": "mlp", "budget_hours": 0.5, "refit_epochs": 5},
    ],
)
def test_budget_hours_that_cannot_be_planned_is_a_hard_time_limit(options):
    c = config(**options)
    assert c.mode is Mode.TIMEOUT
    assert (c.budget.seconds, c.budget.hard) == (1800, True)


def test_a_grid_is_its_own_mode_with_one_trial_a_point():
    points = [{"learning_rate": 1e-3}, {"learning_rate": 3e-3}, {"learning_rate": 1e-2}]
    c = check(SearchOptions(arch="mlp"), grid=points)
    assert c.mode is Mode.GRID
    assert c.budget.n_trials == 3 and c.grid == tuple(points)


def test_a_short_keras_search_pins_augmentation_off_unless_the_user_named_it():
    c = config(arch="mlp", max_epochs=AUGMENTED_MIN_EPOCHS - 1, fixes=["shift=true"])
    assert c.training.fixed["shift"] is True
    assert {k: c.training.fixed[k] for k in NO_AUGMENTATION if k != "shift"} == {
        k: v for k, v in NO_AUGMENTATION.items() if k != "shift"
    }


def test_keras_tuner_makes_its_own_adjustments():
    c = config(arch="cnn", engine="keras-tuner", tuner="bayesian", trials=3)
    assert c.engine.cls is KerasTunerEngine
    assert (c.engine.sampler, c.engine.pruner) == ("random", "none")
    assert c.study_name == "cnn-kt-bayesian" and c.enqueue is False


def test_several_objectives_turn_pruning_off():
    c = config(arch="mlp", objective="accuracy,latency")
    assert c.training.objectives == ("accuracy", "latency")
    assert c.engine.pruner == "none"


def test_the_config_cannot_be_changed_once_checked():
    c = config(arch="mlp")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.budget.n_trials = 100  # type: ignore[misc]


REFUSED = [
    ({"arch": "mlp", "timeout": 60, "budget_hours": 1},
     r"expected --timeout or --budget-hours, got both"),
    ({"arch": "mlp", "deterministic": True}, r"expected --seed N too"),
    ({"arch": "mlp", "trials": 3, "top_k": 2},
     r"--top-k: expected a planned search .* got no --budget-hours"),
    ({"arch": "mlp", "budget_hours": 1, "trials": 3, "final_on_all_data": True},
     r"got a search that is not planned"),
    ({"arch": "mlp", "objective": "accuracy,params", "refit_epochs": 5},
     r"--refit-epochs: expected --objective accuracy"),
    ({"arch": "cnn", "engine": "keras-tuner", "workers": 2}, r"expected --workers 1"),
    ({"arch": "mlp", "sampler": "grid", "engine": "keras-tuner"},
     r"--sampler grid: expected the Optuna engine"),
    ({"arch": "mlp", "enqueue": "no-such-recipe"}, r"--enqueue: "),
    ({"arch": "mlp", "engine": "nope"}, r"--engine must be one of"),
]  # fmt: skip


@pytest.mark.parametrize(("options", "message"), REFUSED)
def test_what_cannot_work_together_is_refused_in_one_line(options, message):
    with pytest.raises(FmsearchError, match=message) as caught:
        config(**options)
    assert "\n" not in str(caught.value)
