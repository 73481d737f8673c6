"""One trial's training loop: reporting, pruning, best-epoch weights, NaN, memory."""

from __future__ import annotations

import math
import time

import keras
import numpy as np
import optuna
import pytest

from runners.data import Split
from runners.errors import TrialFailed
from runners.metrics import predict_classes
from runners.training import (
    _Pruning,
    anneal_by_deadline,
    annealed_from,
    best_monitored,
    fit_trial,
    free_memory,
    make_learning_rate,
    make_optimizer,
    seed_everything,
)
from spaces import mlp

PARAMS = {
    **mlp.DEFAULTS,
    "n_units_l0": 64,
    "n_units_l1": 32,
    "use_l2": True,
    "l2": 1e-5,
    "dropout": 0.0,
    "learning_rate": 3e-3,
    "batch_size": 64,
    "optimizer": "adam",
}


class Recorder:
    """A reporter that records everything and prunes after ``prune_after`` reports."""

    def __init__(self, prune_after: int | None = None) -> None:
        self.reports: list[tuple[int, float]] = []
        self.epochs: list[dict[str, float]] = []
        self._prune_after = prune_after

    def report(self, value: float, step: int) -> None:
        self.reports.append((step, value))

    def should_prune(self) -> bool:
        return self._prune_after is not None and len(self.reports) >= self._prune_after

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append(metrics)


def _model():
    seed_everything(0)
    return mlp.build(PARAMS)


def test_reports_every_epoch_and_returns_the_best(small_split):
    reporter = Recorder()
    result = fit_trial(_model(), PARAMS, small_split, max_epochs=3, reporter=reporter)
    assert [step for step, _ in reporter.reports] == [0, 1, 2]
    assert result.epochs == 3
    assert result.history["val_accuracy"] == [value for _, value in reporter.reports]
    assert result.best_value == max(result.history["val_accuracy"])
    assert set(reporter.epochs[0]) >= {"train_loss", "train_accuracy", "val_loss", "val_accuracy"}
    assert reporter.epochs[0]["epoch_seconds"] > 0
    later = sorted(e["epoch_seconds"] for e in reporter.epochs[1:])
    assert result.epoch_seconds == pytest.approx(sum(later) / 2)


def test_a_steady_epoch_leaves_out_the_first_one_that_traces_the_steps():
    from runners.training import steady_epoch_seconds

    assert steady_epoch_seconds([]) is None
    assert steady_epoch_seconds([4.0]) == 4.0
    assert steady_epoch_seconds([9.0, 2.0]) == 2.0
    assert steady_epoch_seconds([9.0, 2.0, 3.0, 2.5]) == 2.5


def test_model_keeps_the_best_epochs_weights(small_split):
    # Validation labels shifted by one class: the better the model learns the real classes,
    # the lower its "accuracy" here, so the first epoch is the best and the last the worst.
    shifted = Split(
        small_split.x_train,
        small_split.y_train,
        small_split.x_val,
        (small_split.y_val + 1) % 10,
    )
    model = _model()
    result = fit_trial(model, PARAMS, shifted, max_epochs=4, reporter=Recorder())
    assert result.best_epoch < result.epochs - 1, result.history["val_accuracy"]
    accuracy = float((predict_classes(model, shifted.x_val) == shifted.y_val).mean())
    assert accuracy == pytest.approx(result.best_value, abs=1e-6)
    assert accuracy > result.history["val_accuracy"][-1]


def test_prunes_when_the_reporter_says_so(small_split):
    reporter = Recorder(prune_after=1)
    with pytest.raises(optuna.TrialPruned, match="pruned at epoch 0"):
        fit_trial(_model(), PARAMS, small_split, max_epochs=5, reporter=reporter)
    assert len(reporter.reports) == 1
    assert len(reporter.epochs) == 1  # the pruned epoch's curves are logged too


def test_the_last_epoch_is_reported_but_never_pruned(small_split):
    reporter = Recorder(prune_after=2)
    result = fit_trial(_model(), PARAMS, small_split, max_epochs=2, reporter=reporter)
    assert result.epochs == 2 and [step for step, _ in reporter.reports] == [0, 1]


