"""The learning-rate range test (Smith 2017, fastai's ``lr_find``): train briefly while the
learning rate rises exponentially, and read a good range off the loss curve."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

if TYPE_CHECKING:
    from runners.data import Split

# The test stops once the smoothed loss exceeds this many times its minimum: it has diverged.
DIVERGENCE = 4.0
SMOOTHING = 0.9


@dataclass(frozen=True)
class LearningRateRange:
    """What the range test measured and suggests.

    Attributes:
        learning_rates: The learning rate of each batch.
        losses: Each batch's training loss.
        smoothed: The losses, exponentially smoothed (bias-corrected).
        low: Suggested lowest learning rate: where the smoothed loss first falls 10% below its
            starting value (learning begins).
        high: Suggested highest: a tenth of the rate at the smoothed loss's minimum (past it
            training diverges), and never below ``3 * low``.
    """

    learning_rates: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    low: float
    high: float


def smooth(losses: np.ndarray, *, beta: float = SMOOTHING) -> np.ndarray:
    """Exponential moving average with bias correction (as fastai and Smith smooth it)."""
    out = np.empty(len(losses))
    average = 0.0
    for i, loss in enumerate(losses):
        average = beta * average + (1 - beta) * loss
        out[i] = average / (1 - beta ** (i + 1))
    return out


def suggest_range(learning_rates: np.ndarray, smoothed: np.ndarray) -> tuple[float, float]:
    """The (low, high) learning rates the curve suggests; see :class:`LearningRateRange`."""
    finite = np.isfinite(smoothed)
    if finite.sum() < 3:
        raise ValueError(f"expected at least 3 finite losses, got {int(finite.sum())}")
    rates, losses = learning_rates[finite], smoothed[finite]
    at_min = int(np.argmin(losses))
    high = float(rates[at_min]) / 10
    falling = np.flatnonzero(losses[: at_min + 1] <= 0.9 * losses[0])
    low = float(rates[falling[0]]) if falling.size else float(rates[0])
    low = min(low, high / 3)
    return low, high


def find_learning_rate(
    model: keras.Model,
    params: dict[str, Any],
    split: Split,
    *,
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    steps: int = 200,
) -> LearningRateRange:
    """Train ``model`` (uncompiled, from a space's ``build``) for ``steps`` batches of
    ``params["batch_size"]``, the learning rate rising from ``min_lr`` to ``max_lr``.

    Stops early once the loss diverges. The optimizer is ``params["optimizer"]``; the schedule
    of ``params`` is replaced by the rising rate.
    """
    from runners.augment import train_dataset
    from runners.data import NUM_CLASSES
    from runners.training import make_optimizer

    if not 0 < min_lr < max_lr:
        raise ValueError(f"expected 0 < min_lr < max_lr, got {min_lr:g} and {max_lr:g}")
    factor = (max_lr / min_lr) ** (1 / max(steps - 1, 1))
    schedule = keras.optimizers.schedules.ExponentialDecay(min_lr, decay_steps=1, decay_rate=factor)
    model.compile(
        optimizer=make_optimizer(params, learning_rate=schedule),
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=[],
    )
    recorder = _Recorder(schedule, steps=steps)
    batches = math.ceil(len(split.x_train) / params["batch_size"])
    plain = {**params, "mix": "none"}  # the test measures the rate, not augmentation
    dataset = train_dataset(
        split.x_train, split.y_train, params=plain, num_classes=NUM_CLASSES
    ).repeat()
    model.fit(dataset, steps_per_epoch=min(steps, batches * 100), epochs=1, shuffle=False,
              callbacks=[recorder], verbose=0)  # fmt: skip
    rates = np.asarray(recorder.learning_rates)
    losses = np.asarray(recorder.losses)
    smoothed = smooth(losses)
    low, high = suggest_range(rates, smoothed)
    return LearningRateRange(rates, losses, smoothed, low, high)


class _Recorder(keras.callbacks.Callback):
    """Records each batch's loss and learning rate; stops the fit once the loss diverges."""

    def __init__(self, schedule, *, steps: int) -> None:
        super().__init__()
        self._schedule = schedule
        self._steps = steps
        self.learning_rates: list[float] = []
        self.losses: list[float] = []
        self._best = math.inf

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        loss = float((logs or {}).get("loss", math.nan))
        self.learning_rates.append(float(self._schedule(batch)))
        self.losses.append(loss)
        smoothed = smooth(np.asarray(self.losses))[-1]
        self._best = min(self._best, smoothed)
        if (
            not math.isfinite(loss)
            or smoothed > DIVERGENCE * self._best
            or batch + 1 >= self._steps
        ):
            self.model.stop_training = True
