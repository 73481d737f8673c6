"""Fine-tuning a registered champion: a whole grid, every trial from the champion's weights."""

from __future__ import annotations

import itertools

import pytest
from optuna.distributions import CategoricalDistribution

from runners.errors import FmsearchError
from search import api
from search.choices import describe_space
from search.finetune import check_grid
from spaces import ARCHITECTURES

DATA = {"subset": 300, "val_size": 100, "seed": 0, "quiet": True}
GRID = {"learning_rate": (1e-5, 5e-6), "batch_size": (32, 64), "patience": (2, 3)}


def test_finetune_runs_the_whole_grid_from_the_champion_s_weights(stores):
    searched = api.search(arch="mlp", trials=1, max_epochs=3, storage=stores["storage"],
                          tracking_uri=stores["tracking"], **DATA)  # fmt: skip
    champion_value = searched.study.best_value
    assert champion_value > 0.5

    result = api.finetune(model_uri="models:/fmsearch-mlp@champion", grid=GRID, max_epochs=1,
                          storage=stores["storage"], tracking_uri=stores["tracking"],
                          **DATA)  # fmt: skip
    assert result.study_name == "mlp-finetune"
    trials = result.study.trials
    assert sorted((t.params["learning_rate"], t.params["batch_size"], t.params["patience"])
                  for t in trials) == sorted(itertools.product(*GRID.values()))  # fmt: skip
    for trial in trials:
        assert trial.state.name == "COMPLETE"
        # One epoch at 1e-5 barely moves the champion's weights: the trial validates where
        # the champion did (a model trained from scratch so slowly stays near chance).
        assert trial.value == pytest.approx(champion_value, abs=0.03)
        assert isinstance(trial.distributions["learning_rate"], CategoricalDistribution)
    # The fine-tuning rates are the fine-tuning study's; the mlp space is as it was.
    assert describe_space(ARCHITECTURES["mlp"])["learning_rate"].low == 1e-4
    assert result.promotion.model_name == "fmsearch-mlp"
    assert result.promotion.alias in ("champion", "challenger")


def test_finetune_refuses_what_it_cannot_fine_tune(stores):
    with pytest.raises(FmsearchError, match=r"expected a registered model as models:/NAME@"):
        api.finetune(model_uri="runs:/abc/model", storage=stores["storage"],
                     tracking_uri=stores["tracking"])  # fmt: skip
    with pytest.raises(FmsearchError, match=r"expected a registered version at models:/nope@"):
        api.finetune(model_uri="models:/nope@champion", storage=stores["storage"],
                     tracking_uri=stores["tracking"])  # fmt: skip
    with pytest.raises(FmsearchError, match=r"expected names among learning_rate, .*'dropout'"):
        check_grid({"dropout": (0.1,)})
    with pytest.raises(FmsearchError, match=r"learning_rate: expected positive values, got"):
        check_grid({"learning_rate": ()})
