"""Measurements of a trained classifier: accuracy, confusion matrix, classification report."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Evaluation:
    """Scores of predictions against true labels.

    Attributes:
        accuracy: Share of correct predictions.
        macro_f1: F1 averaged over classes with equal weight.
        confusion: ``confusion[i, j]`` counts images of class ``i`` predicted as ``j``.
        report: scikit-learn's classification report: precision, recall, F1 and support per
            class name, plus the averages.
    """

    accuracy: float
    macro_f1: float
    confusion: np.ndarray
    report: dict[str, Any]


def predict_classes(model: keras.Model, images: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
    """The most probable class of each image."""
    return model.predict(images, batch_size=batch_size, verbose=0).argmax(axis=1)


def measure_latency(
    predict: Callable[[np.ndarray], Any], images: np.ndarray, *, n: int = 256, repeats: int = 2
) -> float:
    """Milliseconds per image that ``predict`` takes on a batch of ``n`` images (best of
    ``repeats``, after one warm-up call, so graph tracing and caches are not counted)."""
    batch = images[:n]
    predict(batch)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        predict(batch)
        best = min(best, time.perf_counter() - start)
    return 1000.0 * best / len(batch)


def evaluate_predictions(
    y_true: np.ndarray, y_pred: np.ndarray, *, class_names: tuple[str, ...]
) -> Evaluation:
    """Score predicted class indices against the true ones."""
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

    labels = list(range(len(class_names)))
    report = classification_report(
        y_true,
        y_pred,
        labels=labels,
        target_names=list(class_names),
        output_dict=True,
        zero_division=0,
    )
    return Evaluation(
        accuracy=float(accuracy_score(y_true, y_pred)),
        macro_f1=float(report["macro avg"]["f1-score"]),
        confusion=confusion_matrix(y_true, y_pred, labels=labels),
        report=report,
    )


def confusion_figure(
    confusion: np.ndarray, *, class_names: tuple[str, ...], title: str, normalize: bool = False
) -> Figure:
    """A labelled confusion-matrix plot (true classes down, predicted across).

    ``normalize`` shows each row as shares of its true class (recall on the diagonal).
    """
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay

    shown = normalized_confusion(confusion) if normalize else confusion
    # A bare Figure, not pyplot: no global figure registry to leak across trials.
    fig = Figure(figsize=(8, 7), layout="constrained")
    ax = fig.add_subplot()
    ConfusionMatrixDisplay(shown, display_labels=list(class_names)).plot(
        ax=ax,
        cmap="Blues",
        xticks_rotation=45,
        colorbar=False,
        values_format=".2f" if normalize else "d",
    )
    ax.set_title(title)
    return fig


# What a study can optimise on its validation images: accuracy, F1 averaged over the classes,
# or the F1 of the class the model does worst on (Shirt, in every source).
METRICS = ("accuracy", "macro_f1", "worst_class_f1")


def score(metric: str, y_true: np.ndarray, y_pred: np.ndarray, *, num_classes: int) -> float:
    """``metric`` (one of :data:`METRICS`) of predicted class indices."""
    from sklearn.metrics import confusion_matrix

    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    scores = scores_from_confusion(confusion_matrix(y_true, y_pred, labels=range(num_classes)))
    return min(scores["f1"]) if metric == "worst_class_f1" else scores[metric]


def scores_from_confusion(confusion: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro F1 and each class's F1 of a confusion matrix (true classes down): what
    a recorded matrix says without the predictions behind it."""
    confusion = np.asarray(confusion, dtype=float)
    hits = np.diag(confusion)
    # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (row total + column total); 0 for an empty class.
    totals = confusion.sum(axis=1) + confusion.sum(axis=0)
    f1 = np.divide(2 * hits, totals, out=np.zeros_like(hits), where=totals > 0)
    return {
        "accuracy": float(hits.sum() / max(confusion.sum(), 1.0)),
        "macro_f1": float(f1.mean()),
        "f1": [float(v) for v in f1],
    }


def normalized_confusion(confusion: np.ndarray) -> np.ndarray:
    """Each row divided by its sum: the share of a true class given each prediction."""
    totals = confusion.sum(axis=1, keepdims=True)
    return np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)


def confused_pairs(
    confusion: np.ndarray, *, class_names: tuple[str, ...], top: int = 10
) -> list[tuple[str, str, int]]:
    """The ``top`` (true class, predicted class, count) mistakes, most frequent first."""
    off_diagonal = confusion.copy()
    np.fill_diagonal(off_diagonal, 0)
    order = np.argsort(off_diagonal, axis=None, kind="stable")[::-1][:top]
    pairs = []
    for flat in order:
        true, predicted = np.unravel_index(flat, confusion.shape)
        count = int(off_diagonal[true, predicted])
        if count == 0:
            break
        pairs.append((class_names[true], class_names[predicted], count))
    return pairs
