"""The source recipes: each is a point of its space, and builds the published design."""

from __future__ import annotations

import warnings

import optuna
import pytest

from spaces import ARCHITECTURES
from spaces.recipes import RECIPES, layer_signature, recipe


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_a_recipe_is_a_whole_configuration_of_its_space(name):
    """suggest(FixedTrial(params)) gives the recipe back, and no value is outside its range
    (Optuna warns when a fixed value is)."""
    r = RECIPES[name]
    space = ARCHITECTURES[r.arch]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        params = space.suggest(optuna.trial.FixedTrial(dict(r.params)))
    assert params == dict(r.params)
    if space.KIND == "keras":
        assert r.epochs and r.epochs >= 1
    assert r.published_accuracy is None or 0.8 < r.published_accuracy < 1


@pytest.mark.parametrize("name", sorted(n for n, r in RECIPES.items() if r.layers))
def test_a_recipe_builds_its_published_layer_list(name):
    r = RECIPES[name]
    model = ARCHITECTURES[r.arch].build(dict(r.params))
    assert layer_signature(model) == r.layers


def test_the_published_vggbn_differs_from_the_old_defaults_where_the_issue_says():
    params = recipe("vggbn-bn94").params
    assert (params["dropout_b0"], params["dropout_b1"], params["dropout_b2"]) == (0.25, 0.3, 0.4)
    assert params["dropout"] == 0.4 and params["use_l2"] is False and "l2" not in params
    assert params["batch_size"] == 64 and params["lr_schedule"] == "plateau"
    assert (params["plateau_factor"], params["plateau_patience"]) == (0.5, 3)
    assert params["shear"] and params["shear_factor"] == 0.1 and params["last_pool"] is False


def test_an_unknown_recipe_names_the_known_ones():
    with pytest.raises(KeyError, match=r"expected one of mlp-2hidden, .*vggbn-bn94.*got 'vgg'"):
        recipe("vgg")


def test_skip_connections_switch_off():
    params = {**recipe("resnet-2block").params, "skip": False}
    assert "Add" not in layer_signature(ARCHITECTURES["resnet"].build(params))
