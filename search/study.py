"""Running a study: the objective, per-trial tracking, and the study's MLflow parent run."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from runners.data import CLASS_NAMES, IMAGE_SHAPE, NUM_CLASSES, Split
from runners.errors import FmsearchError, TrialFailed
from search.tracking import Tracker
from spaces import ARCHITECTURES

logger = logging.getLogger(__name__)

RUN_ID_ATTR = "mlflow_run_id"
FAIL_REASON_ATTR = "fail_reason"
# Stop the study when this many trials fail in a row: the cause is then the set-up, not a
# hyperparameter, and more trials would fail the same way.
MAX_CONSECUTIVE_FAILURES = 5

StudyCallback = Callable[[optuna.Study, FrozenTrial], None]


@dataclass(frozen=True)
class StudyOutcome:
    """Where a study stands after a run.

    Attributes:
        study_name: The study.
        n_complete: Completed trials, over the study's whole life.
        n_pruned: Pruned trials.
        n_failed: Failed trials.
        best_value: Best validation accuracy, None if no trial completed.
        best_trial: Number of the best trial, None if no trial completed.
        parent_run_id: The study's MLflow parent run.
    """

    study_name: str
    n_complete: int
    n_pruned: int
    n_failed: int
    best_value: float | None
    best_trial: int | None
    parent_run_id: str


def summarize(study: optuna.Study, *, parent_run_id: str) -> StudyOutcome:
    """Counts and best result of ``study``."""
    trials = study.get_trials(deepcopy=False)
    count = {s: sum(t.state == s for t in trials) for s in TrialState}
    best = study.best_trial if count[TrialState.COMPLETE] else None
    return StudyOutcome(
        study_name=study.study_name,
        n_complete=count[TrialState.COMPLETE],
        n_pruned=count[TrialState.PRUNED],
        n_failed=count[TrialState.FAIL],
        best_value=best.value if best else None,
        best_trial=best.number if best else None,
        parent_run_id=parent_run_id,
    )


def run_study(
    *,
    study: optuna.Study,
    arch: str,
    split: Split,
    tracker: Tracker,
    n_trials: int,
    max_epochs: int,
    timeout: float | None = None,
    seed: int | None = None,
    patience: int | None = None,
    run_params: dict[str, Any] | None = None,
    callbacks: Sequence[StudyCallback] = (),
) -> StudyOutcome:
    """Add ``n_trials`` trials to ``study``, each tracked as a nested MLflow run.

    Args:
        study: A study from :func:`search.storage.create_or_load_study`.
        arch: A key of ``spaces.ARCHITECTURES``.
        split: Training and validation data.
        tracker: The MLflow store to record into.
        n_trials: Trials this call adds.
        max_epochs: Epochs a trial trains at most (the pruner's maximum resource).
        timeout: Stop starting trials after this many seconds.
        seed: Seed of trial ``n`` is ``seed + n``, for repeatable initial weights.
        patience: End a trial after this many epochs without improvement (None: never).
        run_params: Settings logged as params of the study's parent run when it is created.
        callbacks: Extra Optuna callbacks, called after each trial (a progress bar).

    Raises:
        FmsearchError: ``MAX_CONSECUTIVE_FAILURES`` trials failed in a row.
    """
    experiment_id = tracker.experiment_id(study.study_name)
    parent_run_id = tracker.start_study_run(
        experiment_id=experiment_id,
        study_name=study.study_name,
        arch=arch,
        params={"arch": arch, **(run_params or {})},
    )
    objective = _Objective(
        space=ARCHITECTURES[arch],
        arch=arch,
        split=split,
        tracker=tracker,
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        max_epochs=max_epochs,
        seed=seed,
        patience=patience,
    )
    guard = _FailureGuard(MAX_CONSECUTIVE_FAILURES)
    status = "FAILED"
    try:
        study.optimize(
            objective,
            n_trials=n_trials,
            timeout=timeout,
            catch=(TrialFailed,),
            callbacks=[_ParentRunProgress(tracker, parent_run_id), guard, *callbacks],
        )
        status = "FAILED" if guard.tripped else "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        outcome = summarize(study, parent_run_id=parent_run_id)
        tracker.set_tags(
            parent_run_id,
            {
                "n_complete": outcome.n_complete,
                "n_pruned": outcome.n_pruned,
                "n_failed": outcome.n_failed,
                "best_trial": outcome.best_trial,
            },
        )
        tracker.end_run(parent_run_id, status=status)
    if guard.tripped:
        raise FmsearchError(
            f"stopped after {MAX_CONSECUTIVE_FAILURES} trials in a row failed; "
            f"the last one: {guard.last_reason}"
        )
    return outcome


class _Reporter:
    """Per-epoch sink for the runner: Optuna gets the objective, MLflow every metric."""

    def __init__(self, trial: optuna.Trial, tracker: Tracker, run_id: str) -> None:
        self._trial = trial
        self._tracker = tracker
        self._run_id = run_id

    def report(self, value: float, step: int) -> None:
        self._trial.report(value, step)

    def should_prune(self) -> bool:
        return self._trial.should_prune()

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self._tracker.log_epoch(self._run_id, epoch, metrics)


class _Objective:
    def __init__(
        self,
        *,
        space: ModuleType,
        arch: str,
        split: Split,
        tracker: Tracker,
        experiment_id: str,
        parent_run_id: str,
        max_epochs: int,
        seed: int | None,
        patience: int | None,
    ) -> None:
        self._space = space
        self._arch = arch
        self._split = split
        self._tracker = tracker
        self._experiment_id = experiment_id
        self._parent_run_id = parent_run_id
        self._max_epochs = max_epochs
        self._seed = seed
        self._patience = patience

    def __call__(self, trial: optuna.Trial) -> float:
        from runners.metrics import evaluate_predictions, predict_classes
        from runners.training import fit_trial, free_memory, seed_everything

        params = self._space.suggest(trial)
        run_id = self._tracker.start_trial_run(
            experiment_id=self._experiment_id,
            parent_run_id=self._parent_run_id,
            study_name=trial.study.study_name,
            arch=self._arch,
            trial_number=trial.number,
            params=params,
        )
        trial.set_user_attr(RUN_ID_ATTR, run_id)
        try:
            if self._seed is not None:
                seed_everything(self._seed + trial.number)
            model = self._space.build(params, input_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES)
            trial.set_user_attr("n_params", model.count_params())
            result = fit_trial(
                model,
                params,
                self._split,
                max_epochs=self._max_epochs,
                reporter=_Reporter(trial, self._tracker, run_id),
                patience=self._patience,
            )
            start = time.perf_counter()
            evaluation = evaluate_predictions(
                self._split.y_val,
                predict_classes(model, self._split.x_val),
                class_names=CLASS_NAMES,
            )
            self._tracker.log_metrics(
                run_id,
                {
                    "best_val_accuracy": result.best_value,
                    "best_epoch": result.best_epoch,
                    "epochs_trained": result.epochs,
                    "train_seconds": result.train_seconds,
                    "n_params": model.count_params(),
                },
            )
            self._tracker.log_evaluation(run_id, evaluation, class_names=CLASS_NAMES, split="val")
            self._tracker.log_keras_model(run_id, model)
            trial.set_user_attr("log_seconds", time.perf_counter() - start)
            trial.set_user_attr("train_seconds", result.train_seconds)
            trial.set_user_attr("best_epoch", result.best_epoch)
        except optuna.TrialPruned as exc:
            self._tracker.end_trial_run(run_id, state="PRUNED", reason=str(exc))
            raise
        except Exception as exc:
            reason = str(exc) if isinstance(exc, TrialFailed) else f"{type(exc).__name__}: {exc}"
            trial.set_user_attr(FAIL_REASON_ATTR, reason[:1000])
            self._tracker.end_trial_run(run_id, state="FAIL", reason=reason)
            if isinstance(exc, TrialFailed):
                raise
            raise TrialFailed(reason) from exc
        except BaseException:
            self._tracker.end_trial_run(run_id, state="FAIL", reason="interrupted")
            raise
        finally:
            model = None
            free_memory()
        self._tracker.end_trial_run(run_id, state="COMPLETE")
        return result.best_value


class _ParentRunProgress:
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
        self._tracker.log_metrics(self._parent_run_id, metrics, step=trial.number)


class _FailureGuard:
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