def test_nan_loss_fails_the_trial(small_split):
    x = small_split.x_train.astype(np.float32)
    x[0, 0, 0, 0] = np.nan
    broken = Split(x, small_split.y_train, small_split.x_val, small_split.y_val)
    reporter = Recorder()
    with pytest.raises(TrialFailed, match=r"training loss became nan in epoch 0"):
        fit_trial(_model(), PARAMS, broken, max_epochs=3, reporter=reporter)
    assert len(reporter.epochs) == 1


def test_missing_pruning_metric_is_an_error_not_a_warning():
    callback = _Pruning(Recorder(), "val_accuracy")
    with pytest.raises(RuntimeError, match=r"monitors 'val_accuracy', but the epoch logs hold"):
        callback.on_epoch_end(0, {"loss": 1.0})


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("adam", keras.optimizers.Adam),
        ("adamw", keras.optimizers.AdamW),
        ("sgd", keras.optimizers.SGD),
        ("rmsprop", keras.optimizers.RMSprop),
    ],
)
def test_make_optimizer(name, cls):
    optimizer = make_optimizer({"optimizer": name, "learning_rate": 0.01})
    assert isinstance(optimizer, cls)
    assert float(optimizer.learning_rate) == pytest.approx(0.01)


def test_unknown_optimizer():
    with pytest.raises(ValueError, match=r"one of adam, adamw, sgd, rmsprop, got 'lbfgs'"):
        make_optimizer({"optimizer": "lbfgs", "learning_rate": 0.01})


def test_free_memory_clears_the_session():
    keras.layers.Dense(2, name=None)
    first = keras.layers.Dense(2).name
    free_memory()
    assert keras.layers.Dense(2).name == "dense"
    assert first != "dense"


def test_patience_stops_a_trial_that_stopped_improving(small_split):
    # With shifted validation labels the first epoch is the best: patience 1 stops at epoch 2.
    shifted = Split(
        small_split.x_train, small_split.y_train, small_split.x_val, (small_split.y_val + 1) % 10
    )
    reporter = Recorder()
    result = fit_trial(_model(), PARAMS, shifted, max_epochs=6, reporter=reporter, patience=1)
    assert result.epochs == result.best_epoch + 2 < 6
    assert len(reporter.reports) == result.epochs


@pytest.mark.parametrize("metric", ["macro_f1", "worst_class_f1"])
def test_an_f1_objective_is_what_is_reported_and_kept(small_split, metric):
    """Early stopping, pruning and the result watch the F1 the study optimises: the value of
    the kept epoch is the F1 of the returned model's predictions."""
    from runners.metrics import score

    reporter = Recorder()
    model = _model()
    result = fit_trial(model, PARAMS, small_split, max_epochs=2, reporter=reporter,
                       metric=metric)  # fmt: skip
    values = result.history[f"val_{metric}"]
    assert [value for _, value in reporter.reports] == values
    assert all(f"val_{metric}" in epoch for epoch in reporter.epochs)
    predicted = predict_classes(model, small_split.x_val)
    kept = score(metric, small_split.y_val, predicted, num_classes=10)
    assert result.best_value == pytest.approx(kept, abs=1e-6) == pytest.approx(max(values))
    accuracy = result.history["val_accuracy"][result.best_epoch]
    assert result.best_value < accuracy if metric == "worst_class_f1" else result.best_value > 0


def test_class_weights_weigh_shirts(small_split):
    from runners.training import SHIRT, class_weights

    assert class_weights({"class_weights": False}) is None and class_weights({}) is None
    weights = class_weights({"class_weights": True, "shirt_weight": 3.0})
    assert weights[SHIRT] == 3.0 and sum(weights.values()) == 9 + 3.0
    params = {**PARAMS, "class_weights": True, "shirt_weight": 3.0}
    result = fit_trial(_model(), params, small_split, max_epochs=1, reporter=Recorder())
    assert result.epochs == 1


