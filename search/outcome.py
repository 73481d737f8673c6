"""Where a study stands: counts, its most accurate trial, and the refit it would take."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.names import (
    ENSEMBLE_ATTR,
    REFIT_ATTR,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyOutcome:
    """Where a study stands after a run.

    Attributes:
        study_name: The study.
        n_complete: Completed trials, over the study's whole life.
        n_pruned: Pruned trials.
        n_failed: Failed trials.
        n_waiting: Trials still in the pool.
        n_running: Trials running (in any worker).
        n_retried: Trials whose worker died, re-run as new trials (counted once, as those).
        best_value: Best validation accuracy, None if no trial completed.
        best_trial: Number of the best trial, None if no trial completed.
        parent_run_id: The study's MLflow parent run.
    """

    study_name: str
    n_complete: int
    n_pruned: int
    n_failed: int
    n_waiting: int
    n_running: int
    n_retried: int
    best_value: float | None
    best_trial: int | None
    parent_run_id: str

    def describe(self) -> str:
        """The line the CLI prints for the study's outcome."""
        return (
            f"study {self.study_name}: {self.n_complete} complete, {self.n_pruned} pruned, "
            f"{self.n_failed} failed"
            + (f", {self.n_retried} re-run after their worker died" if self.n_retried else "")
            + (
                f"; best trial {self.best_trial}: val_accuracy {self.best_value:.4f}"
                if self.best_trial is not None
                else ""
            )
        )


def most_accurate(study: optuna.Study) -> FrozenTrial | None:
    """The completed trial with the best validation accuracy (the first objective), or None."""
    return best_of(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def best_of(trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    """fmsearch's one rule for the best of completed ``trials``: the highest validation
    accuracy (the first objective), the earliest of equals; None if there are none."""
    return max(trials, key=lambda t: (t.values[0], -t.number), default=None)


def retried_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of the stale trials that were re-run as new trials (not counted as finished)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", ())}


def summarize(study: optuna.Study, *, parent_run_id: str) -> StudyOutcome:
    """Counts and best result of ``study`` (by accuracy, in a multi-objective study too).

    A trial whose worker died and that was re-run counts once, as its re-run.
    """
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    count = {s: sum(t.state == s and t.number not in retried for t in trials) for s in TrialState}
    best = most_accurate(study)
    return StudyOutcome(
        study_name=study.study_name,
        n_complete=count[TrialState.COMPLETE],
        n_pruned=count[TrialState.PRUNED],
        n_failed=count[TrialState.FAIL],
        n_waiting=count[TrialState.WAITING],
        n_running=count[TrialState.RUNNING],
        n_retried=len(retried),
        best_value=best.values[0] if best else None,
        best_trial=best.number if best else None,
        parent_run_id=parent_run_id,
    )


@dataclass(frozen=True)
class Refit:
    """A refit to run: trial ``of``'s ``params`` trained again for up to ``epochs`` epochs."""

    of: int
    epochs: int
    params: dict[str, Any]
    # More user attributes for the refit trial (a planned search's final training says so).
    attrs: Mapping[str, Any] = field(default_factory=dict)
    # Reported instead of the refit's own validation accuracy (a retraining that sees the
    # validation images reports the validated value of the trial it stands in for).
    value: float | None = None


def refit_candidate(study: optuna.Study, *, epochs: int) -> Refit | None:
    """A refit of the study's most accurate trial, or None when there is nothing to refit: no
    completed trial, the best is a refit or an ensemble, or it has been refit (or is being)
    already."""
    best = most_accurate(study)
    if best is None or REFIT_ATTR in best.user_attrs or ENSEMBLE_ATTR in best.user_attrs:
        return None
    alive = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    for trial in study.get_trials(deepcopy=False, states=alive):
        if trial.user_attrs.get(REFIT_ATTR) == best.number:
            return None
    return Refit(of=best.number, epochs=epochs, params=dict(best.params))
