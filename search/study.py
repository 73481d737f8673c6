"""Running a study: the worker's loop over the pool, its budget, and the study's MLflow parent
run."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from runners.data import Split
from runners.errors import FmsearchError, TrialFailed
from search.choices import pinned
from search.finetune import study_space
from search.kinds import FitPlan, runner_for
from search.ladder import Ladder
from search.locks import storage_lock
from search.names import FAIL_REASON_ATTR
from search.objective import EpochCallback, Objective
from search.outages import Reaper, await_storage, end_orphaned_runs, reap_stale_trials
from search.outcome import Refit, StudyOutcome, summarize
from search.storage import PoolEmpty, backend_of, is_outage
from search.tracking import Tracker

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


@dataclass(frozen=True)
class Session:
    """A study being run in this process, as the lifecycle hands it to an engine.

    Attributes:
        study: The study.
        objective: Runs one trial (``study.optimize(session.objective, ...)``).
        callbacks: Optuna callbacks every trial must go through: the parent run's progress,
            the failure guard, the caller's.
        guard: Trips after too many failures in a row; the engine then starts nothing more.
        deadline: A ``time.monotonic()`` after which no trial starts (None: none).
        tracker: The MLflow store.
    """

    study: optuna.Study
    objective: Objective
    callbacks: list[StudyCallback]
    guard: FailureGuard
    deadline: float | None
    tracker: Tracker

    def remaining(self) -> float | None:
        """Seconds to the deadline (None: no deadline)."""
        return None if self.deadline is None else self.deadline - time.monotonic()


class Engine:
    """What decides which trials a study runs (Optuna's pool, Keras Tuner): plugged into
    :func:`run_engine`, which owns the rest of a study's lifecycle in this process."""

    def fit_plan(self, trial: optuna.Trial) -> FitPlan | None:
        """How ``trial`` trains when the engine decides its epochs (None: the objective's)."""
        return None

    def run(self, session: Session) -> None:
        """Run trials through ``session.objective`` until the engine is done."""
        raise NotImplementedError


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


class PoolEngine(Engine):
    """Optuna's engine: trials come from the study's pool of WAITING trials, which any
    number of workers (in this process, others, other hosts) share; a worker dead mid-trial
    has its trial failed by heartbeat and queued again.

    Args:
        refit: Run this refit instead of the pool's trials (see :func:`run_worker`).
        ladder: A planned search's ladder, which keeps the pool fed with rungs.
        poll_seconds: How often a worker with nothing to run checks for retried trials.
    """

    def __init__(
        self, *, refit: Refit | None = None, ladder: Ladder | None = None, poll_seconds: float = 2.0
    ) -> None:
        self._refit = refit
        self._ladder = ladder
        self._poll_seconds = poll_seconds

    def run(self, session: Session) -> None:
        study, refit = session.study, self._refit
        callbacks = list(session.callbacks)
        if self._ladder is not None and refit is None:
            callbacks.append(self._ladder)
        base_sampler = study.sampler
        if refit is not None:
            # The trial the pool hands out next gets the refit's params; the pool's order
            # (oldest first, Optuna's) stays as it is.
            study.sampler = pinned(base_sampler, refit.params)
        try:
            with Reaper(study, session.tracker):
                while not session.guard.tripped:
                    remaining = session.remaining()
                    if remaining is not None and remaining <= 0:
                        break
                    try:
                        if self._run_pool(session, callbacks, remaining):
                            break
                    except Exception as exc:
                        if not is_outage(exc):
                            raise
                        await_storage(study, exc)
        finally:
            study.sampler = base_sampler

    def _run_pool(self, session: Session, callbacks: list, remaining: float | None) -> bool:
        """Run trials until the pool is empty; True when this worker is done."""
        study, objective = session.study, session.objective
        if self._refit is not None:
            if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                study.enqueue_trial({})
            optimize(study, objective, n_trials=1, catch=(TrialFailed,), callbacks=callbacks)
            return objective.refit_started
        if self._ladder is not None:
            self._ladder.top_up(study)
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
        time.sleep(self._poll_seconds)
        reap_stale_trials(study)
        return False


def run_worker(
    *,
    study: optuna.Study,
    arch: str,
    split: Split,
    tracker: Tracker,
    max_epochs: int,
    poll_seconds: float = 2.0,
    refit: Refit | None = None,
    ladder: Ladder | None = None,
    **lifecycle: Any,
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
        poll_seconds: How often a worker with nothing to run checks for retried trials.
        refit: Run this refit (:func:`refit_candidate`) instead of the pool's trials: the
            next trial the pool hands out (one is added if it is empty) gets the refit's
            params, and the worker stops after it. A trial the pool had enqueued with params
            of its own (``--enqueue``, a retry) runs as a search trial first.
        ladder: A planned search's ladder: it keeps the pool fed with rungs and promotions,
            and each rung's trials train on its data for its epochs.
        **lifecycle: The rest, as :func:`run_engine` takes them:

            - ``timeout``: start no trial after this many seconds;
            - ``hard_timeout``: also end the Keras trials running then, after their current
              epoch; they complete with their best epoch (``out_of_time`` user attribute);
            - ``seed``: trial ``n`` is seeded ``seed + n``, for repeatable initial weights;
            - ``patience``: end a trial after this many epochs without improvement;
            - ``objectives``: ``("accuracy",)``, or accuracy and ``"params"`` or
              ``"latency"`` (ms per image): a multi-objective study, which Optuna cannot
              prune, so its trials report nothing to it and train to the end;
            - ``narrowed``: narrower distributions for some hyperparameters (``--space-file``);
            - ``precision``: a name in ``runners.precision.PRECISIONS``;
            - ``deterministic``: TensorFlow's op determinism for the seeded trials;
            - ``run_params``: settings logged as params of the parent run when it is created;
            - ``callbacks``: extra Optuna callbacks, called after each trial;
            - ``on_epoch``: called with the trial number, epoch and metrics after each epoch;
            - ``refit_split``: all the training images and the same validation images, for
              refit trials (None: ``split`` is all of them already).

    Raises:
        FmsearchError: ``MAX_CONSECUTIVE_FAILURES`` trials failed in a row.
    """
    engine = PoolEngine(refit=refit, ladder=ladder, poll_seconds=poll_seconds)
    return run_engine(engine, study=study, arch=arch, split=split, tracker=tracker,
                      max_epochs=max_epochs, refit=refit, ladder=ladder, **lifecycle)  # fmt: skip


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
