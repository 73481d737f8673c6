"""A budgeted search from start to end: measure, plan, climb the ladder, train the winners.

:func:`search.budget.costs.measure_host` and :func:`make_ladder` prepare; the ladder's trials
run through :func:`search.engines.optuna_pool.run_worker` like any others; :func:`run_finals`
trains the top configurations on all the images; :func:`retrain_on_all_data`
(``--final-on-all-data``) trains the chosen model again with the validation images;
:func:`record_outcome` checks the plan's estimate against what the command took.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from runners.data import FashionMNIST, Split, split_train_val
from search.budget.costs import MAX_FINAL_EPOCHS, TRIAL_OVERHEAD_SECONDS
from search.budget.ladder import Ladder, RungData, final_candidates, final_params, seconds_per_epoch
from search.budget.plan import Plan
from search.names import (
    BEST_EPOCH_ATTR,
    ENSEMBLE_ATTR,
    FINAL_ATTR,
    PLAN_ATTR,
    PLAN_TAG_PREFIX,
    PROMOTED_FROM_ATTR,
    REFIT_ATTR,
    STANDS_IN_ATTR,
    STRETCH_TO_ATTR,
    TRAIN_IMAGES_ATTR,
)
from search.outcome import Refit, StudyOutcome
from search.tracking import Tracker

if TYPE_CHECKING:
    pass  # loads TensorFlow

logger = logging.getLogger(__name__)


def make_ladder(plan: Plan, *, data: FashionMNIST, full: Split, val_size: int) -> Ladder:
    """The plan's ladder over ``data``: rung ``r`` trains on the stratified prefix of its size
    (each rung's images hold the ones below), every rung validates on ``full``'s images."""
    rungs = []
    for rung in plan.rungs:
        if rung.train_images == len(full.x_train):
            split = full
        else:
            split = split_train_val(
                data.x_train, data.y_train, val_size=val_size, subset=rung.train_images
            )
        rungs.append(RungData(split=split, epochs=rung.epochs))
    return Ladder(plan=plan, rungs=rungs)


def stored_plan(study: optuna.Study) -> Plan | None:
    """The plan a budgeted ``fmsearch run`` stored on its study, if any."""
    text = study.user_attrs.get(PLAN_ATTR)
    return None if text is None else Plan.from_json(text)


def record_plan(
    study: optuna.Study, *, tracker: Tracker, parent_run_id: str, plan: Plan, arch: str
) -> None:
    """Keep the plan with the study (for workers) and on its parent run (for people).

    The parent run gets the plan's headline as params the first time (MLflow params never
    change; a resumed study's new plan shows in tags) and ``plan.json``, the latest plan.
    """
    study.set_user_attr(PLAN_ATTR, plan.to_json())
    summary = plan_summary(plan)
    if any(key in tracker.run_params(parent_run_id) for key in summary):
        tracker.set_tags(parent_run_id, {PLAN_TAG_PREFIX + k: v for k, v in summary.items()})
    else:
        tracker.log_params(parent_run_id, summary)
    tracker.log_json(parent_run_id, {"arch": arch, **asdict(plan)}, "plan.json")


def run_finals(
    *,
    study: optuna.Study,
    plan: Plan,
    run: Callable[[Refit, float], StudyOutcome],
    now: Callable[[], float] = time.time,
) -> list[int]:
    """Train the plan's top configurations on all the images, one after the other (a thin
    ladder's one final: the study's baseline, see :attr:`search.budget.plan.Plan.thin_ladder`).

    Each final training is a refit trial (``refit_of`` the ladder trial it trains again,
    ``final`` set) with a one-cycle schedule. Its epochs come from what an epoch on all the
    images will take (:func:`epoch_seconds_on_all`), so that the schedule fits the time
    left and ends annealed. A configuration whose final would get too few of them
    (:func:`too_slow_for_a_final`) goes after the others of its rung.

    Args:
        study: The searched study.
        plan: Its plan.
        run: Runs one refit with a time limit in seconds
            (:func:`search.engines.optuna_pool.run_worker`).
        now: The clock (Unix time).

    Returns:
        The numbers of the trials whose configurations were trained.
    """
    candidates = final_candidates(
        study, k=plan.top_k, baseline_first=plan.thin_ladder,
        too_slow=None if plan.thin_ladder else too_slow_for_a_final(study, plan, now=now()),
    )  # fmt: skip
    # The distilled model, when the plan keeps one, is one more training of the finals' time.
    student = plan.students(len(candidates))
    trained = []
    for i, trial in enumerate(candidates):
        epochs, retrain_epoch = epochs_for_final(
            study, plan, trial, finals_left=len(candidates) - i + student, now=now()
        )
        # Without a retraining kept, retrain_ends_at is finals_end_at and the reserve is 0.
        reserve = retrain_reserve(plan, epochs=epochs, retrain_epoch_seconds=retrain_epoch)
        left = plan.retrain_ends_at - reserve - now()
        if left <= 0:
            logger.warning("no time left for the final training of trial %d", trial.number)
            break
        logger.info(
            "final training %d/%d: trial %d's configuration, %d epochs",
            i + 1, len(candidates), trial.number, epochs,
        )  # fmt: skip
        refit = Refit(
            of=trial.number,
            epochs=epochs,
            params=final_params(trial.params),
            # Planned from the ladder's epochs of its configuration; where its own epochs
            # run faster, its schedule lengthens into the time they leave.
            attrs={FINAL_ATTR: True, STRETCH_TO_ATTR: most_final_epochs(plan)},
        )
        run(refit, left / (len(candidates) - i + student))
        trained.append(trial.number)
    return trained


# A final is a long schedule: a configuration whose final the time left holds for fewer than
# this share of the plan's final epochs gives way to one of its rung that gets them (a final
# cut to a few epochs loses to a slightly weaker find trained long: docs/budgets.md, "Finals").
MIN_FINAL_EPOCHS_SHARE = 0.5


def epochs_for_final(
    study: optuna.Study, plan: Plan, trial: FrozenTrial, *, finals_left: int, now: float
) -> tuple[int, float]:
    """The epochs ``trial``'s final would get if it started at ``now``, ``finals_left``
    finals (itself among them) sharing the time left, and the seconds an epoch of its
    retraining on all the images would take (what the finals leave for it, when the plan
    keeps one).

    Epochs are planned at the pace the finals so far kept (:func:`finals_pace`), up to twice
    the plan's when the time allows (the search ran faster than the probe said): a schedule
    fitted to the time left, but never far past the plan.
    """
    pace = finals_pace(study, plan)
    images = plan.train_images + plan.val_images
    retrain_epoch = pace * epoch_seconds_on_all(study, plan, trial, images=images)
    fitted = final_epochs(
        plan,
        epoch_seconds=pace * epoch_seconds_on_all(study, plan, trial),
        finals_left=finals_left,
        now=now,
        retrain_epoch_seconds=retrain_epoch,
    )
    return min(most_final_epochs(plan), fitted), retrain_epoch


def most_final_epochs(plan: Plan) -> int:
    """The most epochs a final trains: up to twice the plan's when the time allows (the
    search or the final ran faster than the probe said), never far past the plan."""
    return min(MAX_FINAL_EPOCHS, 2 * max(plan.final_epochs, 1))


def too_slow_for_a_final(
    study: optuna.Study, plan: Plan, *, now: float
) -> Callable[[FrozenTrial], bool]:
    """Whether the time left would hold a configuration's final for too few epochs
    (``MIN_FINAL_EPOCHS_SHARE`` of the plan's, each of its finals its share of the time and
    its retraining, when the plan keeps one, priced in: :func:`epochs_for_final`)."""

    trainings = plan.top_k + plan.students(plan.top_k)

    def too_slow(trial: FrozenTrial) -> bool:
        epochs, _ = epochs_for_final(study, plan, trial, finals_left=trainings, now=now)
        return epochs < MIN_FINAL_EPOCHS_SHARE * plan.final_epochs

    return too_slow


# A retraining that fits fewer epochs than its best count trains that many, down to this
# share of them; fewer, and it is left out.
MIN_RETRAIN_SHARE = 0.75


def with_validation_in_training(split: Split) -> Split:
    """``split`` with its validation images added to its training images (its validation
    images stay, so that the training loop runs as ever; what it reports on them is not a
    validation)."""
    return Split(
        x_train=np.concatenate([split.x_train, split.x_val]),
        y_train=np.concatenate([split.y_train, split.y_val]),
        x_val=split.x_val,
        y_val=split.y_val,
    )


def retrain_on_all_data(
    *,
    study: optuna.Study,
    plan: Plan,
    chosen: FrozenTrial,
    run: Callable[[Refit, float], StudyOutcome],
    now: Callable[[], float] = time.time,
) -> dict[int, int]:
    """Train the chosen model (the one promotion would pick) again with the validation
    images, as Keras Tuner's tutorial does: each of its members (one, or an ensemble's), best
    first, for the epoch count that was best on validation (or as many as the time left holds,
    down to ``MIN_RETRAIN_SHARE`` of them), while the plan's time holds one
    more.

    Each retraining is a refit trial that stands in for its member (``STANDS_IN_ATTR``): the
    selection stays the one made on validation, and promotion takes the stand-in.

    Args:
        study: The searched study, its finals trained and combined.
        plan: Its plan (``retrain_seconds`` kept for this).
        chosen: The trial promotion would pick
            (:func:`search.promotion.promote.select_candidate`).
        run: Runs one refit on the training and validation images with a time limit in
            seconds.
        now: The clock (Unix time).

    Returns:
        Member trial number -> the number of the trial that stands in for it.
    """
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    members = sorted(
        chosen.user_attrs.get(ENSEMBLE_ATTR) or [chosen.number],
        key=lambda n: (-by_number[n].value, n),
    )
    images = plan.train_images + plan.val_images
    retrained: dict[int, int] = {}
    for number in members:
        member = by_number[number]
        # best_epoch counts from 0: the epochs up to and including the best one.
        epochs = int(member.user_attrs.get(BEST_EPOCH_ATTR, max(plan.final_epochs, 1) - 1)) + 1
        # A final's own epochs were measured on all the training images: no pace on top.
        per_epoch = epoch_seconds_on_all(study, plan, member, images=images)
        left = plan.retrain_ends_at - now()
        fits = int((left - TRIAL_OVERHEAD_SECONDS) // max(per_epoch, 1e-9))
        if fits < epochs:
            if fits < math.ceil(epochs * MIN_RETRAIN_SHARE):
                logger.warning(
                    "no retraining of trial %d on all images: %d epochs need ~%.0f s, %.0f s "
                    "are left", number, epochs, epochs * per_epoch, max(left, 0.0),
                )  # fmt: skip
                break
            # Its schedule anneals over the epochs it gets: most of them is still a model
            # trained on more images, where none would leave the time unused.
            epochs = fits
        logger.info(
            "retraining trial %d's configuration on %d images for %d epochs",
            number, images, epochs,
        )  # fmt: skip
        run(
            Refit(of=number, epochs=epochs, params=dict(member.params),
                  attrs={STANDS_IN_ATTR: number}, value=member.value),
            left,
        )  # fmt: skip
        done = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get(STANDS_IN_ATTR) == number
        ]
        if done:
            retrained[number] = done[-1].number
    return retrained


def finals_pace(study: optuna.Study, plan: Plan) -> float:
    """How the finals trained so far kept to their estimates: the median of each final's
    measured seconds per epoch over :func:`epoch_seconds_on_all`'s estimate for its
    configuration (1.0 before the first). The next final's and the retraining's epochs are
    planned at this pace, so that a host slower on long epochs than on the rungs' short ones
    still ends each schedule annealed."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    ratios = []
    for final in by_number.values():
        attrs = final.user_attrs
        source = by_number.get(attrs.get(REFIT_ATTR, -1))
        if final.state != TrialState.COMPLETE or not attrs.get(FINAL_ATTR) or source is None:
            continue
        if (measured := seconds_per_epoch(attrs)) is not None:
            ratios.append(measured / epoch_seconds_on_all(study, plan, source))
    return float(np.median(ratios)) if ratios else 1.0


