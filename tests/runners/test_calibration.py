from __future__ import annotations

import numpy as np
import pytest

from runners.calibration import (
    expected_calibration_error,
    fit_temperature,
    log_loss,
    reliability,
    temperature_scaled,
)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _calibrated(rng, n=20_000, classes=10, scale=2.0):
    """Probabilities and labels drawn from those probabilities: calibrated by construction."""
    probabilities = _softmax(rng.normal(scale=scale, size=(n, classes)))
    labels = np.array([rng.choice(classes, p=p) for p in probabilities])
    return probabilities, labels


def test_a_calibrated_model_has_a_small_error_and_an_overconfident_one_a_large_one(rng):
    probabilities, labels = _calibrated(rng)
    assert expected_calibration_error(probabilities, labels) < 0.02
    # The same logits times 3: the same predictions, far more confident than they are right.
    overconfident = temperature_scaled(probabilities, 1 / 3)
    assert (overconfident.argmax(axis=1) == probabilities.argmax(axis=1)).all()
    assert expected_calibration_error(overconfident, labels) > 0.15
    assert log_loss(overconfident, labels) > log_loss(probabilities, labels)


def test_the_fitted_temperature_undoes_overconfidence(rng):
    probabilities, labels = _calibrated(rng)
    overconfident = temperature_scaled(probabilities, 1 / 3)
    temperature = fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    mended = temperature_scaled(overconfident, temperature)
    assert expected_calibration_error(mended, labels) < 0.02
    np.testing.assert_allclose(mended.sum(axis=1), 1.0, rtol=1e-9)


def test_reliability_bins_hold_every_prediction_once():
    probabilities = np.array([[0.95, 0.05], [0.55, 0.45], [0.3, 0.7], [0.5, 0.5]])
    labels = np.array([0, 1, 1, 0])
    bins = reliability(probabilities, labels, n_bins=10)
    assert bins.counts.sum() == 4
    np.testing.assert_allclose(bins.confidence, [0.5, 0.55, 0.7, 0.95])
    np.testing.assert_allclose(bins.accuracy, [1.0, 0.0, 1.0, 1.0])
    # |1-0.5| + |0-0.55| + |1-0.7| + |1-0.95|, each a quarter of the predictions.
    assert expected_calibration_error(probabilities, labels, n_bins=10) == pytest.approx(0.35)
