"""The ladder of a planned search: asynchronous successive halving on growing data subsets.

Every rung is an ordinary trial of the study (tracked in MLflow as ever), told apart by its
``rung`` user attribute. The pool stays small: after each trial, and whenever a worker finds
the pool empty, :meth:`Ladder.top_up` adds one trial, a promotion when a configuration has
earned one (ASHA: it is in the best ``1/eta`` of its rung's finished trials, and the rung
has sent up fewer than ``1/eta`` of them, :func:`next_promotion`) or else a new
configuration on the lowest rung, until the plan's first-rung count or its search time is
spent. The first-rung count grows (:func:`first_rung_cap`) when the first rung's trials show
the host faster than the plan's four-second probe said. Workers on any host do the same under
the storage's lock, so the ladder needs no coordinator.

Pruning inside a rung compares only trials of that rung (:class:`RungMedianPruner`): a trial
on 2,000 images must not be judged against one on 50,000.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from runners.data import Split
from search.budget.plan import MAX_FIRST_RUNG_CONFIGS, Plan
from search.names import (
    EPOCH_SECONDS_ATTR,
    EPOCHS_ATTR,
    PROMOTED_FROM_ATTR,
    RUNG_ATTR,
    TRAIN_SECONDS_ATTR,
)
from search.storage.locks import storage_lock
from search.storage.rdb import backend_of
from spaces.common import PLATEAU_PARAMS

logger = logging.getLogger(__name__)

# What a final training changes in its configuration: a long run wants warm-up and annealing.
FINAL_SCHEDULE = "one_cycle"
# First-rung trials that must have ended before their pace may widen the ladder.
REPLAN_AFTER = 3


def rung_of(trial: FrozenTrial) -> int:
    """The trial's rung; trials of an unplanned search are all on rung 0."""
    return int(trial.user_attrs.get(RUNG_ATTR, 0))


def _search_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials of the ladder: neither refits (final trainings) nor ensembles."""
    from search.names import ENSEMBLE_ATTR, REFIT_ATTR

    return [
        t for t in trials if REFIT_ATTR not in t.user_attrs and ENSEMBLE_ATTR not in t.user_attrs
    ]


def next_promotion(
    trials: Sequence[FrozenTrial], *, n_rungs: int, eta: int
) -> tuple[FrozenTrial, int] | None:
    """The configuration to move up next, and its new rung, or None (ASHA's rule, with a
    quota).

    A completed trial of rung ``r`` is promotable while it ranks in the best
    ``floor(n / eta)`` of the ``n`` configurations that finished rung ``r`` (completed or
    pruned; a pruned one ranks below every completed one), no trial of rung ``r + 1`` was
    started from it, and fewer than ``floor(n / eta)`` were started from rung ``r`` in all.
    Higher rungs go first: they are nearest the final.

    Why the quota: ASHA alone promotes whatever enters a rung's best third, so a better
    configuration finishing later moves up beside the one it displaced, and the top rungs
    take the time of many first-rung configurations. With the quota, a ladder that runs its
    plan's first-rung count sends up the plan's count from each rung.

    Why pruned trials count: they are configurations the rung tried and ranked (below the
    median where they stopped). Counted out, the quota would shrink with pruning, and a
    heavily pruned first rung would send up one or two configurations and end the ladder
    early.
    """
    trials = _search_trials(trials)
    promoted = [t for t in trials if PROMOTED_FROM_ATTR in t.user_attrs]
    started_from = {t.user_attrs[PROMOTED_FROM_ATTR] for t in promoted}
    for rung in range(n_rungs - 2, -1, -1):
        done = [t for t in trials if t.state == TrialState.COMPLETE and rung_of(t) == rung]
        pruned = sum(t.state == TrialState.PRUNED and rung_of(t) == rung for t in trials)
        quota = (len(done) + pruned) // eta
        # Configurations, not trials: a failed promotion's retry is the same one.
        sent_up = {t.user_attrs[PROMOTED_FROM_ATTR] for t in promoted if rung_of(t) == rung + 1}
        if len(sent_up) >= quota:
            continue
        done.sort(key=lambda t: (-t.value, t.number))
        for trial in done[:quota]:
            if trial.number not in started_from:
                return trial, rung + 1
    return None


def first_rung_started(trials: Sequence[FrozenTrial]) -> int:
    """Configurations started on the lowest rung (waiting ones included)."""
    return sum(PROMOTED_FROM_ATTR not in t.user_attrs for t in _search_trials(trials))


def seconds_per_epoch(attrs: dict[str, Any]) -> float | None:
    """A trained trial's seconds per epoch, from its user attributes: its steady epoch
    (``EPOCH_SECONDS_ATTR``) where recorded, else its training time over its epochs (None:
    not trained). The average also counts the first epoch's tracing of the steps, once per
    training, not once per epoch: from one rung of 3 short epochs (667 images), a planned
    search's final got 33 epochs where the plan held 43, and 44 with the steady epoch."""
    if attrs.get(EPOCH_SECONDS_ATTR):
        return float(attrs[EPOCH_SECONDS_ATTR])
    if attrs.get(TRAIN_SECONDS_ATTR) and attrs.get(EPOCHS_ATTR):
        return attrs[TRAIN_SECONDS_ATTR] / attrs[EPOCHS_ATTR]
    return None