def epoch_seconds_on_all(
    study: optuna.Study, plan: Plan, trial: FrozenTrial, *, images: int | None = None
) -> float:
    """Seconds an epoch of ``trial``'s configuration on ``images`` training images (default:
    all the plan's training images) will take.

    Fitted on the configuration's own trials (``trial`` and the lower rungs it was promoted
    from): seconds per epoch against training images, a line whose intercept is what an
    epoch costs at any size (validation, callbacks, logging). With one size only, the
    plan's measured training rate gives the slope; with none, the plan's estimate stands.
    """
    images = plan.train_images if images is None else images
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    points = []
    current: FrozenTrial | None = trial
    while current is not None:
        attrs = current.user_attrs
        if (seconds := seconds_per_epoch(attrs)) is not None:
            points.append((attrs[TRAIN_IMAGES_ATTR], seconds))
        current = by_number.get(attrs.get(PROMOTED_FROM_ATTR, -1))
    if not points:
        return plan.epoch_seconds(images)
    sizes = np.array([n for n, _ in points], dtype=float)
    seconds = np.array([s for _, s in points])
    if len(set(sizes)) >= 2:
        slope, intercept = np.polyfit(sizes, seconds, 1)
        if slope > 0:
            return max(float(intercept), 0.0) + float(slope) * images
    largest = int(sizes.argmax())
    slope = 1.0 / plan.train_images_per_s
    fixed = max(0.0, float(seconds[largest]) - sizes[largest] * slope)
    return fixed + images * slope


