"""What trainings cost in seconds on this host: its rates measured (:func:`measure_host`), then
an epoch, a trial's overhead, the final trainings and promotion's reserve; and the bound on
``--trials N``.
:mod:`search.budget.plan` divides a budget with these."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runners.data import IMAGE_SHAPE, NUM_CLASSES, Split
from runners.precision import dtype_policy
from spaces import resolve
from spaces.families import Families

if TYPE_CHECKING:
    from runners.throughput import Throughput  # loads TensorFlow

# The published VGG-BN and ResNet recipes converge in 30 to 60 epochs on all images.
FINAL_EPOCHS = 30
MAX_FINAL_EPOCHS = 60
# Per trial besides its epochs: building the model, the latency measurement, the confusion
# matrix and report, logging the model (benchmarks/results/tracking_overhead.md).
TRIAL_OVERHEAD_SECONDS = 3.0
# Promotion besides predicting the test set: the pictures, the registry, the report.
RESERVE_SECONDS = 20.0
TEST_IMAGES = 10_000


def epoch_seconds(train: int, val: int, train_rate: float, eval_rate: float) -> float:
    """One epoch: training on ``train`` images, then predicting ``val``."""
    return train / train_rate + val / eval_rate


def reserve_seconds(*, top_k: int, val_images: int, eval_rate: float) -> float:
    # Promotion predicts the test set, and the validation set once (its calibration); the
    # ensemble step, the validation set twice (plain and mirrored) with each final model.
    return RESERVE_SECONDS + (TEST_IMAGES + (2 * top_k + 1) * val_images) / eval_rate


@dataclass(frozen=True)
class FinalCosts:
    """Seconds of the final trainings: an epoch on the training images (``epoch_full``), on
    the training and validation images (``epoch_all``, for ``retrain_on_all``); with
    ``distill``, one more training like a final (the student distilled from the finals'
    ensemble) wherever two finals or more can make one."""

    epoch_full: float
    epoch_all: float
    retrain_on_all: bool
    distill: bool = False

    def retrain(self, epochs: int) -> float:
        if not (self.retrain_on_all and epochs):
            return 0.0
        return epochs * self.epoch_all + TRIAL_OVERHEAD_SECONDS

    def students(self, k: int) -> int:
        """Distilled models trained after ``k`` finals (0 or 1)."""
        return int(self.distill and k >= 2)

    def student(self, k: int, epochs: int) -> float:
        return self.students(k) * (epochs * self.epoch_full + TRIAL_OVERHEAD_SECONDS)

    def epoch(self, k: int) -> float:
        """Seconds one more epoch of ``k`` final models (and the retraining, when kept) takes."""
        return (k + self.students(k)) * self.epoch_full + (
            self.epoch_all if self.retrain_on_all else 0.0
        )

    def final(self, k: int, epochs: int) -> float:
        return (
            k * (epochs * self.epoch_full + TRIAL_OVERHEAD_SECONDS)
            + self.student(k, epochs)
            + self.retrain(epochs)
        )


def finals_that_fit(costs: FinalCosts, *, share: float, top_k: int) -> tuple[int, int, list[str]]:
    """How many final models, for how many epochs, fit ``share`` seconds; and notes."""
    k, epochs = top_k, FINAL_EPOCHS
    while k > 1 and costs.final(k, epochs) > share:
        k -= 1
    if costs.final(k, epochs) <= share:
        # Time the finals do not need goes to the ladder: a longer final of a weaker find
        # loses to a better find (benchmarks/results/champion_run.md).
        return k, epochs, []
    epochs = epochs_that_fit(costs, share)
    if epochs < 1:
        return 0, 0, ["no final training: not one epoch on all images fits the budget"]
    return (
        k,
        epochs,
        [
            f"one final model, {epochs} epochs (of the {FINAL_EPOCHS} the recipe asks): "
            f"an epoch on all images takes ~{costs.epoch_full:.0f} s here"
        ],
    )


def epochs_that_fit(costs: FinalCosts, share: float) -> int:
    """Epochs of one final model (and its retraining, when kept) that ``share`` seconds
    hold, at most ``MAX_FINAL_EPOCHS``."""
    overhead = TRIAL_OVERHEAD_SECONDS * (2 if costs.retrain_on_all else 1)
    return min(MAX_FINAL_EPOCHS, int((share - overhead) // costs.epoch(1)))


def estimate_trials(
    *,
    n_trials: int,
    max_epochs: int,
    train_images: int,
    val_images: int,
    train_images_per_s: float,
    eval_images_per_s: float,
    workers: int = 1,
) -> float:
    """Seconds ``n_trials`` trials take at most: each to its last epoch, ``workers`` at once.

    An upper bound: pruning and early stopping end most trials sooner.
    """
    epoch = epoch_seconds(train_images, val_images, train_images_per_s, eval_images_per_s)
    return n_trials * (max_epochs * epoch + TRIAL_OVERHEAD_SECONDS) / max(workers, 1)


# Seconds the plan's probe trains for (benchmarks.probe_accuracy checks what it says).
PROBE_SECONDS = 4.0


def measure_host(
    *,
    arch: str,
    split: Split,
    fixed: Mapping[str, Any],
    policy: str,
    seconds: float = PROBE_SECONDS,
) -> Throughput:
    """How fast this host trains ``arch``'s published configuration (with ``fixed`` pinned).

    For several architectures searched together, each family's is measured and the rates
    combined as the search will mix them: a trial of each as often (the mean time per image).
    """
    from runners.throughput import Throughput

    space = resolve(arch)
    starts = space.starts() if isinstance(space, Families) else [space.DEFAULTS]
    share = max(seconds / len(starts), 1.0)
    rates = [_measure(space, {**start, **fixed}, split, policy, share) for start in starts]
    if len(rates) == 1:
        return rates[0]
    return Throughput(
        train_images_per_s=len(rates) / sum(1 / r.train_images_per_s for r in rates),
        eval_images_per_s=len(rates) / sum(1 / r.eval_images_per_s for r in rates),
        probe_seconds=sum(r.probe_seconds for r in rates),
        train_images_timed=sum(r.train_images_timed for r in rates),
    )


def _measure(space: Any, params: dict[str, Any], split: Split, policy: str, seconds: float):
    from runners.throughput import measure_throughput
    from runners.training import free_memory

    try:
        with dtype_policy(policy):
            model = space.build(params, input_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES)
        return measure_throughput(
            model, params, split.x_train[:4096], split.y_train[:4096], seconds=seconds
        )
    finally:
        model = None
        free_memory()
