"""The engine's contract: an :class:`Engine` decides which trials a study runs in this process;
:func:`search.engines.lifecycle.run_engine` owns the rest of the study's life around it and hands
it a :class:`Session`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from optuna.trial import TrialState

from search.names import FAIL_REASON_ATTR

if TYPE_CHECKING:
    from pathlib import Path

    import optuna
    from optuna.trial import FrozenTrial

    from search.kinds import FitPlan
    from search.tracking import Tracker
    from search.trials.objective import Objective

StudyCallback = Callable[["optuna.Study", "FrozenTrial"], None]


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
    :func:`~search.engines.lifecycle.run_engine`, which owns the rest of a study's lifecycle
    in this process.

    ``fmsearch run --engine NAME`` makes one with :meth:`create` from the search's config
    (a :class:`~search.run.config.SearchConfig`) and runs it in this process.

    Attributes:
        fills_pool: The study's pool holds the trials asked for, which any number of workers
            take, so plans, grids and enqueued starts work (False: the engine asks for each
            trial itself, with its values and epochs, in one process; the objective then
            neither narrows the space nor stops a trial early).
    """

    fills_pool: ClassVar[bool] = True

    @classmethod
    def create(cls, config: Any, *, n_trials: int, directory: Path, ladder: Any = None) -> Engine:
        """This engine for one search: ``config``, ``n_trials`` to run, ``directory`` for
        any state of its own, and a planned search's ``ladder``."""
        return cls()

    @classmethod
    def check(cls, options: Any, *, space: Any, objectives: tuple[str, ...]) -> dict[str, Any]:
        """Refuse what this engine cannot do with ``options`` (a
        :class:`~search.run.config.SearchOptions`); return the changes it makes to them.

        Raises:
            FmsearchError: Options this engine cannot run.
        """
        return {}

    @classmethod
    def run_params(cls, config: Any) -> dict[str, Any]:
        """This engine's settings in ``config`` (a :class:`~search.run.config.SearchConfig`),
        as params of the study's parent run."""
        return {}

    def fit_plan(self, trial: optuna.Trial) -> FitPlan | None:
        """How ``trial`` trains when the engine decides its epochs (None: the objective's)."""
        return None

    def run(self, session: Session) -> None:
        """Run trials through ``session.objective`` until the engine is done."""
        raise NotImplementedError


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
