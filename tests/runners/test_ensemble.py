"""Choosing between the best model, its flip TTA and ensembles, on validation only."""

from __future__ import annotations

import numpy as np
import pytest

from runners.ensemble import choose_combination, flip_horizontal, view_probabilities


def _probs(predicted, n=10, confidence=0.6):
    p = np.full((len(predicted), n), (1 - confidence) / (n - 1))
    p[np.arange(len(predicted)), predicted] = confidence
    return p


def test_flip_mirrors_left_to_right():
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28, 1)
    flipped = flip_horizontal(images)
    assert flipped[0, 3, 0, 0] == images[0, 3, 27, 0]
    np.testing.assert_array_equal(flip_horizontal(flipped), images)
    plain, mirrored = view_probabilities(lambda x: x[:, 0, :2, 0], images)
    np.testing.assert_array_equal(plain, images[:, 0, :2, 0])
    np.testing.assert_array_equal(mirrored, images[:, 0, [27, 26], 0])


def test_an_ensemble_that_wins_on_validation_is_kept():
    labels = np.zeros(9, dtype=int)
    # Each model is confidently wrong on a different third: any two of them are outvoted
    # where one errs, all three are right everywhere.
    probabilities = {}
    for n, third in zip((5, 6, 7), range(3), strict=True):
        wrong = np.zeros(9, dtype=int)
        wrong[3 * third : 3 * third + 3] = 1
        p = np.where(wrong[:, None] == 1, _probs(wrong, confidence=0.9), _probs(wrong))
        probabilities[n] = (p, p)
    choice = choose_combination(probabilities, labels)
    assert choice.best_single.val_accuracy == pytest.approx(6 / 9)
    pair = next(o for o in choice.options if o.members == (5, 6) and not o.tta)
    assert pair.val_accuracy == pytest.approx(3 / 9)
    assert choice.combined and choice.chosen.members == (5, 6, 7)
    assert choice.chosen.val_accuracy == 1.0 and choice.chosen.tta is False  # no TTA gain
    assert len(choice.options) == 3 + 1 + 2 * 2


def test_nothing_beats_identical_models_so_the_best_single_is_kept():
    labels = np.array([0, 1, 2, 3])
    same = _probs(np.array([0, 1, 2, 0]))
    choice = choose_combination({1: (same, same), 2: (same, same)}, labels)
    assert not choice.combined and choice.chosen == choice.best_single
    assert choice.chosen.members == (1,) and choice.chosen.val_accuracy == 0.75


def test_flip_tta_is_kept_when_the_mirrored_view_fixes_mistakes():
    labels = np.array([0, 0, 0, 0])
    plain = _probs(np.array([0, 0, 1, 1]), confidence=0.4)
    mirrored = _probs(np.array([0, 0, 0, 0]), confidence=0.9)
    choice = choose_combination({3: (plain, mirrored)}, labels)
    assert choice.combined and choice.chosen.tta and choice.chosen.members == (3,)
    assert choice.to_dict()["chosen"]["val_accuracy"] == 1.0
