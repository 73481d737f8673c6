"""Promotion: judge a study's best trial on the test set and register it, champion or not.

The test set is touched here only, once per candidate (and once for the study's baseline,
judged beside it): the registered (pyfunc) model itself predicts the raw uint8 test images, so
the recorded accuracy is the served model's.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from runners.data import CLASS_NAMES
from runners.errors import FmsearchError
from runners.metrics import evaluate_predictions
from search.names import (
    ARCH_ATTR,
    DISTILLED_ATTR,
    EXTRA_PACKAGES_TAG,
    FLAVOR_TAG,
    LATENCY_ATTR,
    MEMBERS_TAG,
    MODEL_URI_TAG,
    N_PARAMS_ATTR,
    PARENT_TAG,
    ROLE_TAG,
    RUN_ID_ATTR,
    SOURCE_RUN_TAG,
    SOURCE_TRIAL_TAG,
    STANDS_IN_ATTR,
    STUDY_TAG,
    TEST_ACCURACY_TAG,
    TEST_LOSS_TAG,
    TEST_MACRO_F1_TAG,
    TTA_TAG,
    UNLOGGED_ATTR,
)
from search.outcome import best_of
from search.promotion.aliases import award
from search.promotion.calibration import Calibration, calibrate, record_calibration
from search.promotion.records import (
    baseline_record,
    listed,
    log_pictures,
    version_record,
)
from search.tracking import LOCK_LEASE_SECONDS, Tracker

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

logger = logging.getLogger(__name__)

# A waiter outlasts the lease of a holder that died on another host (then breaks its lock).
REGISTRY_LOCK_TIMEOUT = LOCK_LEASE_SECONDS + 60.0


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
        test_loss: The version's cross-entropy on the test images (None: registered before
            fmsearch recorded it).
    """

    model_name: str
    version: str
    alias: str
    test_accuracy: float
    test_macro_f1: float
    trial_number: int
    decision: str
    already_registered: bool
    test_loss: float | None = None


def default_model_name(study: optuna.Study) -> str:
    """:func:`model_name_for` the architecture the study searches."""
    return model_name_for(study.user_attrs.get(ARCH_ATTR, study.study_name))


def model_name_for(arch: str) -> str:
    """``fmsearch-<arch>`` (``fmsearch-a-b`` for architectures ``a,b`` searched together)."""
    return f"fmsearch-{arch.replace(',', '-')}"


def promote_winner(
    *,
    study: optuna.Study,
    tracker: Tracker,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    model_name: str,
    max_params: int | None = None,
    max_latency_ms: float | None = None,
    val_images: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
) -> Promotion:
    """Register the best trial of ``study`` and make it champion if it beats the current one.

    The best trial is the most accurate completed one (in a multi-objective study: the most
    accurate on the Pareto front) among those within ``max_params`` and ``max_latency_ms``.

    Args:
        study: A study with at least one completed trial.
        tracker: The MLflow store the study's trials were logged to.
        test_images: The held-out test images, uint8 shaped (N, 28, 28).
        test_labels: Their labels.
        model_name: The registered model's name.
        max_params: Only trials whose model has at most this many parameters.
        max_latency_ms: Only trials whose model predicts in at most this many ms per image.
        val_images: The study's validation images, to fit a temperature on: the served model
            scales its probabilities by it when that lowers their calibration error (None:
            no calibration).
        val_labels: Their labels.

    Raises:
        FmsearchError: No completed trial (within the limits), or its run or model is
            missing from the store.
    """
    # Registry aliases are last-writer-wins: promotions at once take turns, and each reads the
    # champion only once it holds the lock. The lock lives in the registry, not in the study
    # storage: studies in different storages may register one name.
    with tracker.registry_lock(model_name, timeout=REGISTRY_LOCK_TIMEOUT):
        return _promote(
            study=study,
            tracker=tracker,
            test_images=test_images,
            test_labels=test_labels,
            model_name=model_name,
            max_params=max_params,
            max_latency_ms=max_latency_ms,
            validation=None if val_images is None else (val_images, val_labels),
        )


