"""A trial's MLflow record, kept through a tracking store outage."""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any

from search.storage.urls import redact

if TYPE_CHECKING:
    from search.tracking import Tracker

logger = logging.getLogger(__name__)


def root_cause(exc: BaseException) -> str:
    """The telling part of a client error: the OS error behind MLflow's retry wrappers."""
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    if errno:
        return errno.group(0)
    lines = text.strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


class TrialLog:
    """One trial's MLflow record, kept through a tracking store outage.

    Each write is queued and the queue sent in order; when the store does not answer, the
    trial goes on training, later writes wait in the queue (sent again at most every
    ``retry_seconds``), and :meth:`close` tries ``close_attempts`` more times before it gives
    up. What could not be sent is listed in :attr:`unlogged`, for the trial's Optuna record.
    """

    def __init__(
        self,
        tracker: Tracker,
        *,
        retry_seconds: float = 15.0,
        close_attempts: int = 3,
        close_wait: float = 5.0,
    ) -> None:
        self._tracker = tracker
        self._queue: list[tuple[str, Any]] = []
        self._retry_seconds = retry_seconds
        self._close_attempts = close_attempts
        self._close_wait = close_wait
        self._failed_at: float | None = None
        self.run_id: str | None = None
        self.unlogged: list[str] = []

    def start(self, **run_args: Any) -> str | None:
        """Create the trial's run (:meth:`Tracker.start_trial_run` arguments)."""

        def create() -> None:
            self.run_id = self._tracker.start_trial_run(**run_args)

        self._send("run and params", create)
        return self.run_id

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self._send(f"epoch {epoch} metrics",
                   lambda: self._tracker.log_epoch(self.run_id, epoch, metrics))  # fmt: skip

    def call(self, what: str, method: str, *args: Any, **kwargs: Any) -> None:
        """Queue ``tracker.method(run_id, *args, **kwargs)``; ``what`` names it if it fails."""
        self._send(what, lambda: getattr(self._tracker, method)(self.run_id, *args, **kwargs))

    def log_model(self, log: Any) -> None:
        """Send ``log(run_id)`` now, once the queue is through; models are not kept waiting."""
        if self._drain(force=True):
            try:
                log(self.run_id)
                return
            except Exception as exc:
                self._failed(exc)
        self.unlogged.append("model")

    def close(self, *, state: str, reason: str | None = None) -> list[str]:
        """End the run with Optuna's ``state``; returns what could not be logged."""

        def end() -> None:
            self._tracker.end_trial_run(self.run_id, state=state, reason=reason)

        self._queue.append(("end of run", end))
        for attempt in range(self._close_attempts):
            if self._drain(force=True):
                break
            if attempt + 1 < self._close_attempts:
                time.sleep(self._close_wait)
        self.unlogged += [what for what, _ in self._queue]
        self._queue.clear()
        if self.unlogged:
            logger.warning("the tracking store missed, for good: %s", ", ".join(self.unlogged))
        return self.unlogged

    def _send(self, what: str, operation: Any) -> None:
        self._queue.append((what, operation))
        self._drain()

    def _drain(self, *, force: bool = False) -> bool:
        """Send the queue in order; False when the store failed (the rest stays queued)."""
        recent = (
            self._failed_at is not None and time.monotonic() - self._failed_at < self._retry_seconds
        )
        if recent and not force:
            return False
        while self._queue:
            what, operation = self._queue[0]
            if self.run_id is None and what != "run and params":
                return False
            try:
                operation()
            except Exception as exc:
                self._failed(exc)
                return False
            self._queue.pop(0)
        self._failed_at = None
        return True

    def _failed(self, exc: Exception) -> None:
        if self._failed_at is None:
            logger.warning(
                "tracking store %s does not answer (%s): the trial goes on, its record waits",
                redact(self._tracker.tracking_uri),
                root_cause(exc),
            )
        self._failed_at = time.monotonic()
