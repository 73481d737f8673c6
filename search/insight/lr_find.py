"""The learning-rate range test of an architecture, with the range it suggests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runners.errors import FmsearchError
from search.kinds import runner_for
from search.names import ARCH_TAG, ROLE_TAG

if TYPE_CHECKING:
    from runners.data import Split
    from search.tracking import Tracker


LR_FIND_EXPERIMENT = "fmsearch-lr-find"


@dataclass(frozen=True)
class LearningRateFinding:
    """The range test's suggestion, within the space's own learning-rate range.

    Attributes:
        run_id: The lr-find run with the plot.
        low: Suggested lowest learning rate (clipped to the space's range).
        high: Suggested highest.
        measured_low: What the curve suggested before clipping.
        measured_high: Likewise.
        plot: The plot, written locally.
    """

    run_id: str
    low: float
    high: float
    measured_low: float
    measured_high: float
    plot: Path


def find_learning_rate_range(
    *,
    arch: str,
    split: Split,
    tracker: Tracker,
    output_dir: Path,
    steps: int = 200,
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    params: dict[str, Any] | None = None,
) -> LearningRateFinding:
    """Run the range test on ``arch``'s published configuration (or ``params``).

    Raises:
        FmsearchError: ``arch`` does not train by gradient descent, or the suggested range
            lies outside the space's learning-rate range.
    """
    from runners.data import IMAGE_SHAPE, NUM_CLASSES
    from runners.figures import lr_range
    from runners.lr_find import find_learning_rate
    from search.trials.choices import describe_space
    from spaces import ARCHITECTURES

    space = ARCHITECTURES[arch]
    if not runner_for(space).trains_in_epochs:
        raise FmsearchError(
            f"--arch must be a Keras architecture (it has a learning rate), got {arch}"
        )
    bounds = describe_space(space)["learning_rate"]
    config = {**space.DEFAULTS, **(params or {})}
    model = space.build(config, input_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES)
    found = find_learning_rate(model, config, split, min_lr=min_lr, max_lr=max_lr, steps=steps)
    low = min(max(found.low, bounds.low), bounds.high)
    high = min(max(found.high, bounds.low), bounds.high)
    figure = lr_range(
        found.learning_rates,
        found.losses,
        smoothed=found.smoothed,
        suggested=(found.low, found.high),
        title=f"{arch}: learning-rate range test ({len(found.losses)} batches of "
        f"{config['batch_size']}, optimizer {config['optimizer']})",
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    plot = output_dir / f"lr_find_{arch}.png"
    figure.savefig(plot, dpi=110)
    run_id = tracker.start_insight_run(
        experiment=LR_FIND_EXPERIMENT, run_name=f"lr-find-{arch}",
        tags={ROLE_TAG: "lr-find", ARCH_TAG: arch},
    )  # fmt: skip
    tracker.log_files(run_id, [plot])
    measured = {"measured_low": found.low, "measured_high": found.high}
    tracker.log_metrics(run_id, {"suggested_low": low, "suggested_high": high, **measured})
    tracker.end_run(run_id, status="FINISHED")
    if not low < high:
        raise FmsearchError(
            f"the suggested range {found.low:.3g}..{found.high:.3g} lies outside {arch}'s "
            f"learning-rate range {bounds.low:g}..{bounds.high:g}: see {plot}"
        )
    return LearningRateFinding(run_id, low, high, found.low, found.high, plot)