def _promote(
    *,
    study: optuna.Study,
    tracker: Tracker,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    model_name: str,
    max_params: int | None,
    max_latency_ms: float | None,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
) -> Promotion:
    best = select_candidate(study, max_params=max_params, max_latency_ms=max_latency_ms)
    run_id, trial_tags = _source(study, tracker, best)
    version = tracker.find_version(model_name, source_run_id=run_id)
    already = version is not None
    if version is None:
        version = _register(
            study=study,
            tracker=tracker,
            trial_number=best.number,
            trial_run_id=run_id,
            parent_run_id=trial_tags.get(PARENT_TAG),
            model_uri=trial_tags[MODEL_URI_TAG],
            flavor=trial_tags.get(FLAVOR_TAG, "keras"),
            extra_packages=listed(trial_tags, EXTRA_PACKAGES_TAG),
            members=listed(trial_tags, MEMBERS_TAG),
            tta=trial_tags.get(TTA_TAG) == "true",
            test_images=test_images,
            test_labels=test_labels,
            model_name=model_name,
            validation=validation,
        )
    accuracy = float(version.tags[TEST_ACCURACY_TAG])
    macro_f1 = float(version.tags[TEST_MACRO_F1_TAG])

    alias, decision = award(tracker, version, accuracy=accuracy, test_images=test_images,
                            test_labels=test_labels)  # fmt: skip
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
        test_loss=float(version.tags[TEST_LOSS_TAG]) if TEST_LOSS_TAG in version.tags else None,
    )


def _log_served(
    tracker: Tracker, run_id: str, served_args: dict, *, validation: tuple | None
) -> tuple[str, Calibration]:
    """Log the served model into ``run_id``, with a temperature fitted on ``validation``
    where it calibrates better; its URI and the calibration."""
    calibration = Calibration(temperature=1.0)
    if validation is not None:
        calibration = calibrate(tracker.preview_served_model(**served_args), *validation)
    temperature = calibration.temperature if calibration.applied else 1.0
    return tracker.log_served_model(run_id, **served_args, temperature=temperature), calibration


def _source(study: optuna.Study, tracker: Tracker, best: FrozenTrial) -> tuple[str, dict[str, str]]:
    """``best``'s MLflow run id and tags, checked to hold a logged model."""
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
    if MODEL_URI_TAG not in trial_tags:
        raise FmsearchError(f"trial {best.number}'s run {run_id} has no logged model")
    return run_id, trial_tags


def select_candidate(
    study: optuna.Study, *, max_params: int | None = None, max_latency_ms: float | None = None
) -> FrozenTrial:
    """The most accurate completed trial within the limits, or the model that stands in for
    it (the same configuration trained again with the validation images, ``STANDS_IN_ATTR``;
    for an ensemble, the single model distilled from it when it was kept, ``DISTILLED_ATTR``).

    Within limits on the study's own second objective, that trial is on the Pareto front.

    Raises:
        FmsearchError: No completed trial, or none within the limits.
    """
    promotable = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        # A model the tracking store missed (it was down) cannot be promoted.
        if "model" not in t.user_attrs.get(UNLOGGED_ATTR, ())
    ]
    # A stand-in's value is borrowed from the trial it replaces: it never competes with it.
    complete = [t for t in promotable if STANDS_IN_ATTR not in t.user_attrs]
    if not complete:
        raise FmsearchError(f"study {study.study_name!r} has no completed trial to promote")
    limits = {N_PARAMS_ATTR: max_params, LATENCY_ATTR: max_latency_ms}
    limits = {attr: limit for attr, limit in limits.items() if limit is not None}

    def within(trial: FrozenTrial) -> bool:
        return all(trial.user_attrs.get(attr, math.inf) <= limit for attr, limit in limits.items())

    fitting = [t for t in complete if within(t)]
    if not fitting:
        smallest = {
            attr: min(t.user_attrs.get(attr, math.inf) for t in complete) for attr in limits
        }
        wanted = ", ".join(f"{attr} <= {limit:g}" for attr, limit in limits.items())
        got = ", ".join(f"{attr} {value:g}" for attr, value in smallest.items())
        raise FmsearchError(
            f"no completed trial of {study.study_name!r} has {wanted}; the smallest: {got}"
        )
    best = best_of(fitting)
    student = study.user_attrs.get(DISTILLED_ATTR, {}).get(str(best.number))
    best = next((t for t in fitting if t.number == student), best)
    stand_ins = [t for t in promotable if t.user_attrs.get(STANDS_IN_ATTR) == best.number]
    return max(stand_ins, key=lambda t: t.number, default=best)