def record_outcome(
    *, tracker: Tracker, parent_run_id: str, plan: Plan, now: Callable[[], float] = time.time
) -> dict[str, float]:
    """What the command took against the plan's estimate, on the parent run."""
    actual = now() - plan.started_at
    figures = {
        "plan_estimated_seconds": plan.estimated_seconds,
        "plan_actual_seconds": actual,
        "plan_error": (actual - plan.estimated_seconds) / plan.estimated_seconds,
        "plan_over_budget_seconds": max(0.0, actual - plan.budget_seconds),
    }
    tracker.log_metrics(parent_run_id, figures)
    return figures


def final_epochs(
    plan: Plan,
    *,
    epoch_seconds: float,
    finals_left: int,
    now: float,
    retrain_epoch_seconds: float = 0.0,
) -> int:
    """Epochs the next final training can afford, from an epoch time measured in the search.

    The time left is shared evenly by the ``finals_left`` trainings. A plan that keeps time
    to train the chosen model again on all images (``retrain_seconds``) shares the time up to
    that retraining's end, an epoch of every final costing one more epoch of the retraining
    (``retrain_epoch_seconds``): so that time the search left over goes to both, and the
    retraining of a final that got longer still fits. The result is at least 1 and at most
    ``MAX_FINAL_EPOCHS``.
    """
    k = max(finals_left, 1)
    retrain = plan.retrain_seconds > 0
    end = plan.retrain_ends_at if retrain else plan.finals_end_at
    overheads = (k + retrain) * TRIAL_OVERHEAD_SECONDS
    per_epoch = k * epoch_seconds + (retrain_epoch_seconds if retrain else 0.0)
    epochs = int((max(0.0, end - now) - overheads) // max(per_epoch, 1e-9))
    return max(1, min(MAX_FINAL_EPOCHS, epochs))


def retrain_reserve(plan: Plan, *, epochs: int, retrain_epoch_seconds: float) -> float:
    """Seconds the finals leave for retraining a final of ``epochs`` epochs on all images
    (0 when the plan keeps no retraining)."""
    if not plan.retrain_seconds:
        return 0.0
    return epochs * retrain_epoch_seconds + TRIAL_OVERHEAD_SECONDS


def plan_summary(plan: Plan) -> dict[str, Any]:
    """The plan's headline numbers, as MLflow params of the parent run."""
    return {
        "plan_rungs": " / ".join(f"{r.train_images}x{r.epochs}:{r.configs}" for r in plan.rungs),
        "plan_top_k": plan.top_k,
        "plan_final_epochs": plan.final_epochs,
        "plan_estimated_seconds": round(plan.estimated_seconds),
    }
