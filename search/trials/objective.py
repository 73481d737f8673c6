"""One trial: suggest, train at its fidelity, record in MLflow; the value Optuna optimizes."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution

from runners.data import CLASS_NAMES, Split
from runners.errors import TrialFailed
from runners.metrics import measure_latency
from runners.reporting import TrialResult
from search.budget.ladder import Ladder
from search.kinds import FitPlan, FitRequest, runner_for
from search.names import (
    BEST_EPOCH_ATTR,
    EPOCH_SECONDS_ATTR,
    EPOCHS_ATTR,
    FAIL_REASON_ATTR,
    LATENCY_ATTR,
    LOG_SECONDS_ATTR,
    N_PARAMS_ATTR,
    REFIT_ATTR,
    REFIT_EPOCHS_ATTR,
    RUN_ID_ATTR,
    RUNG_ATTR,
    STANDS_IN_ATTR,
    STRETCH_TO_ATTR,
    TRAIN_IMAGES_ATTR,
    TRAIN_SECONDS_ATTR,
    UNLOGGED_ATTR,
    WORKER_ATTR,
)
from search.outcome import Refit
from search.storage.rdb import is_outage
from search.tracking import Tracker, TrialLog
from search.trials.overrides import NarrowedTrial
from spaces.families import Families

logger = logging.getLogger(__name__)

EpochCallback = Callable[[int, int, dict[str, float]], None]


@dataclass(frozen=True)
class TrialRules:
    """How each of a study's trials trains, the same in every process that runs one.

    Attributes:
        max_epochs: Epochs a search trial trains at most (a rung or a refit sets its own).
        seed: The first trial's weight seed; trial N gets ``seed + N`` (None: random).
        patience: Epochs without improvement before a trial ends (None: never).
        objectives: ``accuracy``, then ``params`` or ``latency`` for a two-objective study.
        deterministic: TensorFlow's op determinism in every trial.
        dtype_policy: The Keras dtype policy, resolved for this host.
    """

    max_epochs: int
    seed: int | None = None
    patience: int | None = None
    objectives: tuple[str, ...] = ("accuracy",)
    deterministic: bool = False
    dtype_policy: str = "float32"


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


class Objective:
    """One trial: suggest, train, record in MLflow; the value Optuna optimizes.

    ``fit_plan(trial)``, when it returns a plan, overrides the trial's epochs (an engine
    other than Optuna's pruner decides them). A refit trial (``REFIT_ATTR``; with ``refit``,
    the first trial whose params are the refit's) trains on ``refit_split`` for its own
    epochs and is never pruned.
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
        rules: TrialRules,
        narrowed: Mapping[str, BaseDistribution],
        deadline: float | None = None,
        on_epoch: EpochCallback | None = None,
        refit_split: Split | None = None,
        refit: Refit | None = None,
        ladder: Ladder | None = None,
        fit_plan: Callable[[optuna.Trial], FitPlan | None] | None = None,
    ) -> None:
        self._rules = rules
        self._ladder = ladder
        self._refit_split = refit_split
        self._refit = refit
        self._refit_started = False
        self._fit_plan = fit_plan
        # A time.monotonic() value after which running trials end (a hard time budget).
        self._deadline = deadline
        self._on_epoch = on_epoch
        self._narrowed = narrowed
        self._space = space
        self._runner = runner_for(space)
        self._arch = arch
        self._split = split
        self._tracker = tracker
        self._experiment_id = experiment_id
        self._parent_run_id = parent_run_id

    @property
    def refit_started(self) -> bool:
        """Whether a trial of this objective took on the refit (``refit``)."""
        return self._refit_started

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        params = self._space.suggest(
            NarrowedTrial(trial, self._narrowed) if self._narrowed else trial
        )
        trial.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}")
        refit_of, reported = self._claim_refit(trial, params)
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
        try:
            if run_id is not None:
                trial.set_user_attr(RUN_ID_ATTR, run_id)
            reporter = _Reporter(
                trial,
                log,
                prunable=len(self._rules.objectives) == 1 and refit_of is None,
                on_epoch=self._on_epoch,
            )
            result = self._train(trial, params, split, log, reporter, max_epochs)
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
        if len(self._rules.objectives) == 1:
            return result.best_value if reported is None else reported
        second = {"params": N_PARAMS_ATTR, "latency": LATENCY_ATTR}[self._rules.objectives[1]]
        return result.best_value, float(trial.user_attrs[second])

    def _claim_refit(
        self, trial: optuna.Trial, params: dict[str, Any]
    ) -> tuple[int | None, float | None]:
        """The trial this one refits (None: a search trial) and the value to report for it
        (None: its own): a trial enqueued as a refit, or the first whose params are
        ``refit``'s, which then takes the refit's marks and reports the refit trial's value."""
        refit_of, refit = trial.user_attrs.get(REFIT_ATTR), self._refit
        if refit_of is not None or not refit or self._refit_started or params != refit.params:
            return refit_of, None
        self._refit_started = True
        trial.set_user_attr(REFIT_ATTR, refit.of)
        trial.set_user_attr(REFIT_EPOCHS_ATTR, refit.epochs)
        for key, value in refit.attrs.items():
            trial.set_user_attr(key, value)
        return refit.of, refit.value

    def _fidelity(self, trial: optuna.Trial, refit_of: int | None) -> tuple[Split, int, int | None]:
        """What the trial trains on, for how many epochs at most, and its rung (if planned)."""
        if refit_of is not None:
            epochs = trial.user_attrs.get(REFIT_EPOCHS_ATTR, self._rules.max_epochs)
            return self._refit_split or self._split, epochs, None
        if self._ladder is None:
            return self._split, self._rules.max_epochs, None
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

    def _train(
        self,
        trial: optuna.Trial,
        params: dict[str, Any],
        split: Split,
        log: TrialLog,
        reporter: _Reporter,
        max_epochs: int,
    ) -> TrialResult:
        plan = (self._fit_plan and self._fit_plan(trial)) or FitPlan(
            max_epochs, stretch_to=trial.user_attrs.get(STRETCH_TO_ATTR)
        )
        by_epoch = self._runner.trains_in_epochs  # early stopping watches epochs
        request = FitRequest(
            params=params,
            split=split,
            reporter=reporter,
            plan=plan,
            seed=None if self._rules.seed is None else self._rules.seed + trial.number,
            deterministic=self._rules.deterministic,
            dtype_policy=self._rules.dtype_policy,
            **(self._early_stopping(trial, params, plan.max_epochs) if by_epoch else {}),
            deadline=self._deadline,
            # A second objective (params, latency) is measured after training, not by it.
            metric=self._rules.objectives[0],
        )
        try:
            fitted = self._runner.fit(self._space, request, trial)
            start = time.perf_counter()
            model = fitted.model
            predicted = fitted.predicted
            if predicted is None:
                predicted = self._runner.predict(model, split.x_val)
            latency = measure_latency(lambda images: self._runner.predict(model, images),
                                      split.x_val)  # fmt: skip
            trial.set_user_attr(LATENCY_ATTR, latency)
            extra = {"latency_ms": latency}
            if fitted.n_params is not None:
                extra["n_params"] = fitted.n_params
            self._log_result(trial, log, fitted.result, predicted, split, extra)
            log.log_model(lambda run_id: self._runner.log_model(self._tracker, run_id, model))
            trial.set_user_attr(LOG_SECONDS_ATTR, time.perf_counter() - start)
            return fitted.result
        finally:
            fitted = model = None
            self._runner.release()

    def _early_stopping(self, trial: optuna.Trial, params: dict[str, Any], epochs: int):
        return {
            "patience": self._patience_for(trial, params, epochs),
            "monitor_from": self._monitor_from(trial, params, epochs),
        }

    def _patience_for(self, trial: optuna.Trial, params: dict[str, Any], epochs: int) -> int | None:
        """Early-stopping patience: a refit at a constant rate gets a third of its epochs,
        since a long run's validation accuracy can stall longer than a short trial's (one on
        a decaying schedule is watched only once it has annealed, ``_monitor_from``)."""
        if STANDS_IN_ATTR in trial.user_attrs:
            return None  # its validation images are training images: nothing to stop on
        if "patience" in params:  # a fine-tuning grid's own dimension
            return params["patience"]
        if self._rules.patience is None or REFIT_ATTR not in trial.user_attrs:
            return self._rules.patience
        if self._monitor_from(trial, params, epochs):
            return self._rules.patience
        return max(self._rules.patience, -(-epochs // 3))

    def _monitor_from(self, trial: optuna.Trial, params: dict[str, Any], epochs: int) -> int:
        """The first epoch early stopping watches: a refit's (a final's) once its schedule
        has annealed, every epoch of a search trial (the pruner judges those)."""
        if REFIT_ATTR not in trial.user_attrs or STANDS_IN_ATTR in trial.user_attrs:
            return 0
        # Refits are Keras trials (a scikit-learn run never imports TensorFlow).
        from runners.training import annealed_from

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
        if result.epoch_seconds is not None:
            trial.set_user_attr(EPOCH_SECONDS_ATTR, result.epoch_seconds)

    def _fail(self, trial: optuna.Trial, log: TrialLog, reason: str) -> None:
        self._close(trial, log, state="FAIL", reason=reason)
        trial.set_user_attr(FAIL_REASON_ATTR, reason[:1000])
