"""Running a study: the worker's loop over the pool, its budget, and the study's MLflow parent
run."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from runners.data import Split
from runners.errors import FmsearchError, TrialFailed
from runners.precision import resolve_policy
from search.choices import pinned
from search.ladder import Ladder
from search.locks import storage_lock
from search.names import FAIL_REASON_ATTR
from search.objective import EpochCallback, Objective
from search.outages import Reaper, await_storage, end_orphaned_runs, reap_stale_trials
from search.outcome import Refit, StudyOutcome, summarize
from search.storage import PoolEmpty, backend_of, is_outage
from search.tracking import Tracker
from spaces import resolve

logger = logging.getLogger(__name__)
# Stop the study when this many trials fail in a row: the cause is then the set-up, not a
# hyperparameter, and more trials would fail the same way.
MAX_CONSECUTIVE_FAILURES = 5

StudyCallback = Callable[[optuna.Study, FrozenTrial], None]


def add_budget(study: optuna.Study, n_trials: int) -> int:
    """Fill the study's pool to ``n_trials`` WAITING trials; returns how many were added.

    Trials left waiting by an interrupted run count toward the new budget.
    """
    waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    added = max(0, n_trials - waiting)
    for _ in range(added):
        study.enqueue_trial({})
    return added


def run_study(*, study: optuna.Study, n_trials: int, **worker_args: Any) -> StudyOutcome:
    """Add ``n_trials`` trials to ``study`` and run them in this process.

    Takes the arguments of :func:`run_worker`.
    """
    add_budget(study, n_trials)
    return run_worker(study=study, **worker_args)


def optimize(study: optuna.Study, objective: Callable, **kwargs: Any) -> bool:
    """``study.optimize``, surviving a trial that another process failed under it; False then.

    A worker paused past its trial's grace (SIGSTOP, a suspended VM, a stalled disk) comes
    back to a trial the others have reaped as stale and queued again: Optuna's ``tell``
    then raises "Cannot tell a FAIL trial", which ended the worker. Its result is dropped
    (the retry runs the configuration again) and the worker takes the next trial.
    """
    try:
        study.optimize(objective, **kwargs)
    except (ValueError, AssertionError) as exc:
        # Optuna 5 raises "Should not reach." from a finally block over the ValueError.
        told = exc
        while told is not None and not str(told).startswith("Cannot tell a FAIL trial"):
            told = told.__context__
        if told is None:
            raise
        logger.warning(
            "a trial of this worker was failed as stale while it ran (the worker paused "
            "past its heartbeat grace): its result is dropped, its retry runs it again"
        )  # fmt: skip
        return False
    return True


def run_worker(
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
    poll_seconds: float = 2.0,
    refit_split: Split | None = None,
    refit: Refit | None = None,
    ladder: Ladder | None = None,
) -> StudyOutcome:
    """Run trials from the study's pool until it is empty and no other worker's trial runs.

    Any number of workers, in this process or others, on this host or others, may run this on
    the same study at once: each trial is popped by one worker, tracked as a nested MLflow run
    under the study's one parent run.

    Args:
        study: A study from :func:`search.storage.create_or_load_study`, with a budget from
            :func:`add_budget`.
        arch: A key of ``spaces.ARCHITECTURES``.
        split: Training and validation data.
        tracker: The MLflow store to record into.
        max_epochs: Epochs a trial trains at most (the pruner's maximum resource).
        timeout: Start no trial after this many seconds.
        hard_timeout: Also end the Keras trials running then, after their current epoch;
            they complete with their best epoch (``out_of_time`` user attribute).
        seed: Seed of trial ``n`` is ``seed + n``, for repeatable initial weights.
        patience: End a trial after this many epochs without improvement (None: never).
        objectives: ``("accuracy",)``, or accuracy and ``"params"`` or ``"latency"`` (ms per
            image) for a multi-objective study; Optuna cannot prune those, so their trials
            report nothing to it and train to the end.
        narrowed: Narrower distributions for some hyperparameters (``--space-file``).
        precision: A name in ``runners.precision.PRECISIONS``; ``auto`` picks mixed
            precision where this machine computes it natively.
        deterministic: Turn on TensorFlow's op determinism for the seeded trials, so that
            they repeat exactly on the same machine (slower: random augmentation then runs
            serially).
        run_params: Settings logged as params of the study's parent run when it is created.
        callbacks: Extra Optuna callbacks, called after each trial (a progress bar).
        on_epoch: Called with the trial number, epoch and metrics after every epoch.
        poll_seconds: How often a worker with nothing to run checks for retried trials.
        refit_split: All the training images and the same validation images, for refit
            trials; None: ``split`` is all of them already.
        refit: Run this refit (:func:`refit_candidate`) instead of the pool's trials: the
            next trial the pool hands out (one is added if it is empty) gets the refit's
            params, and the worker stops after it. A trial the pool had enqueued with params
            of its own (``--enqueue``, a retry) runs as a search trial first.
        ladder: A planned search's ladder: it keeps the pool fed with rungs and promotions,
            and each rung's trials train on its data for its epochs.

    Raises:
        FmsearchError: ``MAX_CONSECUTIVE_FAILURES`` trials failed in a row.
    """
    params = {"arch": arch, **(run_params or {})}
    experiment_id, parent_run_id = open_study_run(study, arch=arch, tracker=tracker, params=params)
    # Resolving "auto" starts TensorFlow's device discovery (seconds on a loaded machine): done
    # before the clock starts, so that set-up never eats a short --timeout, and only for
    # Keras trials (scikit-learn ones never import TensorFlow).
    space = resolve(arch)
    policy = resolve_policy(precision) if space.KIND == "keras" else "float32"
    deadline = None if timeout is None else time.monotonic() + timeout
    objective = Objective(
        space=space,
        arch=arch,
        split=split,
        tracker=tracker,
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        max_epochs=max_epochs,
        seed=seed,
        deterministic=deterministic,
        patience=patience,
        objectives=objectives,
        narrowed=narrowed or {},
        dtype_policy=policy,
        deadline=deadline if hard_timeout else None,
        on_epoch=on_epoch,
        refit_split=refit_split,
        refit=refit,
        ladder=ladder,
    )
    base_sampler = study.sampler
    if refit is not None:
        # The trial the pool hands out next gets the refit's params; the pool's order (oldest
        # first, Optuna's) stays as it is.
        study.sampler = pinned(base_sampler, refit.params)
    guard = FailureGuard(MAX_CONSECUTIVE_FAILURES)
    status = "FAILED"
    callbacks = [ParentRunProgress(tracker, parent_run_id), guard, *callbacks]
    if ladder is not None and refit is None:
        callbacks.append(ladder)

    def run_pool(remaining: float | None) -> bool:
        """Run trials until the pool is empty; True when this worker is done."""
        if refit is not None:
            if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                study.enqueue_trial({})
            optimize(study, objective, n_trials=1, catch=(TrialFailed,), callbacks=callbacks)
            return objective.refit_started
        if ladder is not None:
            ladder.top_up(study)
        try:
            # True: stopped by the failure guard or the timeout; False: a trial was failed
            # under this worker, and the pool goes on.
            return optimize(
                study, objective, timeout=remaining, catch=(TrialFailed,), callbacks=callbacks
            )
        except PoolEmpty:
            pass
        if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            return True
        # Other workers' trials still run; one whose worker dies comes back as a retry.
        time.sleep(poll_seconds)
        reap_stale_trials(study)
        return False

    with Reaper(study, tracker):
        try:
            while not guard.tripped:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    if run_pool(remaining):
                        break
                except Exception as exc:
                    if not is_outage(exc):
                        raise
                    await_storage(study, exc)
            status = "FAILED" if guard.tripped else "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            study.sampler = base_sampler
            outcome = summarize(study, parent_run_id=parent_run_id)
            try:
                close_study_run(tracker, study, outcome, status=status, objectives=objectives)
            except Exception as exc:  # the trials are safe in Optuna; say what MLflow missed
                logger.warning("the study's parent run was not updated: %s", exc)
    if guard.tripped:
        raise FmsearchError(
            f"stopped after {MAX_CONSECUTIVE_FAILURES} trials in a row failed; "
            f"the last one: {guard.last_reason}"
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


class FailureGuard:
    """Trips after ``limit`` trials in a row failed (the cause is then the set-up)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._in_a_row = 0
        self.tripped = False
        self.last_reason: str | None = None

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state != TrialState.FAIL:
            self._in_a_row = 0
            return
        self._in_a_row += 1
        self.last_reason = trial.user_attrs.get(FAIL_REASON_ATTR, "unknown")
        if self._in_a_row >= self._limit:
            self.tripped = True
            study.stop()
