from __future__ import annotations

import optuna
import pytest

from search.engines.optuna_pool import run_study
from search.names import BASELINE_ATTR
from search.storage.rdb import create_or_load_study, open_storage
from spaces import mlp

GOOD_MLP = {
    **mlp.DEFAULTS,
    "n_units_l0": 128,
    "n_units_l1": 64,
    "use_l2": True,
    "l2": 1e-5,
    "dropout": 0.1,
    "learning_rate": 2e-3,
    "batch_size": 32,
    "optimizer": "adam",
}
BAD_MLP = {
    **GOOD_MLP,
    "n_units_l0": 32,
    "learning_rate": 1e-4,
    "optimizer": "sgd",
    "batch_size": 256,
}


@pytest.fixture
def tiny_study(storage_url, tracker, small_split):
    """Run a small real study; enqueued params make its trials predictable."""

    def run(
        *,
        name="tiny",
        arch="mlp",
        enqueue=(),
        n_trials=None,
        max_epochs=2,
        pruner=None,
        split=small_split,
        storage=None,
        baseline=None,
        **kwargs,
    ):
        study = create_or_load_study(
            storage=open_storage(storage or storage_url),
            study_name=name,
            arch=arch,
            sampler=optuna.samplers.RandomSampler(seed=0),
            pruner=pruner or optuna.pruners.NopPruner(),
        )
        for i, params in enumerate(enqueue):
            # The first is the study's baseline when one is named, as prepare_study marks it.
            marks = {BASELINE_ATTR: baseline} if i == 0 and baseline else None
            study.enqueue_trial(params, user_attrs=marks)
        outcome = run_study(
            study=study,
            arch=arch,
            split=split,
            tracker=tracker,
            n_trials=n_trials or len(enqueue) or 1,
            max_epochs=max_epochs,
            seed=0,
            **kwargs,
        )
        return study, outcome

    return run
