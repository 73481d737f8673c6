"""Measurements of a trained classifier: accuracy, confusion matrix, classification report."""

from __future__ import annotations

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


def confusion_figure(confusion: np.ndarray, *, class_names: tuple[str, ...], title: str) -> Figure:
    """A labelled confusion-matrix plot (true classes down, predicted across)."""
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay

    # A bare Figure, not pyplot: no global figure registry to leak across trials.
    fig = Figure(figsize=(8, 7), layout="constrained")
    ax = fig.add_subplot()
    ConfusionMatrixDisplay(confusion, display_labels=list(class_names)).plot(
        ax=ax, cmap="Blues", xticks_rotation=45, colorbar=False, values_format="d"
    )
    ax.set_title(title)
    return fig
