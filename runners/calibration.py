"""How far a classifier's confidence can be trusted, and temperature scaling to mend it.

A model is calibrated when, of the images it gives 80% confidence, 80% are right. The
expected calibration error (ECE, Guo et al. 2017) is the gap between confidence and accuracy,
averaged over confidence bins weighted by how many predictions fall in each. Temperature
scaling divides the logits by one number ``T`` fitted on validation images (``T > 1``
softens an over-confident model); it never changes which class is predicted, so accuracy
stays as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_BINS = 15
# log(T) is searched in [-LOG_T_BOUND, LOG_T_BOUND]: T from about 0.05 to 20.
LOG_T_BOUND = 3.0
_EPS = 1e-12


@dataclass(frozen=True)
class Reliability:
    """Predictions by confidence bin (equal widths over 0..1); empty bins are left out.

    Attributes:
        confidence: Mean confidence of the predictions in each bin.
        accuracy: Their accuracy.
        counts: How many predictions each bin holds.
    """

    confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray


def reliability(
    probabilities: np.ndarray, labels: np.ndarray, *, n_bins: int = N_BINS
) -> Reliability:
    """Confidence against accuracy, bin by bin (a reliability diagram's points)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    # Bin i holds confidences in (i/n, (i+1)/n]; a confidence of exactly 0 joins bin 0.
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    kept = counts > 0
    mean_confidence = np.bincount(bins, weights=confidence, minlength=n_bins)[kept] / counts[kept]
    accuracy = np.bincount(bins, weights=correct, minlength=n_bins)[kept] / counts[kept]
    return Reliability(mean_confidence, accuracy, counts[kept])


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, *, n_bins: int = N_BINS
) -> float:
    """The ECE: |accuracy - confidence| per bin, weighted by the bin's share of predictions."""
    bins = reliability(probabilities, labels, n_bins=n_bins)
    weights = bins.counts / bins.counts.sum()
    return float(np.sum(weights * np.abs(bins.accuracy - bins.confidence)))


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes (cross-entropy)."""
    true = probabilities[np.arange(len(labels)), np.asarray(labels)]
    return float(-np.mean(np.log(np.clip(true, _EPS, 1.0))))


def temperature_scaled(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """``probabilities`` as if their logits were divided by ``temperature``."""
    logits = np.log(np.clip(probabilities, _EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the log loss of ``labels`` (validation images)."""
    from scipy.optimize import minimize_scalar

    found = minimize_scalar(
        lambda log_t: log_loss(temperature_scaled(probabilities, float(np.exp(log_t))), labels),
        bounds=(-LOG_T_BOUND, LOG_T_BOUND),
        method="bounded",
    )
    return float(np.exp(found.x))
