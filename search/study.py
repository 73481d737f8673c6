"""Running a study: the objective, per-trial tracking, and the study's MLflow parent run."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from runners.data import CLASS_NAMES, IMAGE_SHAPE, NUM_CLASSES, Split
from runners.errors import FmsearchError, TrialFailed
from runners.metrics import measure_latency
from runners.precision import dtype_policy, resolve_policy
from runners.reporting import TrialResult
from search.choices import pinned
from search.ladder import Ladder
from search.locks import storage_lock
from search.names import (
    BEST_EPOCH_ATTR,
    DTYPE_POLICY_ATTR,
    ENSEMBLE_ATTR,
    EPOCHS_ATTR,
    FAIL_REASON_ATTR,
    LATENCY_ATTR,
    LOG_SECONDS_ATTR,
    N_PARAMS_ATTR,
    OUT_OF_TIME_ATTR,
    PROBE_ATTR,
    REFIT_ATTR,
    REFIT_EPOCHS_ATTR,
    RUN_ID_ATTR,
    RUNG_ATTR,
    STANDS_IN_ATTR,
    TRAIN_IMAGES_ATTR,
    TRAIN_SECONDS_ATTR,
    UNLOGGED_ATTR,
    WORKER_ATTR,
)
from search.overrides import NarrowedTrial
from search.storage import GRACE_BEATS, PoolEmpty, backend_of, is_outage
from search.tracking import Tracker, TrialLog
from spaces import resolve
from spaces.families import Families

logger = logging.getLogger(__name__)

LATENCY_BATCH = 256
# Stop the study when this many trials fail in a row: the cause is then the set-up, not a
# hyperparameter, and more trials would fail the same way.
MAX_CONSECUTIVE_FAILURES = 5
# A worker waits this long for an unreachable storage (a database restart, a failover).
STORAGE_OUTAGE_SECONDS = 300
STORAGE_RETRY_SECONDS = 2

StudyCallback = Callable[[optuna.Study, FrozenTrial], None]
EpochCallback = Callable[[int, int, dict[str, float]], None]


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


def most_accurate(study: optuna.Study) -> FrozenTrial | None:
    """The completed trial with the best validation accuracy (the first objective), or None."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: (t.values[0], -t.number), default=None)


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
                    _await_storage(study, exc)
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


def _database_error(exc: BaseException) -> str:
    """The first line of the error at the bottom of ``exc``'s chain: the database's own,
    which Optuna's wrappers hide."""
    while (exc.__cause__ or exc.__context__) is not None:
        exc = exc.__cause__ or exc.__context__
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _await_storage(study: optuna.Study, exc: BaseException) -> None:
    """Wait for the storage to answer again, then let the worker go on.

    The trial in flight could not record its result: it stays RUNNING without heartbeats, and
    the reaper fails and re-enqueues it once its grace period passes.

    Raises:
        FmsearchError: The storage stayed out of reach for ``STORAGE_OUTAGE_SECONDS``.
    """
    logger.warning(
        "storage out of reach (%s): the trial in flight is lost and will run again; reconnecting",
        _database_error(exc),
    )
    deadline = time.monotonic() + STORAGE_OUTAGE_SECONDS
    while True:
        time.sleep(STORAGE_RETRY_SECONDS)
        try:
            # A write, not a read: on a full disk reads succeed and every write fails, and
            # a read probe sent the worker back to fail again at once, forever.
            study._storage.set_study_system_attr(study._study_id, PROBE_ATTR, time.time())
        except Exception as again:
            if not is_outage(again):
                raise
            if time.monotonic() > deadline:
                raise FmsearchError(
                    f"storage out of reach for {STORAGE_OUTAGE_SECONDS} s, "
                    f"expected it back sooner: {_database_error(again)}"
                ) from again
            continue
        logger.warning("storage reachable again: the worker goes on")
        return


