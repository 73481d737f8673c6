"""Every registered space suggests and builds at the edges of its ranges."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution

from search.choices import describe_space
from spaces import ARCHITECTURES
from spaces.common import suggest_regularization, suggest_training

SHARED = ("learning_rate", "batch_size", "optimizer", "l2", "dropout")


def _edge_params(arch: str, edge: int) -> dict:
    """Every hyperparameter at its low (edge 0) or high (edge -1) end."""
    params = {}
    for name, dist in describe_space(ARCHITECTURES[arch]).items():
        if isinstance(dist, CategoricalDistribution):
            params[name] = dist.choices[edge]
        else:
            params[name] = (dist.low, dist.high)[edge]
    return params


@pytest.mark.parametrize("edge", [0, -1], ids=["low", "high"])
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_builds_at_range_edges(arch, edge):
    space = ARCHITECTURES[arch]
    params = space.suggest(optuna.trial.FixedTrial(_edge_params(arch, edge)))
    model = space.build(params, input_shape=(28, 28, 1), num_classes=10)
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1)).astype(np.uint8)
    probs = model.predict(images, verbose=0)
    assert probs.shape == (3, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert model.layers[-1].dtype_policy.compute_dtype == "float32"


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_suggest_round_trips_through_fixed_trial(arch):
    """The winner is rebuilt from stored params: suggest(FixedTrial(params)) == params."""
    space = ARCHITECTURES[arch]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    params = space.suggest(trial)
    assert params == trial.params
    assert space.suggest(optuna.trial.FixedTrial(trial.params)) == params


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_shared_hyperparameters_have_one_name_and_range(arch):
    reference = optuna.create_study().ask()
    suggest_training(reference)
    suggest_regularization(reference)
    found = describe_space(ARCHITECTURES[arch])
    for name in SHARED:
        assert found[name] == reference.distributions[name], name


def test_depth_and_width_are_searched():
    assert {"n_layers", "n_units_l0", "n_units_l2"} <= set(describe_space(ARCHITECTURES["mlp"]))
    assert {"n_blocks", "n_stages"} <= set(describe_space(ARCHITECTURES["resnet"]))


def test_resnet_block_count_changes_the_model():
    space = ARCHITECTURES["resnet"]
    base = _edge_params("resnet", 0)
    counts = []
    for n_blocks in (1, 3):
        params = space.suggest(optuna.trial.FixedTrial({**base, "n_blocks": n_blocks}))
        model = space.build(params)
        counts.append(sum(layer.__class__.__name__ == "Add" for layer in model.layers))
    assert counts == [1, 3]
