"""The Keras Tuner engine: ``fmsearch run --engine keras-tuner --tuner hyperband``.

Keras Tuner decides what each trial tries (Hyperband's brackets and epochs, Bayesian
optimisation, random search) over the same fmsearch space; fmsearch trains and records the
trial exactly as in an Optuna search. Each Keras Tuner trial is enqueued into the fmsearch
study with the values Keras Tuner chose and run through the study's own objective, so it is
an Optuna trial like any other (counted by ``fmsearch studies``, drawn in the report,
promoted) with its nested MLflow run: the two engines compare on one footing.

Keras Tuner keeps its own state (the oracle, and each trial's best weights, which a
Hyperband trial continues from) in ``directory/<study name>``; running the same command
again resumes it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    IntDistribution,
)

from runners.errors import FmsearchError, TrialFailed
from runners.precision import resolve_policy
from search.choices import TUNERS, describe_space
from search.objective import FitPlan, Objective
from search.outcome import StudyOutcome, summarize
from search.study import (
    MAX_CONSECUTIVE_FAILURES,
    FailureGuard,
    ParentRunProgress,
    StudyCallback,
    close_study_run,
    open_study_run,
)
from search.tracking import Tracker
from spaces import ARCHITECTURES

# Hyperband's reduction factor: the one Optuna's HyperbandPruner uses by default too.
HYPERBAND_FACTOR = 3
# Keras Tuner's own names for a Hyperband trial's schedule; not hyperparameters of the space.
_SCHEDULE_PREFIX = "tuner/"


def hyperparameters(
    distributions: Mapping[str, BaseDistribution], *, fixed: Mapping[str, Any] | None = None
):
    """The space as Keras Tuner ``HyperParameters``: every name, range and choice of
    ``distributions``, with ``fixed`` values pinned."""
    import keras_tuner as kt

    fixed = fixed or {}
    hp = kt.HyperParameters()
    for name, dist in distributions.items():
        if name in fixed:
            hp.Fixed(name, fixed[name])
        elif isinstance(dist, CategoricalDistribution) and set(dist.choices) == {False, True}:
            hp.Boolean(name)  # a Choice would hand back 0 and 1
        elif isinstance(dist, CategoricalDistribution):
            hp.Choice(name, list(dist.choices), ordered=False)
        elif isinstance(dist, IntDistribution):
            hp.Int(
                name, dist.low, dist.high,
                step=None if dist.log else dist.step, sampling="log" if dist.log else "linear",
            )  # fmt: skip
        else:
            hp.Float(
                name, dist.low, dist.high,
                step=dist.step, sampling="log" if dist.log else "linear",
            )  # fmt: skip
    return hp


def _tuner_class(kind: str):
    """A Keras Tuner class of ``kind`` whose trials run through fmsearch's objective."""
    import keras_tuner as kt
    from keras_tuner.src.engine import tuner_utils

    base = {
        "hyperband": kt.Hyperband,
        "bayesian": kt.BayesianOptimization,
        "random": kt.RandomSearch,
    }[kind]

    class Tuner(base):
        def __init__(
            self, *, run_one, epochs: int, deadline: float | None, guard: FailureGuard, **kwargs
        ):
            super().__init__(**kwargs)
            self._epochs = epochs
            self._run_one = run_one
            self._deadline = deadline
            self._guard = guard

        def run_trial(self, trial, *args, **kwargs):
            values = trial.hyperparameters.values
            continues = values.get(_SCHEDULE_PREFIX + "trial_id")
            plan = FitPlan(
                max_epochs=values.get(_SCHEDULE_PREFIX + "epochs", self._epochs),
                initial_epoch=values.get(_SCHEDULE_PREFIX + "initial_epoch", 0),
                # A Hyperband trial of a later round continues an earlier trial's best weights.
                prepare=(
                    (lambda model: model.load_weights(self._get_checkpoint_fname(continues)))
                    if continues
                    else None
                ),
                callbacks=[
                    tuner_utils.SaveBestEpoch(
                        objective=self.oracle.objective,
                        filepath=self._get_checkpoint_fname(trial.trial_id),
                    )
                ],
            )
            params = {k: v for k, v in values.items() if not k.startswith(_SCHEDULE_PREFIX)}
            value = self._run_one(params, plan, trial.trial_id)
            if value is None:
                raise kt.errors.FailedTrialError(f"trial {trial.trial_id} failed or was pruned")
            return {"val_accuracy": value}

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            out_of_time = self._deadline is not None and time.monotonic() >= self._deadline
            if out_of_time or self._guard.tripped:
                self.oracle.max_trials = len(self.oracle.trials)  # the next trial is STOPPED

    return Tuner


