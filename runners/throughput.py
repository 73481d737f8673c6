"""How fast this host trains and evaluates one model: the measurement a search plan starts from.

The probe trains the real model on real batches through the trial's own input pipeline
(augmentation included), so what it measures is what a trial will see, minus the per-trial
costs of building, validating and logging that the plan adds itself.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np

from runners.augment import eval_dataset, train_dataset
from runners.data import NUM_CLASSES
from runners.training import make_optimizer

# Batches before the clock starts: the first traces the graph, the next settle oneDNN's caches.
_WARMUP_BATCHES = 3
# Above the fastest any architecture here trains (the MLP; benchmarks/results/flops.md): the
# probe holds enough batches for its seconds at this rate, so that the clock, not the data,
# ends it.
_MAX_IMAGES_PER_SECOND = 20_000
_EVAL_BATCH = 512


@dataclass(frozen=True)
class Throughput:
    """Images per second this host trains and predicts, for one model.

    Attributes:
        train_images_per_s: Training images per second (forward, backward, update).
        eval_images_per_s: Images per second in prediction (validation, testing).
        probe_seconds: What the probe itself took, tracing included.
        train_images_timed: Training images the train rate was measured on.
    """

    train_images_per_s: float
    eval_images_per_s: float
    probe_seconds: float
    train_images_timed: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


class _StopAfter(keras.callbacks.Callback):
    """Times the batches after the warm-up and stops training once ``seconds`` have passed."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self._seconds = seconds
        self.batches = 0
        self.started: float | None = None
        self.elapsed = 0.0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if batch + 1 == _WARMUP_BATCHES:
            self.started = time.perf_counter()
            return
        if self.started is None:
            return
        self.batches += 1
        self.elapsed = time.perf_counter() - self.started
        if self.elapsed >= self._seconds:
            self.model.stop_training = True


def measure_throughput(
    model: keras.Model,
    params: dict[str, Any],
    images: np.ndarray,
    labels: np.ndarray,
    *,
    seconds: float = 4.0,
) -> Throughput:
    """Train ``model`` on ``images`` for about ``seconds`` (after a warm-up) and time it.

    Args:
        model: An uncompiled model from a space's ``build``; its weights change.
        params: The hyperparameters it was built from (batch size, optimizer, augmentation).
        images: uint8 training images shaped (N, 28, 28, 1); cycled if too few.
        labels: Their integer labels.
        seconds: How long to time training, and about a quarter of that for prediction.
    """
    start = time.perf_counter()
    batch = params["batch_size"]
    model.compile(
        optimizer=make_optimizer(params, total_steps=1000),
        loss=keras.losses.CategoricalCrossentropy(),
    )
    n_batches = _WARMUP_BATCHES + max(8, math.ceil(seconds * _MAX_IMAGES_PER_SECOND / batch))
    reps = math.ceil(n_batches * batch / len(images))
    x, y = np.concatenate([images] * reps), np.concatenate([labels] * reps)
    stop = _StopAfter(seconds)
    model.fit(
        train_dataset(x, y, params=params, num_classes=NUM_CLASSES),
        epochs=1,
        steps_per_epoch=n_batches,
        callbacks=[stop],
        shuffle=False,  # the dataset shuffles itself
        verbose=0,
    )
    timed = stop.batches * batch
    train_rate = timed / stop.elapsed if stop.elapsed > 0 else float("inf")
    # Prediction runs about three times the training rate: size the timed call to a
    # quarter of ``seconds`` at that rate, after a call that traces.
    n_eval = int(min(len(x), max(_EVAL_BATCH, 0.75 * seconds * min(train_rate, 1e5))))
    model.predict(eval_dataset(x[:_EVAL_BATCH], y[:_EVAL_BATCH], batch_size=_EVAL_BATCH,
                               num_classes=NUM_CLASSES), verbose=0)  # fmt: skip
    timed_eval = eval_dataset(x[:n_eval], y[:n_eval], batch_size=_EVAL_BATCH,
                              num_classes=NUM_CLASSES)  # fmt: skip
    eval_start = time.perf_counter()
    model.predict(timed_eval, verbose=0)
    eval_rate = n_eval / (time.perf_counter() - eval_start)
    return Throughput(
        train_images_per_s=train_rate,
        eval_images_per_s=eval_rate,
        probe_seconds=time.perf_counter() - start,
        train_images_timed=timed,
    )
