"""How one Keras trial trains: compile, fit with per-epoch reporting and pruning, keep the best.

The runner never talks to Optuna storage or MLflow. It gets a reporter: something with
``report(value, step)`` and ``should_prune()`` (an ``optuna.Trial`` has both) and
``log_epoch(epoch, metrics)``; the search side decides where those go.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras
from optuna_integration import KerasPruningCallback

from runners.augment import eval_dataset, train_dataset
from runners.data import NUM_CLASSES, Split
from runners.errors import TrialFailed
from runners.reporting import EpochReporter, TrialResult

# The class a `class_weights` configuration weighs by `shirt_weight` (the others weigh 1):
# the weakest class of every source project.
SHIRT = 6
# Keras names its epoch logs after the compiled loss and metrics; MLflow gets clearer names.
_METRIC_NAMES = {"loss": "train_loss", "accuracy": "train_accuracy"}


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy and the backend: a trial's initial weights, data order and random
    augmentation repeat. ``deterministic`` also turns on TensorFlow's op determinism
    (process-wide, and never off again): without it, threads may sum floating-point numbers
    in another order from run to run, and augmentation drawn in parallel may reach other
    images, so a seeded trial lands close to, not exactly on, its earlier result."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


LR_SCHEDULES = ("constant", "cosine", "one_cycle", "plateau")
# ReduceLROnPlateau's settings for configurations stored before plateau_factor and
# plateau_patience were searched.
PLATEAU_FACTOR = 0.2
PLATEAU_PATIENCE = 2
# One-cycle: warm up from learning_rate / 25 over the first 30% of the steps (Smith's defaults).
_ONE_CYCLE_START = 25.0
_ONE_CYCLE_WARMUP = 0.3
# Cosine decay is down to a quarter of its peak this far through.
_COSINE_ANNEALED = 2 / 3
_EVAL_BATCH = 512


def make_learning_rate(
    params: dict[str, Any], *, total_steps: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate, or its schedule over ``total_steps`` (``params["lr_schedule"]``).

    ``plateau`` is a constant rate here; :func:`fit_trial` adds the ``ReduceLROnPlateau``
    callback that lowers it.
    """
    lr = params["learning_rate"]
    schedule = params.get("lr_schedule", "constant")
    if schedule in ("constant", "plateau"):
        return lr
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=total_steps)
    if schedule == "one_cycle":
        warmup = _one_cycle_warmup_steps(total_steps)
        return keras.optimizers.schedules.CosineDecay(
            lr / _ONE_CYCLE_START,
            decay_steps=max(1, total_steps - warmup),
            warmup_target=lr,
            warmup_steps=warmup,
        )
    raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}")


def _one_cycle_warmup_steps(total_steps: int) -> int:
    return max(1, int(total_steps * _ONE_CYCLE_WARMUP))


def annealed_from(params: dict[str, Any], *, epochs: int) -> int:
    """The first epoch (from 0) by whose end the schedule's learning rate is down to a quarter
    of its peak; 0 for a constant rate.

    Validation accuracy before that says little: a final trained with one-cycle validated
    0.847-0.911 through its high-rate epochs here, and early stopping that watched them ended
    it at epoch 18 of 33, never annealed, below the 5-epoch trial it was to improve on.
    """
    schedule = params.get("lr_schedule", "constant")
    if schedule == "cosine":
        fraction = _COSINE_ANNEALED
    elif schedule == "one_cycle":
        fraction = _ONE_CYCLE_WARMUP + (1 - _ONE_CYCLE_WARMUP) * _COSINE_ANNEALED
    else:
        return 0
    return max(0, math.ceil(epochs * fraction) - 1)


def best_monitored(values: Sequence[float], *, initial_epoch: int, monitor_from: int) -> int:
    """Index of the best of ``values`` among the epochs from ``monitor_from`` on (the ones
    early stopping watched and whose weights it keeps); the last when none was watched."""
    watched = [i for i in range(len(values)) if initial_epoch + i >= monitor_from]
    return max(watched, key=values.__getitem__) if watched else len(values) - 1


