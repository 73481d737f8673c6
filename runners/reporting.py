"""What a trial's runner sends while it trains, and what it returns.

Kept free of Keras and scikit-learn imports so that both runners share it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class EpochReporter(Protocol):
    """Where a training run sends its per-epoch measurements."""

    def report(self, value: float, step: int) -> None: ...

    def should_prune(self) -> bool: ...

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...


@dataclass(frozen=True)
class TrialResult:
    """What training measured.

    Attributes:
        best_value: The best validation accuracy of any epoch (the trial's objective); for
            a scikit-learn model, that of the fit on the whole training set.
        best_epoch: The epoch (0-based) that reached it; the model holds its weights. For
            scikit-learn, the last data-share step.
        epochs: Epochs trained (scikit-learn: data-share steps).
        history: Per-epoch metrics, MLflow names (``train_loss``, ``val_accuracy``, ...).
        train_seconds: Wall time of ``fit``.
        epoch_seconds: What a steady epoch took: the median epoch after the first, whose
            time also holds the tracing of the training and validation steps (None: no
            epochs, as for scikit-learn).
        out_of_time: Training stopped early because the search's time budget ran out.
    """

    best_value: float
    best_epoch: int
    epochs: int
    history: dict[str, list[float]]
    train_seconds: float
    out_of_time: bool = False
    epoch_seconds: float | None = None
