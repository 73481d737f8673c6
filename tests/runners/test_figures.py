"""The pictures: right panels, right numbers, and they render to PNG."""

from __future__ import annotations

import io

import numpy as np
import pytest

from runners import figures
from runners.data import CLASS_NAMES
from runners.metrics import confused_pairs, normalized_confusion


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def test_confused_pairs_are_the_largest_off_diagonal_counts():
    confusion = np.diag([50, 40, 30])
    confusion[0, 2], confusion[2, 0], confusion[1, 0] = 7, 3, 9
    pairs = confused_pairs(confusion, class_names=("a", "b", "c"), top=5)
    assert pairs == [("b", "a", 9), ("a", "c", 7), ("c", "a", 3)]


def test_normalized_confusion_rows_sum_to_one_and_empty_rows_stay_zero():
    confusion = np.array([[3, 1], [0, 0]])
    shares = normalized_confusion(confusion)
    np.testing.assert_allclose(shares, [[0.75, 0.25], [0.0, 0.0]])


def test_model_pictures_from_predictions(rng):
    labels = np.arange(40) % 10
    probabilities = np.full((40, 10), 0.01)
    probabilities[np.arange(40), labels] = 0.91
    probabilities[:4] = np.roll(probabilities[:4], 1, axis=1)  # four confident mistakes
    images = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    pictures = figures.model_pictures(
        images=images,
        labels=labels,
        probabilities=probabilities,
        class_names=CLASS_NAMES,
        history={"train_loss": [1.0, 0.5], "val_accuracy": [0.6, 0.7]},
        title="m",
    )
    assert set(pictures) == {
        "training_curves",
        "confusion_matrix",
        "confusion_matrix_normalized",
        "most_confused_pairs",
        "misclassified",
        "sample_predictions",
    }
    mistakes = pictures["misclassified"]
    captions = [ax.get_title() for ax in mistakes.axes if ax.get_title()]
    assert len(captions) == 4 and all("91%" in c for c in captions)
    for figure in pictures.values():
        assert _png(figure).startswith(b"\x89PNG")


def test_image_grid_wants_one_title_per_image():
    with pytest.raises(ValueError, match=r"expected one title per image \(2\), got 1"):
        figures.image_grid(np.zeros((2, 28, 28)), titles=["x"], title="t")
