"""What a promotion records beside its decision: the registered version's tags, the study's
baseline judged on the same test images, and the candidate's pictures."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import TrialState

from runners.data import CLASS_NAMES
from runners.metrics import evaluate_predictions
from search.names import (
    BASELINE_ATTR,
    BASELINE_TAG,
    EXTRA_PACKAGES_TAG,
    FLAVOR_TAG,
    MODEL_URI_TAG,
    RUN_ID_ATTR,
    SOURCE_RUN_TAG,
    SOURCE_TRIAL_TAG,
    STUDY_TAG,
    TEST_ACCURACY_TAG,
    TEST_MACRO_F1_TAG,
)
from search.tracking import Tracker, confusion_json

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

PICTURES_FOLDER = "pictures"
CURVE_METRICS = ("train_loss", "val_loss", "train_accuracy", "val_accuracy")


def listed(tags: dict[str, str], key: str) -> tuple[str, ...]:
    """A run tag that holds a comma-separated list (none: empty)."""
    return tuple(filter(None, tags.get(key, "").split(",")))


def baseline_record(
    study: optuna.Study,
    tracker: Tracker,
    run_id: str,
    *,
    candidate: int,
    images: np.ndarray,
    labels: np.ndarray,
) -> dict[str, str]:
    """The study's baseline (its enqueued published configuration or recipe) judged on the
    test images beside the candidate: metrics of the promotion run, and the version tag the
    report reads (empty where there is no other completed baseline with a model)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    baseline = next((t for t in complete if BASELINE_ATTR in t.user_attrs), None)
    if baseline is None or baseline.number == candidate or RUN_ID_ATTR not in baseline.user_attrs:
        return {}
    tags = tracker.run_tags(baseline.user_attrs[RUN_ID_ATTR])
    if MODEL_URI_TAG not in tags:
        return {}
    served = tracker.preview_served_model(
        model_uri=tags[MODEL_URI_TAG], flavor=tags.get(FLAVOR_TAG, "keras"),
        class_names=CLASS_NAMES,
        extra_packages=listed(tags, EXTRA_PACKAGES_TAG),
    )  # fmt: skip
    predicted = served.predict(images)["class_index"].to_numpy()
    evaluation = evaluate_predictions(labels, predicted, class_names=CLASS_NAMES)
    tracker.log_metrics(run_id, {"baseline_test_accuracy": evaluation.accuracy,
                                 "baseline_test_macro_f1": evaluation.macro_f1})  # fmt: skip
    record = {"trial": baseline.number, "label": baseline.user_attrs[BASELINE_ATTR],
              "confusion": evaluation.confusion.tolist()}  # fmt: skip
    return {BASELINE_TAG: json.dumps(record, separators=(",", ":"))}


def version_record(evaluation, *, study, trial_number, trial_run_id, run_id, n_images,
                    recorded) -> dict[str, Any]:  # fmt: skip
    """The registered version's tags and description: its test record (``recorded``: the
    calibration's and the baseline's tags besides) and where it came from."""
    return {
        "tags": {
            TEST_ACCURACY_TAG: f"{evaluation.accuracy:.6f}",
            TEST_MACRO_F1_TAG: f"{evaluation.macro_f1:.6f}",
            **recorded,
            "test_confusion_matrix": confusion_json(evaluation),
            STUDY_TAG: study.study_name,
            SOURCE_TRIAL_TAG: trial_number,
            SOURCE_RUN_TAG: trial_run_id,
            "promotion_run_id": run_id,
        },
        "description": (
            f"Trial {trial_number} of study {study.study_name!r} (run {trial_run_id}): "
            f"test accuracy {evaluation.accuracy:.4f}, macro F1 {evaluation.macro_f1:.4f} "
            f"on {n_images} held-out images."
        ),
    }


def log_pictures(
    tracker: Tracker,
    run_id: str,
    *,
    trial_run_id: str,
    images: np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray,
    title: str,
) -> None:
    """The candidate's pictures on its promotion run, under ``pictures/``.

    Pictures explain the decision but do not make it: a failure to draw one is logged, not
    raised.
    """
    from runners.figures import model_pictures

    try:
        history = tracker.metric_histories(trial_run_id, CURVE_METRICS)
        figures = model_pictures(
            images=images,
            labels=labels,
            probabilities=probabilities,
            class_names=CLASS_NAMES,
            history=history,
            title=title,
        )
        tracker.log_figures(run_id, figures, folder=PICTURES_FOLDER)
    except Exception:
        logger.warning("could not draw the pictures of %s", title, exc_info=True)
