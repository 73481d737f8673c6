"""A storage or tracking store out of reach: waiting for it, failing the trials its workers
abandoned, and ending the MLflow runs an outage left open."""

from __future__ import annotations

import logging
import threading
import time
import warnings

import optuna
from optuna.trial import FrozenTrial, TrialState

from runners.errors import FmsearchError
from search.names import PROBE_ATTR, RUN_ID_ATTR, WORKER_ATTR
from search.storage.rdb import GRACE_BEATS, FmsearchStorage, backend_of, is_outage
from search.tracking import Tracker

logger = logging.getLogger(__name__)

# A worker waits this long for an unreachable storage (a database restart, a failover).
STORAGE_OUTAGE_SECONDS = 300
STORAGE_RETRY_SECONDS = 2


def _database_error(exc: BaseException) -> str:
    """The first line of the error at the bottom of ``exc``'s chain: the database's own,
    which Optuna's wrappers hide."""
    while (exc.__cause__ or exc.__context__) is not None:
        exc = exc.__cause__ or exc.__context__
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def await_storage(study: optuna.Study, exc: BaseException) -> None:
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
        record = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id == record:
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
                f"tracking store did not answer; the trial's record is run {record}"
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
        self._hooks = storage.on_stale.hooks if isinstance(storage, FmsearchStorage) else None
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