def make_optimizer(
    params: dict[str, Any],
    *,
    total_steps: int = 1,
    learning_rate: keras.optimizers.schedules.LearningRateSchedule | None = None,
) -> keras.optimizers.Optimizer:
    """The optimizer named by ``params["optimizer"]``, its learning rate scheduled (or
    ``learning_rate``, which replaces the schedule of ``params``)."""
    name = params["optimizer"]
    lr = learning_rate or make_learning_rate(params, total_steps=total_steps)
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
    deadline: float | None = None,
    stretch_to: int | None = None,
    initial_epoch: int = 0,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    monitor_from: int = 0,
    metric: str = "accuracy",
) -> TrialResult:
    """Train ``model`` for up to ``max_epochs``, reporting the validation ``metric`` (one of
    :data:`runners.metrics.METRICS`) every epoch.

    On return the model holds the weights of its best epoch (from ``monitor_from`` on).

    Args:
        model: An uncompiled model from a space's ``build``.
        params: The trial's hyperparameters (optimizer, learning rate, batch size).
        split: Training and validation data.
        max_epochs: Epochs at most.
        reporter: Gets every epoch's metrics and decides on pruning.
        patience: Stop after this many epochs without a better validation accuracy;
            None trains all ``max_epochs`` unless pruned.
        deadline: A ``time.monotonic()`` value: the first epoch that ends after it is the
            last (the model keeps its best epoch, as after early stopping).
        stretch_to: With a deadline and a decaying schedule, the most epochs the schedule
            may be lengthened to when the time holds more than ``max_epochs``
            (:class:`AnnealByDeadline`); None: ``max_epochs`` at most.
        initial_epoch: Epochs the model has trained already (its weights carry them): a
            Keras Tuner Hyperband trial that continues an earlier one trains
            ``initial_epoch`` to ``max_epochs``.
        callbacks: More Keras callbacks (Keras Tuner's checkpoint of the best epoch).
        monitor_from: The first epoch early stopping watches, and the first whose weights
            can be kept (:func:`annealed_from` for a long schedule).
        metric: What early stopping, pruning and the result watch on the validation images;
            an F1 costs one more pass over them per epoch (Keras computes only accuracy).

    Raises:
        optuna.TrialPruned: The reporter said to prune.
        TrialFailed: The training loss became NaN or infinite.
    """
    steps_per_epoch = math.ceil(len(split.x_train) / params["batch_size"])
    model.compile(
        optimizer=make_optimizer(params, total_steps=steps_per_epoch * max_epochs),
        # One-hot labels: CutMix and MixUp make them soft, and label smoothing needs them.
        loss=keras.losses.CategoricalCrossentropy(
            label_smoothing=params.get("label_smoothing", 0.0)
        ),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    monitor = f"val_{metric}"
    best = keras.callbacks.EarlyStopping(
        monitor=monitor,
        mode="max",
        patience=patience or max_epochs,
        restore_best_weights=True,
        start_from_epoch=monitor_from,
    )
    out_of_time = _Deadline(deadline)
    log = _EpochLog(reporter)
    own = [log, _FailOnNaN(), best, _Pruning(reporter, monitor), out_of_time]
    anneal = anneal_by_deadline(
        params, deadline=deadline, steps_per_epoch=steps_per_epoch, max_epochs=max_epochs,
        stretch_to=stretch_to, watch=best,
    )  # fmt: skip
    if anneal is not None:
        own.append(anneal)
    if metric != "accuracy":  # first, so that every other callback reads it in the logs
        own.insert(0, _ValidationScore(split, metric))
    if params.get("lr_schedule") == "plateau":
        own.insert(
            0,
            keras.callbacks.ReduceLROnPlateau(
                factor=params.get("plateau_factor", PLATEAU_FACTOR),
                patience=params.get("plateau_patience", PLATEAU_PATIENCE),
            ),
        )
    start = time.perf_counter()
    history = model.fit(
        train_dataset(split.x_train, split.y_train, params=params, num_classes=NUM_CLASSES),
        # A schedule fitted to the deadline may lengthen past max_epochs.
        epochs=max_epochs if anneal is None else anneal.most_epochs,
        initial_epoch=initial_epoch,
        validation_data=eval_dataset(
            split.x_val, split.y_val, batch_size=_EVAL_BATCH, num_classes=NUM_CLASSES
        ),
        callbacks=[*own, *callbacks],
        class_weight=class_weights(params),
        shuffle=False,  # the dataset shuffles itself
        verbose=0,
    ).history
    seconds = time.perf_counter() - start
    history = {_METRIC_NAMES.get(k, k): [float(v) for v in vs] for k, vs in history.items()}
    values = history[monitor]
    # Early stopping's first watched epoch, moved later where the schedule was lengthened.
    best_epoch = best_monitored(
        values, initial_epoch=initial_epoch, monitor_from=best.start_from_epoch
    )
    return TrialResult(
        best_value=values[best_epoch],
        best_epoch=initial_epoch + best_epoch,
        epochs=len(values),
        history=history,
        train_seconds=seconds,
        out_of_time=out_of_time.stopped or bool(anneal and anneal.shortened_to),
        epoch_seconds=steady_epoch_seconds(log.seconds),
    )


def steady_epoch_seconds(seconds: list[float]) -> float | None:
    """What an epoch takes once the training and validation steps are traced: the median
    of the epochs after the first (the first alone when it is the only one)."""
    if not seconds:
        return None
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def class_weights(params: dict[str, Any]) -> dict[int, float] | None:
    """The loss weight of each class that ``params`` ask for (None: all weigh 1)."""
    if not params.get("class_weights"):
        return None
    return {c: params["shirt_weight"] if c == SHIRT else 1.0 for c in range(NUM_CLASSES)}


def free_memory() -> None:
    """Drop the graphs and tensors of finished trials, which otherwise pile up in one process.

    What survives the collection (modules, the data set, the study) is frozen out of later
    ones, so that each collection scans one trial's objects, not the half million that
    TensorFlow, MLflow and Optuna keep alive (benchmarks/results/trial_memory.md).
    Frozen objects are still freed when their last reference goes.
    """
    # One collection: clear_session(free_memory=True) would run a second, as long.
    keras.backend.clear_session(free_memory=False)
    gc.collect()
    gc.freeze()


class _EpochLog(keras.callbacks.Callback):
    def __init__(self, reporter: EpochReporter) -> None:
        super().__init__()
        self._reporter = reporter
        self._start = 0.0
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        metrics = {_METRIC_NAMES.get(k, k): float(v) for k, v in (logs or {}).items()}
        metrics["epoch_seconds"] = time.perf_counter() - self._start
        self.seconds.append(metrics["epoch_seconds"])
        # The rate the last step used: follows the schedule and ReduceLROnPlateau.
        metrics.setdefault(
            "learning_rate",
            float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
        )
        self._reporter.log_epoch(epoch, metrics)


class _ValidationScore(keras.callbacks.Callback):
    """Adds ``val_<metric>`` to each epoch's logs: the model's predictions on the validation
    images, scored (a Keras metric would be saved with the model, which could then not load
    without fmsearch)."""

    def __init__(self, split: Split, metric: str) -> None:
        super().__init__()
        self._split = split
        self._metric = metric

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        from runners.metrics import predict_classes, score

        predicted = predict_classes(self.model, self._split.x_val)
        if logs is not None:
            logs[f"val_{self._metric}"] = score(
                self._metric, self._split.y_val, predicted, num_classes=NUM_CLASSES
            )


class _Deadline(keras.callbacks.Callback):
    """Ends training after the epoch during which the search's time budget ran out."""

    def __init__(self, deadline: float | None) -> None:
        super().__init__()
        self._deadline = deadline
        self.stopped = False

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self.stopped = True
            self.model.stop_training = True


def anneal_by_deadline(
    params: dict[str, Any],
    *,
    deadline: float | None,
    steps_per_epoch: int,
    max_epochs: int,
    stretch_to: int | None = None,
    watch: keras.callbacks.EarlyStopping | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AnnealByDeadline | None:
    """The callback that ends ``params``' decaying schedule (cosine, one-cycle) by
    ``deadline``, lengthened up to ``stretch_to`` epochs when the time holds more (``watch``:
    the early stopping that must wait for the later anneal); None where there is nothing to
    fit (no deadline, or a rate that does not decay)."""
    schedule = params.get("lr_schedule", "constant")
    if deadline is None or schedule not in ("cosine", "one_cycle"):
        return None
    total = steps_per_epoch * max_epochs
    warmup = _one_cycle_warmup_steps(total) if schedule == "one_cycle" else 0
    return AnnealByDeadline(
        deadline=deadline, end_epoch=max_epochs, steps_per_epoch=steps_per_epoch,
        warmup_steps=warmup, stretch_to=stretch_to, watch=watch, clock=clock,
    )  # fmt: skip


class AnnealByDeadline(keras.callbacks.Callback):
    """Fits a decaying schedule to the deadline: one that would not end by it is shortened,
    so that the rate still comes down to zero in the epochs the time holds, and training
    ends there.

    Why: a final training's epochs are planned from epoch times measured on the ladder, and
    epochs on one host vary by 10-15%; stopped by the clock mid-schedule, a final is a model
    that never annealed. After each epoch
    the epochs that still fit are counted at the slower of the median and the last epoch
    time; when they end before the schedule, the rest of it becomes a cosine decay from the
    current rate over them (a built-in Keras schedule, so the saved model loads anywhere),
    once the warm-up is over (cutting it short would train the rest below the peak).

    The same decay lengthens a schedule whose epochs run faster than planned, up to
    ``stretch_to`` epochs (``fit`` must be given that many), as long as early stopping
    (``watch``) has not begun to watch it; its watch then starts where the longer decay is
    annealed. Why: a final's epochs are planned from the ladder's epochs of its
    configuration, which can be slower than its final's (one on this host planned 11 epochs
    at an estimated 177 s, trained at 143 s, and left 8 of its 60 minutes unused).

    Attributes:
        shortened_to: The epoch count the schedule was shortened to last, or None.
        most_epochs: The epochs ``fit`` must be given (``stretch_to`` or the planned end).
    """

    def __init__(
        self,
        *,
        deadline: float,
        end_epoch: int,
        steps_per_epoch: int,
        warmup_steps: int,
        stretch_to: int | None = None,
        watch: keras.callbacks.EarlyStopping | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._deadline = deadline
        self._end = end_epoch
        self.most_epochs = max(end_epoch, stretch_to or 0)
        self._watch = watch
        self._steps_per_epoch = steps_per_epoch
        self._warmup_steps = warmup_steps
        self._clock = clock
        self._seconds: list[float] = []
        self._start = 0.0
        self.shortened_to: int | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = self._clock()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = self._clock()
        self._seconds.append(now - self._start)
        done = epoch + 1
        if done >= self._end:
            self.model.stop_training = True
            return
        per_epoch = max(statistics.median(self._seconds), self._seconds[-1], 1e-9)
        end = min(self.most_epochs, done + max(1, int((self._deadline - now) // per_epoch)))
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if end == self._end or step < self._warmup_steps:
            return
        # Early stopping has begun to watch (and keep) the planned anneal's epochs: too late.
        watched = self._watch is not None and done > self._watch.start_from_epoch
        if end > self._end and watched:
            return
        rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.model.optimizer.learning_rate = keras.optimizers.schedules.CosineDecay(
            rate,
            decay_steps=(end - done) * self._steps_per_epoch,
            warmup_target=rate,
            warmup_steps=step,
        )
        # The compiled step holds the old schedule's constants: trace it again.
        self.model.make_train_function(force=True)
        if end < self._end:
            self.shortened_to = end
        elif self._watch is not None:
            annealed = done + annealed_from({"lr_schedule": "cosine"}, epochs=end - done)
            self._watch.start_from_epoch = max(self._watch.start_from_epoch, annealed)
        self._end = end


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


def set_threads(threads: int) -> None:
    """Use at most ``threads`` CPU threads for TensorFlow's ops (call before any model)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
