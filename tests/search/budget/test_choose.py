"""Which architecture a budgeted search over several spends its budget on (no training)."""

from __future__ import annotations

import math

import pytest

from runners.errors import FmsearchError
from search.budget.choose import (
    HALVING_COST,
    HALVING_COSTS,
    RECIPE_ACCURACY,
    choose,
    expected_accuracy,
)
from search.budget.plan import make_plan


def plans(budget_seconds: float, rates: dict[str, float]) -> dict:
    return {
        family: make_plan(
            budget_seconds=budget_seconds,
            train_images_per_s=rate,
            eval_images_per_s=4 * rate,
            train_images=50_000,
            val_images=10_000,
            started_at=0.0,
        )
        for family, rate in rates.items()
    }


def test_a_recipe_trained_to_its_end_is_expected_at_its_accuracy_and_less_for_each_halving():
    accuracy, epochs = RECIPE_ACCURACY["vggbn"]
    assert expected_accuracy("vggbn", epochs=epochs) == expected_accuracy("vggbn", epochs=99)
    assert expected_accuracy("vggbn", epochs=epochs) == accuracy
    assert accuracy - expected_accuracy("vggbn", epochs=25) == pytest.approx(HALVING_COST)
    assert accuracy - expected_accuracy("vggbn", epochs=10) == pytest.approx(
        HALVING_COST * math.log2(5)
    )
    # The small convolutional networks lose less for each halving, as measured.
    cnn, cnn_epochs = RECIPE_ACCURACY["cnn"]
    assert cnn - expected_accuracy("cnn", epochs=cnn_epochs // 2) == pytest.approx(
        HALVING_COSTS["cnn"]
    )
    assert HALVING_COSTS["cnn"] < HALVING_COST
    assert expected_accuracy("cnn", epochs=0) == 0.0
    assert expected_accuracy("lstm-that-has-no-recipe", epochs=10) is None


def test_a_short_budget_on_a_slow_host_goes_to_a_small_network_trained_long():
    """A float32 host's rates: the wide network's final would get a few epochs."""
    rates = {"vggbn": 275.0, "cnn": 2_500.0, "mlp": 20_000.0}
    choice = choose(plans(900, rates), images_per_s=rates)
    assert choice.family == "cnn"
    assert choice.epochs["vggbn"] < choice.epochs["cnn"]
    assert choice.expected["vggbn"] < choice.expected["cnn"]


def test_a_long_budget_on_a_fast_host_goes_to_the_wide_network():
    rates = {"vggbn": 1_500.0, "cnn": 6_000.0, "mlp": 30_000.0}
    choice = choose(plans(7_200, rates), images_per_s=rates)
    assert choice.family == "vggbn"
    assert choice.expected["vggbn"] > choice.expected["cnn"] > choice.expected["mlp"]


def test_a_family_whose_plan_does_not_fit_is_never_chosen_and_none_fitting_is_an_error():
    rates = {"vggbn": 1_500.0, "mlp": 30_000.0}
    choice = choose({"vggbn": None, "mlp": plans(900, rates)["mlp"]}, images_per_s=rates)
    assert choice.family == "mlp" and choice.expected["vggbn"] is None
    with pytest.raises(FmsearchError, match="expected a budget that holds one trial of vggbn"):
        choose({"vggbn": None}, images_per_s=rates)


def test_the_choice_prints_every_family_s_expectation_best_first():
    rates = {"vggbn": 275.0, "cnn": 2_500.0}
    text = choose(plans(900, rates), images_per_s=rates).describe(requested="auto")
    first, cnn, vggbn = text.splitlines()
    assert first.startswith("--arch auto: cnn, alone")
    assert cnn.split()[0] == "cnn" and cnn.endswith("<- chosen")
    assert vggbn.split()[0] == "vggbn" and "275 images/s" in vggbn


def test_a_short_budget_goes_to_the_cnn_over_a_minicnn_that_gets_more_epochs():
    """One float32 core in 15 minutes: the MiniCNN's final gets more epochs than the CNN's,
    but the CNN loses less for each epoch it does without (as measured)."""
    rates = {"cnn": 600.0, "minicnn": 950.0}
    choice = choose(plans(900, rates), images_per_s=rates)
    assert choice.epochs["minicnn"] > choice.epochs["cnn"]
    assert choice.family == "cnn"
