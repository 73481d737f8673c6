from __future__ import annotations

import optuna
import pytest

from runners.errors import FmsearchError
from search.trials.choices import (
    PRUNERS,
    SAMPLERS,
    describe_space,
    grid_points,
    make_pruner,
    make_sampler,
)
from spaces import ARCHITECTURES

EXPECTED_SAMPLERS = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
    # The grid is the pool's enqueued trials; what lies outside it is drawn at random.
    "grid": optuna.samplers.RandomSampler,
}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_runs_a_space(name):
    sampler = make_sampler(name, seed=3)
    assert isinstance(sampler, EXPECTED_SAMPLERS[name])
    study = optuna.create_study(sampler=sampler, direction="maximize")
    space = ARCHITECTURES["mlp"]
    # A few told trials, so that model-based samplers (CMA-ES, GP, TPE) really sample.
    study.optimize(lambda t: space.suggest(t)["learning_rate"], n_trials=12)
    assert len(study.trials) == 12


def test_seeded_samplers_repeat():
    def first_params(seed):
        study = optuna.create_study(sampler=make_sampler("tpe", seed=seed))
        trial = study.ask()
        return ARCHITECTURES["cnn"].suggest(trial)

    assert first_params(7) == first_params(7)
    assert first_params(7) != first_params(8)


def test_pruners():
    hyperband = make_pruner("hyperband", max_epochs=9)
    assert isinstance(hyperband, optuna.pruners.HyperbandPruner)
    assert hyperband._max_resource == 9
    assert isinstance(make_pruner("median", max_epochs=9), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner("none", max_epochs=9), optuna.pruners.NopPruner)
    assert set(PRUNERS) == {"hyperband", "median", "none"}


def test_unknown_names():
    with pytest.raises(FmsearchError, match=r"--sampler must be one of tpe, .*got 'bohb'"):
        make_sampler("bohb")
    with pytest.raises(FmsearchError, match=r"--pruner must be one of hyperband, .*got 'asha'"):
        make_pruner("asha", max_epochs=3)


def test_grid_points_are_the_product_of_the_choices():
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    narrowed = {
        "batch_size": CategoricalDistribution([64, 128]),
        "optimizer": CategoricalDistribution(["adam", "sgd", "adamw"]),
        "learning_rate": FloatDistribution(1e-4, 1e-3, log=True),  # a range: not a grid axis
    }
    points = grid_points(narrowed)
    assert len(points) == 6 and len({tuple(p.items()) for p in points}) == 6
    assert all(set(p) == {"batch_size", "optimizer"} for p in points)
    with pytest.raises(FmsearchError, match="expected a --space-file listing choices"):
        grid_points({"learning_rate": narrowed["learning_rate"]})


def test_describe_space_finds_conditional_hyperparameters():
    found = describe_space(ARCHITECTURES["dnn"])
    assert list(found)[:7] == ["n_layers", *(f"n_units_l{i}" for i in range(6))]
    assert found["learning_rate"].log
