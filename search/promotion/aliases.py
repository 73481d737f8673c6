"""The alias a registered candidate earns: ``champion`` when it beats the current champion's
test accuracy (or there is none to beat), else ``challenger``; and why, recorded on the version
and its promotion run."""

from __future__ import annotations

import contextlib
import logging
import math
from typing import TYPE_CHECKING

import numpy as np

from search.names import DECISION_TAG, TEST_ACCURACY_TAG
from search.tracking import Tracker

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"


def award(tracker: Tracker, version: ModelVersion, *, accuracy: float, test_images: np.ndarray,
           test_labels: np.ndarray) -> tuple[str, str]:  # fmt: skip
    """Set the alias ``version`` earns against the current champion; the alias and why."""
    model_name = version.name
    champion = tracker.version_by_alias(model_name, CHAMPION)
    if champion is not None and str(champion.version) == str(version.version):
        # Promoted before and still champion: keep the recorded decision.
        return CHAMPION, version.tags.get(DECISION_TAG, "already the champion")
    incumbent = None if champion is None else _incumbent_accuracy(
        tracker, champion, test_images=test_images, test_labels=test_labels
    )  # fmt: skip
    alias, decision = _decide(accuracy, champion, incumbent)
    tracker.set_alias(model_name, alias, version.version)
    tracker.set_version_tags(model_name, version.version, {DECISION_TAG: decision})
    tracker.set_tags(version.tags["promotion_run_id"], {DECISION_TAG: decision, "alias": alias})
    return alias, decision


def _incumbent_accuracy(
    tracker: Tracker, champion: ModelVersion, *, test_images: np.ndarray, test_labels: np.ndarray
) -> float | None:
    """``champion``'s recorded test accuracy or, for a version aliased by hand without one,
    its accuracy on the test set now (recorded on it); None if it cannot be judged (not a
    served model of this contract).

    A champion compared as nan could never be beaten: every comparison with nan is false.
    """
    with contextlib.suppress(KeyError, ValueError):
        recorded = float(champion.tags[TEST_ACCURACY_TAG])
        if math.isfinite(recorded):
            return recorded
    uri = f"models:/{champion.name}/{champion.version}"
    try:
        predicted = tracker.load_served_model(uri).predict(test_images)["class_index"].to_numpy()
    except Exception as exc:  # anything a foreign model raises
        logger.warning("champion %s has no test accuracy and could not be judged: %s", uri, exc)
        return None
    accuracy = float(np.mean(predicted == test_labels))
    logger.info("champion %s had no test accuracy: judged now, %.4f", uri, accuracy)
    tracker.set_version_tags(
        champion.name, champion.version, {TEST_ACCURACY_TAG: f"{accuracy:.6f}"}
    )
    return accuracy


def _decide(
    accuracy: float, champion: ModelVersion | None, incumbent: float | None
) -> tuple[str, str]:
    """The alias a candidate earns against the current champion (``incumbent``: its test
    accuracy, None where it has none), and why."""
    if champion is None:
        return CHAMPION, f"first champion: test accuracy {accuracy:.4f}"
    if incumbent is None:
        return CHAMPION, (
            f"champion: test accuracy {accuracy:.4f}; version {champion.version} had none "
            "to compare and could not be judged"
        )
    if accuracy > incumbent:
        return CHAMPION, (
            f"champion: test accuracy {accuracy:.4f} beats version {champion.version} "
            f"({incumbent:.4f})"
        )
    return CHALLENGER, (
        f"challenger: test accuracy {accuracy:.4f} does not beat champion version "
        f"{champion.version} ({incumbent:.4f})"
    )
