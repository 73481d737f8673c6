"""How one Keras trial trains: compile, fit with per-epoch reporting and pruning, keep the best.

The runner never talks to Optuna storage or MLflow. It gets a reporter: something with
``report(value, step)`` and ``should_prune()`` (an ``optuna.Trial`` has both) and
``log_epoch(epoch, metrics)``; the search side decides where those go.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

import keras
from optuna_integration import KerasPruningCallback

from runners.data import Split
from runners.errors import TrialFailed

MONITOR = "val_accuracy"
# Keras names its epoch logs after the compiled loss and metrics; MLflow gets clearer names.
_METRIC_NAMES = {"loss": "train_loss", "accuracy": "train_accuracy"}


class EpochReporter(Protocol):
    """Where a training run sends its per-epoch measurements."""

    def report(self, value: float, step: int) -> None: ...

    def should_prune(self) -> bool: ...

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...


@dataclass(frozen=True)
class TrialResult:
    """What training measured.

    Attributes:
        best_value: The best validation accuracy of any epoch (the trial's objective).
        best_epoch: The epoch (0-based) that reached it; the model holds its weights.
        epochs: Epochs trained.
        history: Per-epoch metrics, MLflow names (``train_loss``, ``val_accuracy``, ...).
        train_seconds: Wall time of ``fit``.
    """

    best_value: float
    best_epoch: int
    epochs: int
    history: dict[str, list[float]]
    train_seconds: float


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and the backend so that a trial's initial weights repeat."""
    keras.utils.set_random_seed(seed)


def make_optimizer(params: dict[str, Any]) -> keras.optimizers.Optimizer:
    """The optimizer named by ``params["optimizer"]`` at ``params["learning_rate"]``."""
    name, lr = params["optimizer"], params["learning_rate"]
    if name == "adam":
        return keras.optimizers.Adam(lr)
    if name == "adamw":
        return keras.optimizers.AdamW(lr)
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(lr)
    raise ValueError(f"optimizer must be one of adam, adamw, sgd, rmsprop, got {name!r}")


def fit_trial(
    model: keras.Model,
    params: dict[str, Any],
    split: Split,
    *,
    max_epochs: int,
    reporter: EpochReporter,
    patience: int | None = None,
) -> TrialResult:
    """Train ``model`` for up to ``max_epochs``, reporting validation accuracy every epoch.

    On return the model holds the weights of its best epoch.

    Args:
        model: An uncompiled model from a space's ``build``.
        params: The trial's hyperparameters (optimizer, learning rate, batch size).
        split: Training and validation data.
        max_epochs: Epochs at most.
        reporter: Gets every epoch's metrics and decides on pruning.
        patience: Stop after this many epochs without a better validation accuracy;
            None trains all ``max_epochs`` unless pruned.

    Raises:
        optuna.TrialPruned: The reporter said to prune.
        TrialFailed: The training loss became NaN or infinite.
    """
    model.compile(
        optimizer=make_optimizer(params),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    best = keras.callbacks.EarlyStopping(
        monitor=MONITOR, mode="max", patience=patience or max_epochs, restore_best_weights=True
    )
    callbacks = [_EpochLog(reporter), _FailOnNaN(), best, _Pruning(reporter, MONITOR)]
    start = time.perf_counter()
    history = model.fit(
        split.x_train,
        split.y_train,
        batch_size=params["batch_size"],
        epochs=max_epochs,
        validation_data=(split.x_val, split.y_val),
        validation_batch_size=512,
        callbacks=callbacks,
        verbose=0,
    ).history
    seconds = time.perf_counter() - start
    history = {_METRIC_NAMES.get(k, k): [float(v) for v in vs] for k, vs in history.items()}
    values = history[MONITOR]
    best_epoch = max(range(len(values)), key=values.__getitem__)
    return TrialResult(
        best_value=values[best_epoch],
        best_epoch=best_epoch,
        epochs=len(values),
        history=history,
        train_seconds=seconds,
    )


def free_memory() -> None:
    """Drop the graphs and tensors of finished trials, which otherwise pile up in one process."""
    keras.backend.clear_session(free_memory=True)
    gc.collect()


class _EpochLog(keras.callbacks.Callback):
    def __init__(self, reporter: EpochReporter) -> None:
        super().__init__()
        self._reporter = reporter
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        metrics = {_METRIC_NAMES.get(k, k): float(v) for k, v in (logs or {}).items()}
        metrics["epoch_seconds"] = time.perf_counter() - self._start
        self._reporter.log_epoch(epoch, metrics)


class _FailOnNaN(keras.callbacks.Callback):
    """Fail the trial on a NaN loss; checked per epoch to keep per-batch work out of ``fit``.

    Keras' own ``TerminateOnNaN`` checks every batch and by default stops quietly, leaving a
    NaN history that would look like a finished trial.
    """

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise TrialFailed(f"training loss became {loss} in epoch {epoch}")


class _Pruning(KerasPruningCallback):
    """Optuna's Keras pruning callback, with two changes.

    A missing metric is an error, not a warning: upstream only warns, and pruning then
    silently never happens. And the last epoch is reported but never pruned: there is no
    training left to save, and pruning would throw away a fully trained model (Hyperband's
    top rung can fall on the last epoch).
    """

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._monitor not in (logs or {}):
            raise RuntimeError(
                f"pruning monitors {self._monitor!r}, but the epoch logs hold {sorted(logs or {})}"
            )
        if epoch + 1 >= self.params.get("epochs", float("inf")):
            self._trial.report(float(logs[self._monitor]), step=epoch)
            return
        super().on_epoch_end(epoch, logs)