def first_rung_cap(plan: Plan, trials: Sequence[FrozenTrial]) -> int:
    """First-rung configurations the plan's search time holds at the pace its first rung
    kept: the plan's count, or more once ``REPLAN_AFTER`` first-rung trials have ended.

    A configuration costs one first-rung trial (the mean of those that ended, pruned ones
    included, so pruning's savings count), plus 1/eta**r of a trial on each rung r above,
    costed from the plan's epochs scaled by the first rung's measured epochs, plus the first
    rung's measured per-trial cost. The probe alone can read a host a third slow
    (benchmarks/results/probe_accuracy.md), and every rung's epochs then run at the same
    factor, so the first rung's pace predicts the rest. The count only grows: a slower host's
    ladder is already cut by the search's end.
    """
    planned = plan.rungs[0].configs
    if plan.thin_ladder:  # the published configuration alone, by design
        return planned
    ended = (TrialState.COMPLETE, TrialState.PRUNED)
    first = [
        t for t in _search_trials(trials)
        if rung_of(t) == 0 and t.state in ended and t.duration is not None
    ]  # fmt: skip
    timed = [
        (t, seconds) for t in first
        if t.state == TrialState.COMPLETE and t.user_attrs.get(EPOCHS_ATTR)
        and (seconds := seconds_per_epoch(t.user_attrs)) is not None
    ]  # fmt: skip
    if len(first) < REPLAN_AFTER or not timed:
        return planned
    pace = statistics.median(seconds for _, seconds in timed) / (
        plan.epoch_seconds(plan.rungs[0].train_images)
    )
    overhead = statistics.median(
        t.duration.total_seconds() - t.user_attrs[EPOCHS_ATTR] * seconds for t, seconds in timed
    )
    per_config = statistics.mean(t.duration.total_seconds() for t in first) + sum(
        (rung.epochs * plan.epoch_seconds(rung.train_images) * pace + max(overhead, 0.0))
        / plan.reduction_factor**r
        for r, rung in enumerate(plan.rungs) if r
    )  # fmt: skip
    fits = int(plan.search_seconds // per_config)
    return max(planned, min(MAX_FIRST_RUNG_CONFIGS, fits))


def final_candidates(
    study: optuna.Study,
    *,
    k: int,
    baseline_first: bool = False,
    too_slow: Callable[[FrozenTrial], bool] | None = None,
) -> list[FrozenTrial]:
    """The ``k`` configurations to train at full fidelity: the highest rung first, then the
    best value, one trial per distinct configuration, skipping those trained already. With
    ``baseline_first`` the study's baseline (``BASELINE_ATTR``: its published configuration
    or recipe, whatever its rung or state) comes first. Trials of the highest rung that are
    ``too_slow`` (for a long final in the time left) come after the others of that rung,
    unless all are."""
    from search.names import BASELINE_ATTR, REFIT_ATTR

    trials = study.get_trials(deepcopy=False)
    done = {
        t.user_attrs[REFIT_ATTR]
        for t in trials
        if REFIT_ATTR in t.user_attrs and t.state != TrialState.FAIL
    }
    ranked = sorted(
        (t for t in _search_trials(trials) if t.state == TrialState.COMPLETE),
        key=lambda t: (-rung_of(t), -t.value, t.number),
    )
    if too_slow is not None and ranked:
        top = [t for t in ranked if rung_of(t) == rung_of(ranked[0])]
        # Once each (each asks the study for the trial's epoch times); one trained already
        # was chosen: it stays chosen, however little time is left now.
        slow = {t.number: t.number not in done and too_slow(t) for t in top}
        if not all(slow.values()):
            ranked = sorted(top, key=lambda t: slow[t.number]) + ranked[len(top) :]  # stable
    if baseline_first:
        # Pruned or complete: its configuration was suggested whole either way.
        settled = (TrialState.COMPLETE, TrialState.PRUNED)
        baseline = [t for t in _search_trials(trials)
                    if BASELINE_ATTR in t.user_attrs and t.state in settled]  # fmt: skip
        ranked = baseline[:1] + ranked
    chosen: list[FrozenTrial] = []
    seen: list[dict[str, Any]] = []
    for trial in ranked:
        if trial.params in seen:
            continue
        seen.append(trial.params)
        chosen.append(trial)
        if len(chosen) == k:
            break
    return [t for t in chosen if t.number not in done]


def final_params(params: dict[str, Any]) -> dict[str, Any]:
    """A configuration as its final training runs it: the same, with a one-cycle schedule
    (without the plateau schedule's settings, which only that schedule has)."""
    kept = {k: v for k, v in params.items() if k not in PLATEAU_PARAMS}
    return {**kept, "lr_schedule": FINAL_SCHEDULE}


@dataclass(frozen=True)
class RungData:
    """What the trials of one rung train on."""

    split: Split
    epochs: int


class Ladder:
    """Feeds a study's pool with the plan's rungs and tells the objective each rung's data.

    Use it as an Optuna callback (``study.optimize(..., callbacks=[ladder])``) and call
    :meth:`top_up` when a worker finds the pool empty.
    """

    def __init__(self, *, plan: Plan, rungs: Sequence[RungData]) -> None:
        if len(rungs) != len(plan.rungs):
            raise ValueError(f"expected {len(plan.rungs)} rungs' data, got {len(rungs)}")
        self.plan = plan
        self._rungs = tuple(rungs)

    def data(self, rung: int) -> RungData:
        """The split and epochs of ``rung``."""
        return self._rungs[rung]

    def searching(self) -> bool:
        """Whether the plan's search time is still running."""
        return time.time() < self.plan.search_ends_at

    def top_up(self, study: optuna.Study) -> bool:
        """Add one trial to an empty pool, under the storage's lock; True if one was added."""
        if not self.searching():
            return False
        url = getattr(backend_of(study), "url", None)
        if url is None:
            return self._add(study)
        with storage_lock(url, f"ladder:{study.study_name}"):
            return self._add(study)

    def _add(self, study: optuna.Study) -> bool:
        trials = study.get_trials(deepcopy=False)
        if any(t.state == TrialState.WAITING for t in trials):
            return False
        promotion = next_promotion(
            trials, n_rungs=len(self.plan.rungs), eta=self.plan.reduction_factor
        )
        if promotion is not None:
            trial, rung = promotion
            study.enqueue_trial(
                trial.params, user_attrs={RUNG_ATTR: rung, PROMOTED_FROM_ATTR: trial.number}
            )
            logger.info("trial %d moves up to rung %d", trial.number, rung)
            return True
        started, planned = first_rung_started(trials), self.plan.rungs[0].configs
        if started >= planned:  # only then may the first rung's pace add more
            cap = first_rung_cap(self.plan, trials)
            if started >= cap:
                return False
            if started == planned:
                logger.info(
                    "the first rung's trials run faster than the probe said: %d first-rung "
                    "configurations fit the search's time, where the plan had %d",
                    cap, planned,
                )  # fmt: skip
        study.enqueue_trial({}, user_attrs={RUNG_ATTR: 0})
        return True

    def retire_waiting(self, study: optuna.Study) -> int:
        """Fail the ladder's trials still waiting when its time is up; returns how many.

        One added just before the deadline may never be popped; left waiting, it would be
        the next trial a final training's worker takes, and run as a ladder trial in the
        final training's time.
        """
        from search.names import FAIL_REASON_ATTR

        retired = 0
        for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            if RUNG_ATTR in trial.user_attrs:
                storage = study._storage  # what Optuna's own retry callback writes through
                storage.set_trial_user_attr(
                    trial._trial_id, FAIL_REASON_ATTR, "the search's time ran out before it started"
                )
                storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                retired += 1
        return retired

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        try:
            self.top_up(study)
        except Exception as exc:  # an outage: the worker's own loop deals with the storage
            logger.warning("the ladder could not add a trial: %s", str(exc).splitlines()[0])


class RungMedianPruner(optuna.pruners.BasePruner):
    """Optuna's median rule, applied among the trials of one rung only.

    A trial is pruned at an epoch when its best value so far is below the median of what the
    completed trials of its rung reached at that epoch, once ``n_startup_trials`` of them
    exist and after ``n_warmup_steps`` epochs. Trials of different rungs train on different
    amounts of data: comparing them would prune every low-rung trial.
    """

    def __init__(self, *, n_startup_trials: int = 4, n_warmup_steps: int = 1) -> None:
        self._n_startup_trials = n_startup_trials
        self._n_warmup_steps = n_warmup_steps

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step < self._n_warmup_steps:
            return False
        rung = rung_of(trial)
        peers = [
            t.intermediate_values[step]
            for t in _search_trials(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
            if rung_of(t) == rung and step in t.intermediate_values
        ]
        if len(peers) < self._n_startup_trials:
            return False
        best = max(v for s, v in trial.intermediate_values.items() if s <= step)
        return best < statistics.median(peers)
