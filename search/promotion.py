"""Promotion: judge a study's best trial on the test set and register it, champion or not.

The test set is touched here only, once per candidate: the registered (pyfunc) model itself
predicts the raw uint8 test images, so the recorded accuracy is the served model's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import optuna

from runners.data import CLASS_NAMES
from runners.errors import FmsearchError
from runners.metrics import evaluate_predictions
from search.storage import ARCH_ATTR
from search.study import RUN_ID_ATTR
from search.tracking import (
    DECISION_TAG,
    MODEL_URI_TAG,
    PARENT_TAG,
    ROLE_TAG,
    SOURCE_RUN_TAG,
    SOURCE_TRIAL_TAG,
    STUDY_TAG,
    Tracker,
    confusion_json,
)

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
TEST_ACCURACY_TAG = "test_accuracy"
TEST_MACRO_F1_TAG = "test_macro_f1"


@dataclass(frozen=True)
class Promotion:
    """What promotion decided.

    Attributes:
        model_name: The registered model.
        version: The version registered for the study's best trial.
        alias: ``champion`` or ``challenger``.
        test_accuracy: The version's accuracy on the 10k test images.
        test_macro_f1: Its macro F1 there.
        trial_number: The trial it came from.
        decision: One sentence: why it got its alias.
        already_registered: The trial had been registered by an earlier promotion.
    """

    model_name: str
    version: str
    alias: str
    test_accuracy: float
    test_macro_f1: float
    trial_number: int
    decision: str
    already_registered: bool


def default_model_name(study: optuna.Study) -> str:
    """``fmsearch-<arch>`` for the architecture the study searches."""
    return f"fmsearch-{study.user_attrs.get(ARCH_ATTR, study.study_name)}"


def promote_winner(
    *,
    study: optuna.Study,
    tracker: Tracker,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    model_name: str,
) -> Promotion:
    """Register the best trial of ``study`` and make it champion if it beats the current one.

    Args:
        study: A study with at least one completed trial.
        tracker: The MLflow store the study's trials were logged to.
        test_images: The held-out test images, uint8 shaped (N, 28, 28).
        test_labels: Their labels.
        model_name: The registered model's name.

    Raises:
        FmsearchError: No completed trial, or its run or model is missing from the store.
    """
    try:
        best = study.best_trial
    except ValueError as exc:
        raise FmsearchError(
            f"study {study.study_name!r} has no completed trial to promote"
        ) from exc
    run_id = best.user_attrs.get(RUN_ID_ATTR)
    if run_id is None:
        raise FmsearchError(f"trial {best.number} of {study.study_name!r} has no MLflow run")
    try:
        trial_tags = tracker.run_tags(run_id)
    except Exception as exc:
        raise FmsearchError(
            f"trial {best.number}'s run {run_id} is not in tracking store "
            f"{tracker.tracking_uri}: expected the store the study was run with"
        ) from exc
    keras_model_uri = trial_tags.get(MODEL_URI_TAG)
    if keras_model_uri is None:
        raise FmsearchError(f"trial {best.number}'s run {run_id} has no logged model")

    version = tracker.find_version(model_name, source_run_id=run_id)
    already = version is not None
    if version is None:
        version = _register(
            study=study,
            tracker=tracker,
            trial_number=best.number,
            trial_run_id=run_id,
            parent_run_id=trial_tags.get(PARENT_TAG),
            keras_model_uri=keras_model_uri,
            test_images=test_images,
            test_labels=test_labels,
            model_name=model_name,
        )
    accuracy = float(version.tags[TEST_ACCURACY_TAG])
    macro_f1 = float(version.tags[TEST_MACRO_F1_TAG])

    champion = tracker.version_by_alias(model_name, CHAMPION)
    if champion is not None and str(champion.version) == str(version.version):
        # Promoted before and still champion: keep the recorded decision.
        alias, decision = CHAMPION, version.tags.get(DECISION_TAG, "already the champion")
    else:
        alias, decision = _decide(accuracy, champion)
        tracker.set_alias(model_name, alias, version.version)
        tracker.set_version_tags(model_name, version.version, {DECISION_TAG: decision})
        tracker.set_tags(version.tags["promotion_run_id"], {DECISION_TAG: decision, "alias": alias})
    logger.debug("%s version %s: %s", model_name, version.version, decision)
    return Promotion(
        model_name=model_name,
        version=str(version.version),
        alias=alias,
        test_accuracy=accuracy,
        test_macro_f1=macro_f1,
        trial_number=best.number,
        decision=decision,
        already_registered=already,
    )


def _decide(accuracy: float, champion: ModelVersion | None) -> tuple[str, str]:
    """The alias a candidate earns against the current champion, and why."""
    if champion is None:
        return CHAMPION, f"first champion: test accuracy {accuracy:.4f}"
    incumbent = float(champion.tags.get(TEST_ACCURACY_TAG, "nan"))
    if accuracy > incumbent:
        return CHAMPION, (
            f"champion: test accuracy {accuracy:.4f} beats version {champion.version} "
            f"({incumbent:.4f})"
        )
    return CHALLENGER, (
        f"challenger: test accuracy {accuracy:.4f} does not beat champion version "
        f"{champion.version} ({incumbent:.4f})"
    )


def _register(
    *,
    study: optuna.Study,
    tracker: Tracker,
    trial_number: int,
    trial_run_id: str,
    parent_run_id: str | None,
    keras_model_uri: str,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    model_name: str,
) -> ModelVersion:
    """Log the served model in a promotion run, score it on the test set, register it."""
    experiment_id = tracker.experiment_id(study.study_name)
    run_id = tracker.start_run(
        experiment_id=experiment_id,
        run_name=f"promotion-trial-{trial_number}",
        tags={
            ROLE_TAG: "promotion",
            STUDY_TAG: study.study_name,
            SOURCE_RUN_TAG: trial_run_id,
            SOURCE_TRIAL_TAG: trial_number,
            **({PARENT_TAG: parent_run_id} if parent_run_id else {}),
        },
    )
    try:
        served_uri = tracker.log_served_model(
            run_id, keras_model_uri=keras_model_uri, class_names=CLASS_NAMES
        )
        served = tracker.load_served_model(served_uri)
        predicted = served.predict(test_images)["class_index"].to_numpy()
        evaluation = evaluate_predictions(test_labels, predicted, class_names=CLASS_NAMES)
        tracker.log_evaluation(run_id, evaluation, class_names=CLASS_NAMES, split="test")
        version = tracker.register(
            name=model_name,
            model_uri=served_uri,
            run_id=run_id,
            tags={
                TEST_ACCURACY_TAG: f"{evaluation.accuracy:.6f}",
                TEST_MACRO_F1_TAG: f"{evaluation.macro_f1:.6f}",
                "test_confusion_matrix": confusion_json(evaluation),
                STUDY_TAG: study.study_name,
                SOURCE_TRIAL_TAG: trial_number,
                SOURCE_RUN_TAG: trial_run_id,
                "promotion_run_id": run_id,
            },
            description=(
                f"Trial {trial_number} of study {study.study_name!r} (run {trial_run_id}): "
                f"test accuracy {evaluation.accuracy:.4f}, macro F1 {evaluation.macro_f1:.4f} "
                f"on {len(test_labels)} held-out images."
            ),
        )
    except BaseException as exc:
        tracker.end_run(run_id, status="FAILED", reason=f"{type(exc).__name__}: {exc}")
        raise
    tracker.set_tags(run_id, {"registered_version": version.version})
    tracker.end_run(run_id, status="FINISHED")
    return version
