from __future__ import annotations

import numpy as np
import pytest

from runners.data import CLASS_NAMES
from runners.metrics import confusion_figure, evaluate_predictions, scores_from_confusion


def test_evaluate_predictions_counts():
    y_true = np.array([0, 0, 1, 1, 2, 9])
    y_pred = np.array([0, 1, 1, 1, 2, 8])
    ev = evaluate_predictions(y_true, y_pred, class_names=CLASS_NAMES)
    assert ev.accuracy == pytest.approx(4 / 6)
    assert ev.confusion.shape == (10, 10)
    assert ev.confusion.sum() == 6
    assert ev.confusion[0, 1] == 1 and ev.confusion[9, 8] == 1
    assert ev.report["Trouser"]["precision"] == pytest.approx(2 / 3)
    assert ev.report["Trouser"]["recall"] == 1.0
    assert ev.macro_f1 == pytest.approx(ev.report["macro avg"]["f1-score"])


def test_confusion_figure_names_the_classes():
    confusion = np.arange(100).reshape(10, 10)
    fig = confusion_figure(confusion, class_names=CLASS_NAMES, title="val accuracy 0.5")
    ax = fig.axes[0]
    assert ax.get_title() == "val accuracy 0.5"
    assert [t.get_text() for t in ax.get_yticklabels()] == list(CLASS_NAMES)
    assert sum(t.get_text() == "99" for t in ax.texts) == 1


def test_scores_from_a_confusion_matrix_are_sklearn_s():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 10, 500)
    predicted = np.where(rng.random(500) < 0.7, truth, rng.integers(0, 10, 500))
    predicted[predicted == 9] = 8  # a class never predicted: its F1 is 0, as sklearn's
    evaluation = evaluate_predictions(truth, predicted, class_names=CLASS_NAMES)
    scores = scores_from_confusion(evaluation.confusion)
    assert scores["accuracy"] == pytest.approx(evaluation.accuracy)
    assert scores["macro_f1"] == pytest.approx(evaluation.macro_f1)
    expected = f1_score(truth, predicted, labels=range(10), average=None, zero_division=0)
    np.testing.assert_allclose(scores["f1"], expected)