def test_validation_accuracy_is_measured_on_unaugmented_images(small_split):
    """With heavy augmentation on, the reported accuracy is the model's on the raw images."""
    params = {
        **PARAMS, "mix": "cutmix", "mix_prob": 1.0, "mix_alpha": 1.0, "shift": True,
        "shift_factor": 0.15, "erasing": True, "erasing_prob": 0.5, "flip": True,
    }  # fmt: skip
    model = _model()
    result = fit_trial(model, params, small_split, max_epochs=2, reporter=Recorder())
    accuracy = float((predict_classes(model, small_split.x_val) == small_split.y_val).mean())
    assert accuracy == pytest.approx(result.best_value, abs=1e-6)


@pytest.mark.parametrize("schedule", ["cosine", "one_cycle", "plateau", "constant"])
def test_learning_rate_schedules(small_split, schedule):
    params = {**PARAMS, "lr_schedule": schedule, "label_smoothing": 0.1}
    reporter = Recorder()
    fit_trial(_model(), params, small_split, max_epochs=3, reporter=reporter)
    rates = [epoch["learning_rate"] for epoch in reporter.epochs]
    lr = PARAMS["learning_rate"]
    if schedule == "cosine":
        assert rates[0] < lr and rates == sorted(rates, reverse=True) and rates[-1] < lr / 50
    elif schedule == "one_cycle":  # warm-up ends within the first epoch of three
        assert max(rates) <= lr * (1 + 1e-6) and rates[-1] < lr / 50
    else:
        assert rates == pytest.approx([lr] * 3)


@pytest.mark.parametrize(
    ("settings", "factors"),
    [({}, [1, 1, 1, 0.2]), ({"plateau_factor": 0.5, "plateau_patience": 1}, [1, 1, 0.5, 0.25])],
    ids=["old-configuration", "searched"],
)
def test_plateau_factor_and_patience_come_from_the_configuration(small_split, settings, factors):
    """A learning rate too small to move the validation loss: every epoch after the first
    stalls, so the rate falls by the factor after each ``patience`` stalled epochs (an epoch
    reports the rate it trained with)."""
    lr = 1e-9
    params = {**PARAMS, "learning_rate": lr, "lr_schedule": "plateau", **settings}
    reporter = Recorder()
    fit_trial(_model(), params, small_split, max_epochs=4, reporter=reporter)
    rates = [epoch["learning_rate"] for epoch in reporter.epochs]
    assert rates == pytest.approx([lr * f for f in factors], rel=1e-4)


def test_one_cycle_warms_up_then_anneals():
    from runners.training import make_learning_rate

    schedule = make_learning_rate(
        {"learning_rate": 0.01, "lr_schedule": "one_cycle"}, total_steps=100
    )
    rates = [float(schedule(step)) for step in range(0, 101, 10)]
    assert rates[0] == pytest.approx(0.01 / 25)
    assert max(rates) == pytest.approx(0.01, rel=0.05) and rates.index(max(rates)) == 3
    assert rates[-1] < 1e-4


def test_a_long_schedule_is_watched_only_once_it_has_annealed():
    assert annealed_from({"lr_schedule": "constant"}, epochs=30) == 0
    assert annealed_from({"lr_schedule": "plateau"}, epochs=30) == 0
    assert annealed_from({"lr_schedule": "cosine"}, epochs=30) == 19  # 2/3 through: a quarter
    # One-cycle: 30% warm-up, then the cosine's quarter at 2/3 of the rest (epoch 26 of 33).
    assert annealed_from({"lr_schedule": "one_cycle"}, epochs=33) == 25
    # 10 steps an epoch: the rate at the end of epoch 26 (index 25) is down to a quarter.
    rate = make_learning_rate({**PARAMS, "lr_schedule": "one_cycle"}, total_steps=330)
    peak = PARAMS["learning_rate"]
    assert float(rate(26 * 10)) <= 0.25 * peak < float(rate(24 * 10))


def test_the_best_epoch_is_the_best_watched_one():
    values = [0.91, 0.85, 0.88, 0.90]  # the best value came before the schedule annealed
    assert best_monitored(values, initial_epoch=0, monitor_from=0) == 0
    assert best_monitored(values, initial_epoch=0, monitor_from=2) == 3
    assert best_monitored(values, initial_epoch=2, monitor_from=3) == 3  # epochs 2..5
    assert best_monitored(values, initial_epoch=0, monitor_from=9) == 3  # none: the last


