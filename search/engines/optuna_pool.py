"""Optuna's engine: a worker's loop over the study's pool of WAITING trials, which any number
of workers share, and the pool's budget."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from runners.data import Split
from runners.errors import TrialFailed
from search.budget.ladder import Ladder
from search.engines._base import Engine, Session
from search.engines.lifecycle import run_engine
from search.engines.outages import Reaper, await_storage, reap_stale_trials
from search.outcome import Refit, StudyOutcome
from search.storage.rdb import PoolEmpty, is_outage
from search.tracking import Tracker
from search.trials.choices import pinned

logger = logging.getLogger(__name__)


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

    @classmethod
    def create(cls, config: Any, *, n_trials: int, directory: Path, ladder: Any = None) -> Engine:
        return cls(ladder=ladder)

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
        study: A study from :func:`search.storage.rdb.create_or_load_study`, with a budget from
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