def run_keras_tuner(
    *,
    study: optuna.Study,
    tuner: str,
    arch: str,
    split,
    tracker: Tracker,
    max_epochs: int,
    n_trials: int,
    directory: Path,
    timeout: float | None = None,
    hard_timeout: bool = False,
    seed: int | None = None,
    deterministic: bool = False,
    fixed: Mapping[str, Any] | None = None,
    narrowed: Mapping[str, BaseDistribution] | None = None,
    precision: str = "float32",
    run_params: dict[str, Any] | None = None,
    callbacks: Sequence[StudyCallback] = (),
    on_epoch=None,
) -> StudyOutcome:
    """Search ``arch`` with Keras Tuner's ``tuner``, each trial recorded in ``study``.

    Args:
        study: A study from :func:`search.storage.create_or_load_study`; its pool must be
            empty (Keras Tuner, not the pool, says what runs).
        tuner: One of :data:`TUNERS`.
        arch: A Keras key of ``spaces.ARCHITECTURES``.
        split: Training and validation data.
        tracker: The MLflow store to record into.
        max_epochs: Epochs a trial trains at most (Hyperband's ``max_epochs``).
        n_trials: Trials to add to the ones Keras Tuner has run before in ``directory``.
        directory: Where Keras Tuner keeps its state, one folder per study.
        timeout: Start no trial after this many seconds.
        hard_timeout: Also end the trial running then, after its current epoch.
        seed: Seed of Keras Tuner's oracle; trial ``n`` trains from seed ``seed + n``.
        deterministic: TensorFlow's op determinism for the seeded trials.
        fixed: Hyperparameters pinned to one value (``--fix``).
        narrowed: Narrower distributions for some hyperparameters (``--space-file``).
        precision: A name in ``runners.precision.PRECISIONS``.
        run_params: Settings logged as params of the study's parent run when it is created.
        callbacks: Extra Optuna callbacks, called after each trial (a progress bar).
        on_epoch: Called with the trial number, epoch and metrics after every epoch.

    Raises:
        FmsearchError: ``arch`` is not a Keras architecture, or ``MAX_CONSECUTIVE_FAILURES``
            trials failed in a row.
    """
    import keras_tuner as kt

    space = ARCHITECTURES[arch]
    if space.KIND != "keras":
        raise FmsearchError(f"--engine keras-tuner: expected a Keras architecture, got {arch}")
    if tuner not in TUNERS:
        raise ValueError(f"tuner must be one of {', '.join(TUNERS)}, got {tuner!r}")
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    if waiting:
        raise FmsearchError(
            f"study {study.study_name!r}: expected no waiting trials for Keras Tuner, got "
            f"{len(waiting)} (an Optuna search's pool; use another --study-name)"
        )
    params = {"arch": arch, "engine": "keras-tuner", "tuner": tuner, **(run_params or {})}
    experiment_id, parent_run_id = open_study_run(study, arch=arch, tracker=tracker, params=params)
    policy = resolve_policy(precision)  # before the clock starts, as in run_worker
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
        patience=None,
        objectives=("accuracy",),
        narrowed={},  # Keras Tuner draws from the narrowed ranges itself
        dtype_policy=policy,
        deadline=deadline if hard_timeout else None,
        on_epoch=on_epoch,
    )
    guard = FailureGuard(MAX_CONSECUTIVE_FAILURES)
    finished: list[optuna.trial.FrozenTrial] = []
    study_callbacks = [
        ParentRunProgress(tracker, parent_run_id),
        guard,
        lambda _study, trial: finished.append(trial),
        *callbacks,
    ]

    def run_one(values: dict[str, Any], plan: FitPlan, kt_trial_id: str) -> float | None:
        study.enqueue_trial(values, user_attrs={"keras_tuner_trial": kt_trial_id})
        objective.plan = plan
        study.optimize(objective, n_trials=1, catch=(TrialFailed,), callbacks=study_callbacks)
        trial = finished[-1]
        return trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None

    distributions = {**describe_space(space), **(narrowed or {})}
    tuner_args = {
        "hypermodel": None,
        "objective": kt.Objective("val_accuracy", direction="max"),
        "hyperparameters": hyperparameters(distributions, fixed=fixed),
        "tune_new_entries": False,
        "allow_new_entries": False,
        "seed": seed,
        "directory": str(directory),
        "project_name": study.study_name,
        "overwrite": False,
        "max_consecutive_failed_trials": MAX_CONSECUTIVE_FAILURES,
    }
    if tuner == "hyperband":
        tuner_args |= {"max_epochs": max_epochs, "factor": HYPERBAND_FACTOR}
    else:
        tuner_args["max_trials"] = n_trials
    search = _tuner_class(tuner)(
        run_one=run_one,
        epochs=max_epochs,
        deadline=deadline,
        guard=guard,
        **tuner_args,
    )
    # Trials run before (a resumed search) count toward Keras Tuner's budget: add n_trials.
    search.oracle.max_trials = len(search.oracle.trials) + n_trials
    status = "FAILED"
    try:
        search.search(verbose=0)
        status = "FAILED" if guard.tripped else "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except RuntimeError as exc:
        # Keras Tuner's own stop after too many failed trials in a row.
        raise FmsearchError(f"Keras Tuner stopped: {exc}") from exc
    finally:
        outcome = summarize(study, parent_run_id=parent_run_id)
        close_study_run(tracker, study, outcome, status=status, objectives=("accuracy",))
    if guard.tripped:
        raise FmsearchError(
            f"stopped after {MAX_CONSECUTIVE_FAILURES} trials in a row failed; "
            f"the last one: {guard.last_reason}"
        )
    return outcome
