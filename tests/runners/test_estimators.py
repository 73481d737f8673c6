"""scikit-learn trials: growing data subsets stand in for epochs, so pruning still saves work."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from runners.data import SPLIT_SEED, stratified_order
from runners.estimators import FRACTIONS, fit_estimator_trial, to_features
from spaces import logreg

from .test_training import Recorder

PARAMS = {"pca_components": 32, "C": 1.0}


def test_reports_after_each_growing_fit_and_keeps_the_full_fit(small_split):
    reporter = Recorder()
    model, result, predicted = fit_estimator_trial(
        logreg.build(PARAMS), small_split, reporter=reporter
    )
    sizes = [epoch["train_size"] for epoch in reporter.epochs]
    n = len(small_split.y_train)
    assert sizes == [round(f * n) for f in FRACTIONS]
    assert [step for step, _ in reporter.reports] == [0, 1, 2, 3]
    # The value and the model are the full fit's, and its predictions are the model's.
    np.testing.assert_array_equal(predicted, model.predict(to_features(small_split.x_val)))
    assert result.best_value == pytest.approx(float(np.mean(predicted == small_split.y_val)))
    assert result.best_value == reporter.reports[-1][1] > 0.6
    assert model[-1].n_features_in_ == 32


def test_even_the_smallest_share_holds_every_class(small_split):
    order = stratified_order(small_split.y_train, np.random.default_rng(SPLIT_SEED))
    first = order[: round(FRACTIONS[0] * len(order))]
    assert len(np.unique(small_split.y_train[first])) == 10


def test_prunes_before_the_expensive_fits(small_split):
    reporter = Recorder(prune_after=1)
    with pytest.raises(optuna.TrialPruned, match=r"pruned after 75 training images \(step 0\)"):
        fit_estimator_trial(logreg.build(PARAMS), small_split, reporter=reporter)
    assert len(reporter.epochs) == 1


def test_the_full_fit_is_never_pruned(small_split):
    reporter = Recorder(prune_after=4)
    _, result, _ = fit_estimator_trial(logreg.build(PARAMS), small_split, reporter=reporter)
    assert result.epochs == 4


def test_fractions_must_grow_to_one(small_split):
    with pytest.raises(ValueError, match=r"expected growing fractions ending at 1.0"):
        fit_estimator_trial(
            logreg.build(PARAMS), small_split, reporter=Recorder(), fractions=(0.5, 0.25)
        )


def test_an_f1_objective_is_reported_after_each_fit(small_split):
    from runners.metrics import score

    reporter = Recorder()
    _, result, predicted = fit_estimator_trial(
        logreg.build(PARAMS), small_split, reporter=reporter, metric="worst_class_f1"
    )
    assert result.history["val_worst_class_f1"] == [value for _, value in reporter.reports]
    worst = score("worst_class_f1", small_split.y_val, predicted, num_classes=10)
    assert result.best_value == pytest.approx(worst)
    assert worst < float(np.mean(predicted == small_split.y_val))