def _register(
    *,
    study: optuna.Study,
    tracker: Tracker,
    trial_number: int,
    trial_run_id: str,
    parent_run_id: str | None,
    model_uri: str,
    flavor: str,
    extra_packages: tuple[str, ...],
    test_images: np.ndarray,
    test_labels: np.ndarray,
    model_name: str,
    members: tuple[str, ...] = (),
    tta: bool = False,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
) -> ModelVersion:
    """Log the served model in a promotion run, score it on the test set, register it.

    An ensemble trial's served model holds all its ``members`` (and flip TTA if ``tta``);
    with ``validation`` images, a temperature fitted on them where it calibrates better.
    """
    run_id = tracker.start_run(
        experiment_id=tracker.experiment_id(study.study_name),
        run_name=f"promotion-trial-{trial_number}",
        tags={
            ROLE_TAG: "promotion", STUDY_TAG: study.study_name, SOURCE_RUN_TAG: trial_run_id,
            SOURCE_TRIAL_TAG: trial_number,
            **({PARENT_TAG: parent_run_id} if parent_run_id else {}),
        },
    )  # fmt: skip
    try:
        served_args = {
            "model_uri": model_uri, "flavor": flavor, "class_names": CLASS_NAMES,
            "extra_packages": extra_packages, "members": members, "tta": tta,
        }  # fmt: skip
        served_uri, calibration = _log_served(tracker, run_id, served_args, validation=validation)
        served = tracker.load_served_model(served_uri)
        logger.info("judging trial %d on %d test images", trial_number, len(test_labels))
        frame = served.predict(test_images)
        predicted = frame["class_index"].to_numpy()
        evaluation = evaluate_predictions(test_labels, predicted, class_names=CLASS_NAMES)
        tracker.log_evaluation(run_id, evaluation, class_names=CLASS_NAMES, split="test")
        recorded = record_calibration(
            tracker, run_id, calibration, probabilities=frame[list(CLASS_NAMES)].to_numpy(),
            labels=test_labels, title=f"{model_name} (trial {trial_number})",
        )  # fmt: skip
        recorded |= baseline_record(study, tracker, run_id, candidate=trial_number,
                                     images=test_images, labels=test_labels)  # fmt: skip
        log_pictures(tracker, run_id, trial_run_id=trial_run_id, images=test_images,
                     labels=test_labels, probabilities=frame[list(CLASS_NAMES)].to_numpy(),
                     title=f"{model_name} (trial {trial_number})")  # fmt: skip
        version = tracker.register(
            name=model_name,
            model_uri=served_uri,
            run_id=run_id,
            **version_record(evaluation, study=study, trial_number=trial_number,
                              trial_run_id=trial_run_id, run_id=run_id,
                              n_images=len(test_labels), recorded=recorded),
        )  # fmt: skip
    except BaseException as exc:
        tracker.end_run(run_id, status="FAILED", reason=f"{type(exc).__name__}: {exc}")
        raise
    tracker.set_tags(run_id, {"registered_version": version.version})
    tracker.end_run(run_id, status="FINISHED")
    return version
