"""Combining trained classifiers: averaged probabilities and horizontal-flip test-time augmentation.

Fashion-MNIST's classes are left-right symmetric (a shoe points either way in the wild), so a
mirrored image is as good a view of its class as the original; averaging the two predictions
is the cheapest test-time augmentation there is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np


def flip_horizontal(images: np.ndarray) -> np.ndarray:
    """Images shaped (N, H, W[, C]) mirrored left to right."""
    return images[:, :, ::-1, ...]


def view_probabilities(
    predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``predict``'s class probabilities on the images and on their mirror images."""
    return np.asarray(predict(images)), np.asarray(predict(flip_horizontal(images)))


@dataclass(frozen=True)
class Combination:
    """Members whose probabilities are averaged, with or without the mirrored view.

    Attributes:
        members: Trial numbers, best first.
        tta: Whether each member's mirrored-image probabilities are averaged in too.
        val_accuracy: Accuracy of the averaged prediction on the validation images.
    """

    members: tuple[int, ...]
    tta: bool
    val_accuracy: float

    def describe(self) -> str:
        what = (
            f"trial {self.members[0]}"
            if len(self.members) == 1
            else f"ensemble of trials {', '.join(map(str, self.members))}"
        )
        return what + (" with flip TTA" if self.tta else "")


@dataclass(frozen=True)
class EnsembleChoice:
    """What combining the final models gave on validation, and what is kept.

    Attributes:
        options: Every combination tried, with its validation accuracy.
        best_single: The most accurate single model, without TTA.
        chosen: The combination kept: ``best_single`` unless another beats it.
    """

    options: tuple[Combination, ...]
    best_single: Combination
    chosen: Combination

    @property
    def combined(self) -> bool:
        """Whether something beat the best single model (and is kept instead)."""
        return self.chosen != self.best_single

    def to_dict(self) -> dict:
        return {
            "options": [asdict(o) for o in self.options],
            "best_single": asdict(self.best_single),
            "chosen": asdict(self.chosen),
            "combined": self.combined,
        }


def average(views: Sequence[np.ndarray]) -> np.ndarray:
    return np.mean(np.stack(views), axis=0)


def choose_combination(
    probabilities: Mapping[int, tuple[np.ndarray, np.ndarray]], labels: np.ndarray
) -> EnsembleChoice:
    """The best of: each model alone, the top 2..k averaged, each with and without flip TTA.

    Args:
        probabilities: Per trial number, its validation probabilities on the images and on
            their mirror images (:func:`view_probabilities`).
        labels: The validation labels.

    A combination is chosen only if its validation accuracy is strictly above the best
    single model's; among equals the smaller (fewer members, no TTA) wins.
    """
    if not probabilities:
        raise ValueError("expected at least one model's probabilities, got none")

    def accuracy(members: tuple[int, ...], tta: bool) -> float:
        views = [probabilities[m][0] for m in members]
        views += [probabilities[m][1] for m in members] if tta else []
        return float((average(views).argmax(axis=1) == labels).mean())

    singles = sorted(
        (Combination((m,), False, accuracy((m,), False)) for m in probabilities),
        key=lambda c: (-c.val_accuracy, c.members[0]),
    )
    ranked = tuple(c.members[0] for c in singles)
    options = [*singles, Combination(ranked[:1], True, accuracy(ranked[:1], True))]
    for size in range(2, len(ranked) + 1):
        for tta in (False, True):
            options.append(Combination(ranked[:size], tta, accuracy(ranked[:size], tta)))
    best_single = singles[0]
    chosen = max(
        options, key=lambda c: (c.val_accuracy, -len(c.members), not c.tta, c == best_single)
    )
    if chosen.val_accuracy <= best_single.val_accuracy:
        chosen = best_single
    return EnsembleChoice(options=tuple(options), best_single=best_single, chosen=chosen)
