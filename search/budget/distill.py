"""One model to serve: the finals' ensemble, when it wins, distilled into a single network.

An ensemble (or flip TTA) that beats the best final model on validation costs every member's
latency at serving time. A single network of its best member's configuration then trains on
the ensemble's soft labels (the averaged class probabilities it gives each training image:
knowledge distillation at temperature 1), for as many epochs as the finals' time kept for it
holds (:attr:`search.budget.plan.Plan.distill_seconds`). It is served in the ensemble's
place when it is within ``DISTILL_TOLERANCE`` of it on validation: the study records that
(``DISTILLED_ATTR``) and promotion reads it
(:func:`search.promotion.promote.select_candidate`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from runners.data import Split
from search.budget.ensemble import predictor
from search.budget.finals import MIN_FINAL_EPOCHS_SHARE, epochs_for_final, most_final_epochs
from search.budget.plan import DISTILL_TOLERANCE, Plan
from search.names import (
    DISTILL_TAG,
    DISTILLED_ATTR,
    DISTILLED_FROM_ATTR,
    ENSEMBLE_ATTR,
    LATENCY_ATTR,
    MODEL_URI_TAG,
    N_PARAMS_ATTR,
    RUN_ID_ATTR,
    STANDS_IN_ATTR,
    STRETCH_TO_ATTR,
    TTA_ATTR,
)
from search.outcome import Refit
from search.tracking import Tracker

logger = logging.getLogger(__name__)

DISTILL_FILE = "distill.json"


@dataclass(frozen=True)
class Distillation:
    """An ensemble trial and the single model distilled from it, side by side.

    Attributes:
        ensemble: The ensemble trial's number.
        student: The distilled model's trial number (None: it did not train).
        val_accuracy: The ensemble's and the student's validation accuracy.
        latency_ms: Milliseconds per image of each, served.
        n_params: Parameters of each (the ensemble's: all its members').
        kept: Whether the student is served in the ensemble's place.
        reason: Why, in one line.
    """

    ensemble: int
    student: int | None
    val_accuracy: tuple[float, float | None]
    latency_ms: tuple[float | None, float | None]
    n_params: tuple[int | None, int | None]
    kept: bool
    reason: str


def latest_ensemble(study: optuna.Study) -> FrozenTrial | None:
    """The ensemble trial the finals' combination added last (not a stand-in), if any."""
    ensembles = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if ENSEMBLE_ATTR in t.user_attrs and STANDS_IN_ATTR not in t.user_attrs
    ]
    return ensembles[-1] if ensembles else None


def soft_labels(
    *, tracker: Tracker, members: Sequence[FrozenTrial], tta: bool, images: np.ndarray
) -> np.ndarray:
    """The class probabilities the ensemble of ``members`` (with flip TTA where ``tta``)
    gives ``images`` (float32, one row per image)."""
    from runners.training import free_memory

    uris = [tracker.run_tags(m.user_attrs[RUN_ID_ATTR])[MODEL_URI_TAG] for m in members]
    models = [tracker.load_keras_model(uri) for uri in uris]
    try:
        predict = predictor(models, tta=tta)
        return predict(images).astype(np.float32)
    finally:
        models.clear()
        free_memory()


def distill_ensemble(
    *,
    study: optuna.Study,
    tracker: Tracker,
    split: Split,
    plan: Plan,
    parent_run_id: str,
    run: Callable[[Refit, float, Split], object],
    now: Callable[[], float] = time.time,
    tolerance: float = DISTILL_TOLERANCE,
) -> Distillation | None:
    """Distill the study's latest ensemble trial into one model, decide which is served,
    and record both on the parent run (``distill.json``, the ``fmsearch.distill`` tag).

    Args:
        study: The searched study, its finals combined.
        tracker: Its MLflow records.
        split: The finals' training and validation images.
        plan: Its plan (the student trains until ``finals_end_at``).
        parent_run_id: The study's parent run.
        run: Trains one refit on a split (its training labels soft) with a time limit in
            seconds.
        now: The clock (Unix time).
        tolerance: How far below the ensemble on validation the student may be and be kept.

    Returns:
        What was decided, or None when the study has no ensemble trial.
    """
    ensemble = latest_ensemble(study)
    if ensemble is None:
        return None
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    members = [by_number[m] for m in ensemble.user_attrs[ENSEMBLE_ATTR]]
    best = members[0]
    epochs, _ = epochs_for_final(study, plan, best, finals_left=1, now=now())
    left = plan.finals_end_at - now()
    student = None
    if left <= 0 or epochs < MIN_FINAL_EPOCHS_SHARE * plan.final_epochs:
        reason = (
            f"not distilled: the {max(left, 0):.0f} s left hold {epochs} epochs of trial "
            f"{best.number}'s configuration, of the plan's {plan.final_epochs}"
        )
    else:
        taught = Split(
            x_train=split.x_train,
            y_train=soft_labels(tracker=tracker, members=members, images=split.x_train,
                                tta=bool(ensemble.user_attrs.get(TTA_ATTR))),
            x_val=split.x_val,
            y_val=split.y_val,
        )  # fmt: skip
        logger.info(
            "distilling trial %d (%d members) into one model of trial %d's configuration, "
            "%d epochs", ensemble.number, len(members), best.number,
            epochs,
        )  # fmt: skip
        refit = Refit(
            of=best.number,
            epochs=epochs,
            params=dict(best.params),
            attrs={DISTILLED_FROM_ATTR: ensemble.number, STRETCH_TO_ATTR: most_final_epochs(plan)},
        )
        run(refit, plan.finals_end_at - now(), taught)
        student = _student(study, ensemble.number)
        reason = "the student did not complete" if student is None else ""
    decision = _decide(ensemble, student, tolerance=tolerance, reason=reason)
    if decision.kept:
        kept = dict(study.user_attrs.get(DISTILLED_ATTR, {}))
        study.set_user_attr(DISTILLED_ATTR, {**kept, str(ensemble.number): student.number})
    tracker.log_json(parent_run_id, asdict(decision), DISTILL_FILE)
    tracker.set_tags(parent_run_id, {DISTILL_TAG: decision.reason})
    logger.info("distillation: %s", decision.reason)
    return decision


def _student(study: optuna.Study, ensemble: int) -> FrozenTrial | None:
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get(DISTILLED_FROM_ATTR) == ensemble
    ]
    return done[-1] if done else None


def _decide(
    ensemble: FrozenTrial, student: FrozenTrial | None, *, tolerance: float, reason: str
) -> Distillation:
    def figures(attr):
        theirs = None if student is None else student.user_attrs.get(attr)
        return ensemble.user_attrs.get(attr), theirs

    kept = student is not None and student.value >= ensemble.value - tolerance
    if student is not None:
        reason = (
            f"trial {student.number} (one model, {student.value:.4f} on validation) "
            + ("served in place of" if kept else "not served: more than "
               f"{100 * tolerance:.1f} points below")
            + f" ensemble trial {ensemble.number} ({ensemble.value:.4f})"
        )  # fmt: skip
    return Distillation(
        ensemble=ensemble.number,
        student=None if student is None else student.number,
        val_accuracy=(ensemble.value, None if student is None else student.value),
        latency_ms=figures(LATENCY_ATTR),
        n_params=figures(N_PARAMS_ATTR),
        kept=kept,
        reason=reason,
    )
