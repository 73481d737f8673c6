"""How one scikit-learn trial trains: data-size fidelity, so that pruning still saves work.

A scikit-learn model has no epochs to report after. Instead it is fitted on growing,
class-balanced shares of the training set (1/8, 1/4, 1/2, all of it), and its validation
accuracy (or the F1 the study optimises) is reported after each fit as steps 0 to 3: a pruner
stops a bad configuration after a cheap fit on few images, before the expensive ones. The
trial's model and value are those of the fit on the whole training set.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import optuna

from runners.data import NUM_CLASSES, SPLIT_SEED, Split, stratified_order
from runners.metrics import score
from runners.reporting import EpochReporter, TrialResult

FRACTIONS = (0.125, 0.25, 0.5, 1.0)


def to_features(images: np.ndarray) -> np.ndarray:
    """Flattened pixels scaled to 0..1, the input of every scikit-learn space (N, 784)."""
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def _fit(estimator: Any, x: np.ndarray, y: np.ndarray) -> Any:
    # A small share can hold fewer images than the PCA has components: PCA then keeps as
    # many as it can (the spaces name their PCA step "pca").
    pca = getattr(estimator, "named_steps", {}).get("pca")
    if pca not in (None, "passthrough") and pca.n_components > min(x.shape):
        estimator.set_params(pca__n_components=min(x.shape))
    return estimator.fit(x, y)


def fit_estimator_trial(
    estimator: Any,
    split: Split,
    *,
    reporter: EpochReporter,
    fractions: tuple[float, ...] = FRACTIONS,
    metric: str = "accuracy",
) -> tuple[Any, TrialResult, np.ndarray]:
    """Fit ``estimator`` on growing shares of the training set, reporting after each.

    Args:
        estimator: An unfitted scikit-learn estimator (a space's ``build``).
        split: Training and validation data.
        reporter: Gets every step's metrics and decides on pruning; the last step is
            reported but never pruned (the full fit is done by then).
        fractions: Shares of the training set, growing, the last one 1.0.
        metric: What is reported on the validation images (:data:`runners.metrics.METRICS`).

    Returns:
        The estimator fitted on all training images, what training measured (steps in
        place of epochs), and its predicted validation classes.

    Raises:
        optuna.TrialPruned: The reporter said to prune.
    """
    from sklearn.base import clone

    if not fractions or fractions[-1] != 1.0 or list(fractions) != sorted(fractions):
        raise ValueError(f"expected growing fractions ending at 1.0, got {fractions}")
    x_train, x_val = to_features(split.x_train), to_features(split.x_val)
    order = stratified_order(split.y_train, np.random.default_rng(SPLIT_SEED))
    monitor = f"val_{metric}"
    history: dict[str, list[float]] = {"train_size": [], monitor: [], "fit_seconds": []}
    start = time.perf_counter()
    fitted, predicted = None, None
    for step, fraction in enumerate(fractions):
        n = max(1, round(fraction * len(order)))
        rows = order[:n]
        tick = time.perf_counter()
        fitted = _fit(clone(estimator), x_train[rows], split.y_train[rows])
        predicted = np.asarray(fitted.predict(x_val))
        value = score(metric, split.y_val, predicted, num_classes=NUM_CLASSES)
        metrics = {
            "train_size": float(n),
            monitor: value,
            "fit_seconds": time.perf_counter() - tick,
        }
        for key, measured in metrics.items():
            history[key].append(measured)
        reporter.log_epoch(step, metrics)
        reporter.report(value, step)
        if step < len(fractions) - 1 and reporter.should_prune():
            raise optuna.TrialPruned(f"pruned after {n} training images (step {step})")
    values = history[monitor]
    result = TrialResult(
        best_value=values[-1],
        best_epoch=len(values) - 1,
        epochs=len(values),
        history=history,
        train_seconds=time.perf_counter() - start,
    )
    return fitted, result, predicted
