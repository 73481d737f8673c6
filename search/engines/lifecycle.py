"""One study's life in a process, whichever engine picks its trials: its MLflow parent run
(made once however many workers start), the objective, the failure guard, and closing."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial

from runners.data import Split
from runners.errors import FmsearchError
from search.budget.ladder import Ladder
from search.engines._base import Engine, FailureGuard, Session, StudyCallback
from search.engines.outages import end_orphaned_runs
from search.kinds import runner_for
from search.outcome import Refit, StudyOutcome, summarize
from search.storage.locks import storage_lock
from search.storage.rdb import backend_of
from search.tracking import Tracker
from search.trials.objective import EpochCallback, Objective, TrialRules
from search.trials.spaces import study_space

logger = logging.getLogger(__name__)
# Stop the study when this many trials fail in a row: the cause is then the set-up, not a
# hyperparameter, and more trials would fail the same way.
MAX_CONSECUTIVE_FAILURES = 5


def run_engine(
    engine: Engine,
    *,
    study: optuna.Study,
    arch: str,
    split: Split,
    tracker: Tracker,
    max_epochs: int,
    timeout: float | None = None,
    hard_timeout: bool = False,
    seed: int | None = None,
    patience: int | None = None,
    objectives: tuple[str, ...] = ("accuracy",),
    narrowed: Mapping[str, BaseDistribution] | None = None,
    precision: str = "float32",
    deterministic: bool = False,
    run_params: dict[str, Any] | None = None,
    callbacks: Sequence[StudyCallback] = (),
    on_epoch: EpochCallback | None = None,
    refit_split: Split | None = None,
    refit: Refit | None = None,
    ladder: Ladder | None = None,
) -> StudyOutcome:
    """One study's life in this process, whichever ``engine`` picks its trials: open (or
    join) the study's parent run, build the objective, let the engine run trials, guard
    against a failing set-up, record the counts and close what this process opened.

    Takes the arguments of :func:`run_worker` but ``poll_seconds``.

    Raises:
        FmsearchError: ``MAX_CONSECUTIVE_FAILURES`` trials failed in a row.
    """
    params = {"arch": arch, **(run_params or {})}
    experiment_id, parent_run_id = open_study_run(study, arch=arch, tracker=tracker, params=params)
    # Resolving "auto" starts TensorFlow's device discovery (seconds on a loaded machine): done
    # before the clock starts, so that set-up never eats a short --timeout, and only for
    # Keras trials (scikit-learn ones never import TensorFlow).
    space = study_space(study, arch=arch, tracker=tracker)
    policy = runner_for(space).resolve_policy(precision)
    deadline = None if timeout is None else time.monotonic() + timeout
    objective = Objective(
        space=space,
        arch=arch,
        split=split,
        tracker=tracker,
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        rules=TrialRules(
            max_epochs=max_epochs,
            seed=seed,
            patience=patience,
            objectives=objectives,
            deterministic=deterministic,
            dtype_policy=policy,
        ),
        narrowed=narrowed or {},
        deadline=deadline if hard_timeout else None,
        on_epoch=on_epoch,
        refit_split=refit_split,
        refit=refit,
        ladder=ladder,
        fit_plan=engine.fit_plan,
    )
    guard = FailureGuard(MAX_CONSECUTIVE_FAILURES)
    session = Session(
        study=study,
        objective=objective,
        callbacks=[ParentRunProgress(tracker, parent_run_id), guard, *callbacks],
        guard=guard,
        deadline=deadline,
        tracker=tracker,
    )
    return _run_and_close(engine, session, parent_run_id=parent_run_id, objectives=objectives)


def _run_and_close(
    engine: Engine, session: Session, *, parent_run_id: str, objectives: tuple[str, ...]
) -> StudyOutcome:
    """Let ``engine`` run ``session``'s trials, then record on the parent run how it ended,
    even when interrupted."""
    status = "FAILED"
    try:
        engine.run(session)
        status = "FAILED" if session.guard.tripped else "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        outcome = summarize(session.study, parent_run_id=parent_run_id)
        try:
            close_study_run(
                session.tracker, session.study, outcome, status=status, objectives=objectives
            )
        except Exception as exc:  # the trials are safe in Optuna; say what MLflow missed
            logger.warning("the study's parent run was not updated: %s", exc)
    if session.guard.tripped:
        raise FmsearchError(
            f"stopped after {MAX_CONSECUTIVE_FAILURES} trials in a row failed; "
            f"the last one: {session.guard.last_reason}"
        )
    return outcome


def open_study_run(
    study: optuna.Study, *, arch: str, tracker: Tracker, params: dict[str, Any]
) -> tuple[str, str]:
    """The study's experiment and parent run, made once however many workers start at once."""
    url = getattr(backend_of(study), "url", None)
    lock = storage_lock(url, f"study-run:{study.study_name}") if url else contextlib.nullcontext()
    with lock:
        experiment_id = tracker.experiment_id(study.study_name)
        parent_run_id = tracker.start_study_run(
            experiment_id=experiment_id, study_name=study.study_name, arch=arch, params=params
        )
    return experiment_id, parent_run_id


def close_study_run(
    tracker: Tracker,
    study: optuna.Study,
    outcome: StudyOutcome,
    *,
    status: str,
    objectives: tuple[str, ...],
) -> None:
    """Record the counts and end the runs a tracking outage left open; the last worker out
    ends the parent run."""
    end_orphaned_runs(tracker, study)
    tracker.set_tags(
        outcome.parent_run_id,
        {
            "n_complete": outcome.n_complete,
            "n_pruned": outcome.n_pruned,
            "n_failed": outcome.n_failed,
            "n_retried": outcome.n_retried,
            "best_trial": outcome.best_trial,
        },
    )
    if len(objectives) > 1 and outcome.n_complete:
        tracker.log_pareto_front(outcome.parent_run_id, study, objectives=objectives)
    if outcome.n_running == 0 or status == "FAILED":
        tracker.end_run(outcome.parent_run_id, status=status)


class ParentRunProgress:
    """After each trial, plot the best value so far and the trial counts on the parent run."""

    def __init__(self, tracker: Tracker, parent_run_id: str) -> None:
        self._tracker = tracker
        self._parent_run_id = parent_run_id

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        outcome = summarize(study, parent_run_id=self._parent_run_id)
        metrics = {
            "n_complete": outcome.n_complete,
            "n_pruned": outcome.n_pruned,
            "n_failed": outcome.n_failed,
        }
        if outcome.best_value is not None:
            metrics["best_val_accuracy"] = outcome.best_value
        try:
            self._tracker.log_metrics(self._parent_run_id, metrics, step=trial.number)
        except Exception as exc:  # a tracking outage must not stop the study
            logger.warning("study progress not logged for trial %d: %s", trial.number, exc)