def reap_stale_trials(study: optuna.Study) -> None:
    """Fail (and re-enqueue) the trials whose worker stopped sending heartbeats."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


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


def end_orphaned_runs(tracker: Tracker, study: optuna.Study) -> int:
    """End the MLflow runs that still show as running although their trial has finished:
    the trial's end (or, when a create was sent again, a first run) never reached a tracking
    store that was out of reach. Returns how many were ended."""
    finished = {
        t.number: t
        for t in study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        )
    }
    ended = 0
    for run_id, number in tracker.running_trial_runs(study.study_name).items():
        trial = finished.get(number)
        if trial is None:  # running, or waiting to run again
            continue
        if run_id == trial.user_attrs.get(RUN_ID_ATTR):
            state = trial.state.name
            reason = (
                f"trial {number} ended as {state} while the tracking store was out of reach; "
                "its run was ended once the store was back"
            )
        else:
            # Failed rather than finished: the trial's record is its other run.
            state = "FAIL"
            reason = (
                f"a second run for trial {number}, whose create was sent again when the "
                f"tracking store did not answer; the trial's record is run "
                f"{trial.user_attrs.get(RUN_ID_ATTR)}"
            )
        tracker.end_trial_run(run_id, state=state, reason=reason)
        ended += 1
    if ended:
        logger.info("ended %d MLflow run(s) that a tracking outage left running", ended)
    return ended


class Reaper:
    """While a worker runs: fail stale trials now and every half grace period, and end the
    MLflow runs of the trials it fails (a killed worker could not)."""

    def __init__(self, study: optuna.Study, tracker: Tracker) -> None:
        self._study = study
        self._tracker = tracker
        self._stop = threading.Event()
        storage = backend_of(study)
        self._hooks = getattr(getattr(storage, "on_stale", None), "hooks", None)
        grace = (
            storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
        )
        self._period = (grace or 10) * GRACE_BEATS / 2
        self._thread = threading.Thread(target=self._run, name="fmsearch-reaper", daemon=True)

    def _end_run(self, study: optuna.Study, trial: FrozenTrial) -> None:
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id:
            self._tracker.end_trial_run(
                run_id,
                state="FAIL",
                reason=f"worker {trial.user_attrs.get(WORKER_ATTR, '?')} stopped sending "
                "heartbeats (killed or cut off); the trial was failed and enqueued again",
            )

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            try:
                reap_stale_trials(self._study)
            except Exception as exc:  # a storage outage: try again next period
                logger.warning("could not check for stale trials: %s", str(exc).splitlines()[0])

    def __enter__(self) -> Reaper:
        if self._hooks is not None:
            self._hooks.append(self._end_run)
        reap_stale_trials(self._study)  # trials of workers that died before this one started
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._hooks is not None:
            self._hooks.remove(self._end_run)


class _Reporter:
    """Per-epoch sink for the runner: Optuna gets the objective, MLflow every metric."""

    def __init__(
        self,
        trial: optuna.Trial,
        log: TrialLog,
        *,
        prunable: bool = True,
        on_epoch: EpochCallback | None = None,
    ) -> None:
        self._trial = trial
        self._log = log
        self._prunable = prunable  # Optuna refuses reports from multi-objective trials
        self._on_epoch = on_epoch

    def report(self, value: float, step: int) -> None:
        if self._prunable:
            self._trial.report(value, step)

    def should_prune(self) -> bool:
        return self._prunable and self._trial.should_prune()

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self._log.log_epoch(epoch, metrics)
        if self._on_epoch is not None:
            self._on_epoch(self._trial.number, epoch, metrics)


@dataclass(frozen=True)
class FitPlan:
    """How the next Keras trial trains when another engine schedules it (Keras Tuner).

    Attributes:
        max_epochs: The epoch to train to.
        initial_epoch: Epochs its starting weights already carry.
        prepare: Called with the built model before training (loads those weights).
        callbacks: More Keras callbacks for ``fit``.
    """

    max_epochs: int
    initial_epoch: int = 0
    prepare: Callable[[Any], None] | None = None
    callbacks: Sequence[Any] = ()


class Objective:
    """One trial: suggest, train, record in MLflow; the value Optuna optimizes.

    ``plan``, when set, overrides the epochs of the next Keras trials (an engine other than
    Optuna's pruner decides them). A refit trial (``REFIT_ATTR``; with ``refit``, the first
    trial whose params are the refit's) trains on ``refit_split`` for its own epochs and is
    never pruned.
    """

    def __init__(
        self,
        *,
        space: ModuleType | Families,
        arch: str,
        split: Split,
        tracker: Tracker,
        experiment_id: str,
        parent_run_id: str,
        max_epochs: int,
        seed: int | None,
        patience: int | None,
        objectives: tuple[str, ...],
        narrowed: Mapping[str, BaseDistribution],
        deterministic: bool = False,
        dtype_policy: str = "float32",
        deadline: float | None = None,
        on_epoch: EpochCallback | None = None,
        refit_split: Split | None = None,
        refit: Refit | None = None,
        ladder: Ladder | None = None,
    ) -> None:
        self._dtype_policy = dtype_policy
        self._ladder = ladder
        self._refit_split = refit_split
        self._refit = refit
        self.refit_started = False
        # A time.monotonic() value after which running trials end (a hard time budget).
        self._deadline = deadline
        self._on_epoch = on_epoch
        self._objectives = objectives
        self._narrowed = narrowed
        self._space = space
        self._arch = arch
        self._split = split
        self._tracker = tracker
        self._experiment_id = experiment_id
        self._parent_run_id = parent_run_id
        self._max_epochs = max_epochs
        self._seed = seed
        self._deterministic = deterministic
        self._patience = patience
        self.plan: FitPlan | None = None

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        params = self._space.suggest(
            NarrowedTrial(trial, self._narrowed) if self._narrowed else trial
        )
        trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
        refit_of = trial.user_attrs.get(REFIT_ATTR)
        refit = self._refit
        reported = None
        if refit_of is None and refit and not self.refit_started and params == refit.params:
            refit_of, self.refit_started, reported = refit.of, True, refit.value
            trial.set_user_attr(REFIT_ATTR, refit.of)
            trial.set_user_attr(REFIT_EPOCHS_ATTR, refit.epochs)
            for key, value in refit.attrs.items():
                trial.set_user_attr(key, value)
        split, max_epochs, rung = self._fidelity(trial, refit_of)
        trial.set_user_attr(TRAIN_IMAGES_ATTR, len(split.x_train))
        log = TrialLog(self._tracker)
        run_id = log.start(
            experiment_id=self._experiment_id,
            parent_run_id=self._parent_run_id,
            study_name=trial.study.study_name,
            arch=self._arch,
            trial_number=trial.number,
            params=params,
            refit_of=refit_of,
            rung=rung,
            stands_in_for=trial.user_attrs.get(STANDS_IN_ATTR),
        )
        train = self._train_sklearn if self._space.KIND == "sklearn" else self._train_keras
        try:
            if run_id is not None:
                trial.set_user_attr(RUN_ID_ATTR, run_id)
            reporter = _Reporter(
                trial,
                log,
                prunable=len(self._objectives) == 1 and refit_of is None,
                on_epoch=self._on_epoch,
            )
            result = train(trial, params, split, log, reporter, max_epochs)
        except optuna.TrialPruned as exc:
            self._close(trial, log, state="PRUNED", reason=str(exc))
            raise
        except TrialFailed as exc:
            self._fail(trial, log, str(exc))
            raise
        except Exception as exc:
            if is_outage(exc):
                # The storage is what failed: Optuna's record of this trial waits for the
                # reaper (it runs again), MLflow's run ends now rather than stay RUNNING.
                log.close(
                    state="FAIL",
                    reason="storage out of reach mid-trial: a trial left running is failed "
                    "by heartbeat and runs again",
                )
                raise
            # Anything else that breaks one trial (a Keras error for one configuration, say)
            # fails that trial only; the failure guard stops a study where every trial does.
            logger.debug("trial %d failed", trial.number, exc_info=True)
            reason = f"{type(exc).__name__}: {exc}"
            self._fail(trial, log, reason)
            raise TrialFailed(reason) from exc
        except BaseException:
            self._close(trial, log, state="FAIL", reason="interrupted")
            raise
        self._close(trial, log, state="COMPLETE")
        if len(self._objectives) == 1:
            return result.best_value if reported is None else reported
        second = {"params": N_PARAMS_ATTR, "latency": LATENCY_ATTR}[self._objectives[1]]
        return result.best_value, float(trial.user_attrs[second])

    def _fidelity(self, trial: optuna.Trial, refit_of: int | None) -> tuple[Split, int, int | None]:
        """What the trial trains on, for how many epochs at most, and its rung (if planned)."""
        if refit_of is not None:
            epochs = trial.user_attrs.get(REFIT_EPOCHS_ATTR, self._max_epochs)
            return self._refit_split or self._split, epochs, None
        if self._ladder is None:
            return self._split, self._max_epochs, None
        # A planned search's first trials come from the plain pool: they are rung 0.
        rung = int(trial.user_attrs.get(RUNG_ATTR, 0))
        trial.set_user_attr(RUNG_ATTR, rung)
        data = self._ladder.data(rung)
        return data.split, data.epochs, rung

    def _close(
        self, trial: optuna.Trial, log: TrialLog, *, state: str, reason: str | None = None
    ) -> None:
        unlogged = log.close(state=state, reason=reason)
        if log.run_id is not None:  # perhaps created only once the store came back
            trial.set_user_attr(RUN_ID_ATTR, log.run_id)
        if unlogged:
            trial.set_user_attr(UNLOGGED_ATTR, unlogged)

    def _train_keras(
        self,
        trial: optuna.Trial,
        params: dict[str, Any],
        split: Split,
        log: TrialLog,
        reporter: _Reporter,
        max_epochs: int,
    ) -> TrialResult:
        from runners.metrics import predict_classes
        from runners.training import fit_trial, free_memory, seed_everything

        try:
            if self._seed is not None:
                seed_everything(self._seed + trial.number, deterministic=self._deterministic)
            plan = self.plan or FitPlan(max_epochs)
            with dtype_policy(self._dtype_policy):
                model = self._space.build(params, input_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES)
            if plan.prepare is not None:
                plan.prepare(model)
            trial.set_user_attr(DTYPE_POLICY_ATTR, self._dtype_policy)
            n_params = model.count_params()
            trial.set_user_attr(N_PARAMS_ATTR, n_params)
            result = fit_trial(
                model,
                params,
                split,
                max_epochs=plan.max_epochs,
                reporter=reporter,
                patience=self._patience_for(trial, params, plan.max_epochs),
                monitor_from=self._monitor_from(trial, params, plan.max_epochs),
                deadline=self._deadline,
                initial_epoch=plan.initial_epoch,
                callbacks=plan.callbacks,
            )
            if result.out_of_time:
                trial.set_user_attr(OUT_OF_TIME_ATTR, True)
            start = time.perf_counter()
            predicted = predict_classes(model, split.x_val)
            latency = measure_latency(
                lambda images: model.predict(images, batch_size=LATENCY_BATCH, verbose=0),
                split.x_val,
            )
            trial.set_user_attr(LATENCY_ATTR, latency)
            self._log_result(trial, log, result, predicted, split,
                             {"n_params": n_params, "latency_ms": latency})  # fmt: skip
            log.log_model(lambda run_id: self._tracker.log_keras_model(run_id, model))
            trial.set_user_attr(LOG_SECONDS_ATTR, time.perf_counter() - start)
            return result
        finally:
            model = None
            free_memory()

    def _train_sklearn(
        self,
        trial: optuna.Trial,
        params: dict[str, Any],
        split: Split,
        log: TrialLog,
        reporter: _Reporter,
        max_epochs: int,
    ) -> TrialResult:
        from runners.estimators import fit_estimator_trial, to_features

        estimator = self._space.build(params, input_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES)
        model, result, predicted = fit_estimator_trial(estimator, split, reporter=reporter)
        start = time.perf_counter()
        latency = measure_latency(lambda images: model.predict(to_features(images)), split.x_val)
        trial.set_user_attr(LATENCY_ATTR, latency)
        self._log_result(trial, log, result, predicted, split, {"latency_ms": latency})
        n_features = int(np.prod(IMAGE_SHAPE))
        log.log_model(
            lambda run_id: self._tracker.log_sklearn_model(run_id, model, n_features=n_features)
        )
        trial.set_user_attr(LOG_SECONDS_ATTR, time.perf_counter() - start)
        return result

    def _patience_for(self, trial: optuna.Trial, params: dict[str, Any], epochs: int) -> int | None:
        """Early-stopping patience: a refit at a constant rate gets a third of its epochs,
        since a long run's validation accuracy can stall longer than a short trial's (one on
        a decaying schedule is watched only once it has annealed, ``_monitor_from``)."""
        if STANDS_IN_ATTR in trial.user_attrs:
            return None  # its validation images are training images: nothing to stop on
        if self._patience is None or REFIT_ATTR not in trial.user_attrs:
            return self._patience
        if self._monitor_from(trial, params, epochs):
            return self._patience
        return max(self._patience, -(-epochs // 3))

    def _monitor_from(self, trial: optuna.Trial, params: dict[str, Any], epochs: int) -> int:
        """The first epoch early stopping watches: a refit's (a final's) once its schedule
        has annealed, every epoch of a search trial (the pruner judges those)."""
        from runners.training import annealed_from

        if REFIT_ATTR not in trial.user_attrs or STANDS_IN_ATTR in trial.user_attrs:
            return 0
        return annealed_from(params, epochs=epochs)

    def _log_result(
        self,
        trial: optuna.Trial,
        log: TrialLog,
        result: TrialResult,
        predicted: np.ndarray,
        split: Split,
        extra: dict[str, float],
    ) -> None:
        from runners.metrics import evaluate_predictions

        evaluation = evaluate_predictions(split.y_val, predicted, class_names=CLASS_NAMES)
        log.call(
            "result metrics",
            "log_metrics",
            {
                "best_val_accuracy": result.best_value,
                "best_epoch": result.best_epoch,
                "epochs_trained": result.epochs,
                "train_seconds": result.train_seconds,
                "train_images": len(split.x_train),
                **extra,
            },
        )
        log.call("confusion matrix and classification report", "log_evaluation", evaluation,
                 class_names=CLASS_NAMES, split="val")  # fmt: skip
        trial.set_user_attr(TRAIN_SECONDS_ATTR, result.train_seconds)
        trial.set_user_attr(BEST_EPOCH_ATTR, result.best_epoch)
        trial.set_user_attr(EPOCHS_ATTR, result.epochs)

    def _fail(self, trial: optuna.Trial, log: TrialLog, reason: str) -> None:
        self._close(trial, log, state="FAIL", reason=reason)
        trial.set_user_attr(FAIL_REASON_ATTR, reason[:1000])


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