class _Clock:
    """Time that passes ``epoch_seconds`` at the end of every epoch (a callback too)."""

    def __init__(self, epoch_seconds: float) -> None:
        self.now = 0.0
        self.epoch_seconds = epoch_seconds

    def __call__(self) -> float:
        return self.now

    def advance(self) -> keras.callbacks.Callback:
        clock = self

        class Advance(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                clock.now += clock.epoch_seconds

        return Advance()


def test_a_schedule_that_would_outrun_the_deadline_anneals_by_it(small_split, tmp_path):
    """One-cycle over 8 epochs of 10 s with 45 s left: after its warm-up (2.4 epochs) the
    rest decays from the rate it had reached over the one epoch that still fits, and
    training ends there, annealed, instead of being cut near the peak rate; the model saves
    and loads with its shortened schedule."""
    params = {**PARAMS, "lr_schedule": "one_cycle"}
    steps = math.ceil(len(small_split.x_train) / params["batch_size"])
    clock = _Clock(epoch_seconds=10)
    anneal = anneal_by_deadline(params, deadline=45, steps_per_epoch=steps, max_epochs=8,
                                clock=clock)  # fmt: skip
    reporter = Recorder()
    model = _model()
    result = fit_trial(model, params, small_split, max_epochs=8, reporter=reporter,
                       callbacks=[clock.advance(), anneal])  # fmt: skip
    rates = [epoch["learning_rate"] for epoch in reporter.epochs]
    planned = make_learning_rate(params, total_steps=8 * steps)
    assert anneal.shortened_to == result.epochs == 4
    # The first three epochs as planned (warm-up to the peak), then the decay to zero.
    assert rates[:3] == pytest.approx([float(planned(e * steps)) for e in (1, 2, 3)], rel=1e-5)
    assert rates[2] > 0.9 * params["learning_rate"] and rates[3] < 1e-6
    model.save(tmp_path / "model.keras")
    assert keras.models.load_model(tmp_path / "model.keras").optimizer.iterations == 4 * steps


@pytest.mark.parametrize("stretch_to", [None, 6])
def test_a_schedule_whose_time_holds_more_epochs_lengthens_up_to_its_cap(small_split, stretch_to):
    """One-cycle planned for 3 epochs with two minutes left (a final whose epochs run faster
    than planned): given a cap, it lengthens after its warm-up into a decay over 6 epochs that
    ends at a rate of zero, and early stopping waits for that later anneal; without a cap it
    trains the 3 planned."""
    params = {**PARAMS, "lr_schedule": "one_cycle"}
    steps = math.ceil(len(small_split.x_train) / params["batch_size"])
    reporter = Recorder()
    planned_from = annealed_from(params, epochs=3)
    result = fit_trial(_model(), params, small_split, max_epochs=3, reporter=reporter,
                       deadline=time.monotonic() + 120, stretch_to=stretch_to,
                       monitor_from=planned_from)  # fmt: skip
    rates = [epoch["learning_rate"] for epoch in reporter.epochs]
    planned = make_learning_rate(params, total_steps=3 * steps)
    assert rates[0] == pytest.approx(float(planned(steps)), rel=1e-5)
    if stretch_to is None:
        assert result.epochs == 3
        return
    assert result.epochs == 6 and rates[-1] < 1e-6
    # Decaying from the peak over epochs 2-6: still above half the peak at epoch 3 (where
    # the planned schedule was down to zero).
    assert rates[2] > 0.5 * params["learning_rate"]
    assert result.best_epoch >= 1 + math.ceil(5 * 2 / 3) - 1 > planned_from


def test_only_a_decaying_schedule_with_a_deadline_is_fitted_to_it():
    kwargs = {"steps_per_epoch": 10, "max_epochs": 5}
    assert anneal_by_deadline({"lr_schedule": "cosine"}, deadline=None, **kwargs) is None
    for schedule in ("constant", "plateau"):
        assert anneal_by_deadline({"lr_schedule": schedule}, deadline=60, **kwargs) is None
    assert anneal_by_deadline({"lr_schedule": "cosine"}, deadline=60, **kwargs) is not None
