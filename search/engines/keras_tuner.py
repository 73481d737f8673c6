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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    IntDistribution,
)

from runners.errors import FmsearchError, TrialFailed
from search.engines._base import Engine, FailureGuard, Session
from search.engines.lifecycle import MAX_CONSECUTIVE_FAILURES, run_engine
from search.kinds import FitPlan, runner_for
from search.names import KT_TRIAL_ATTR
from search.outcome import StudyOutcome
from search.tracking import Tracker
from search.trials.choices import TUNERS, describe_space
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


def oracle_seed(seed: int | None) -> int | None:
    """The seed handed to Keras Tuner's oracle for fmsearch's ``seed``: one more.

    Why: Keras Tuner reads a seed of 0 as no seed at all (``seed or random.randint(1,
    10000)`` in its ``Oracle``), so ``--seed 0``, the seed every benchmark starts from, drew
    other configurations on each run. Shifting every seed keeps them all distinct.
    """
    return None if seed is None else seed + 1


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


class KerasTunerEngine(Engine):
    """Keras Tuner's engine: its tuner asks for each trial; fmsearch enqueues it into the
    study with the values Keras Tuner chose and runs it through the study's objective.

    Args:
        tuner: One of :data:`TUNERS`.
        max_epochs: Epochs a trial trains at most (Hyperband's ``max_epochs``).
        n_trials: Trials to add to the ones Keras Tuner has run before in ``directory``.
        directory: Where Keras Tuner keeps its state, one folder per study.
        distributions: The space's distributions, narrowed (Keras Tuner draws from them).
        fixed: Hyperparameters pinned to one value.
        seed: The search's seed (Keras Tuner's oracle gets :func:`oracle_seed` of it).
    """

    def __init__(
        self,
        *,
        tuner: str,
        max_epochs: int,
        n_trials: int,
        directory: Path,
        distributions: Mapping[str, BaseDistribution],
        fixed: Mapping[str, Any] | None = None,
        seed: int | None = None,
    ) -> None:
        if tuner not in TUNERS:
            raise ValueError(f"tuner must be one of {', '.join(TUNERS)}, got {tuner!r}")
        self._tuner = tuner
        self._max_epochs = max_epochs
        self._n_trials = n_trials
        self._directory = directory
        self._distributions = distributions
        self._fixed = fixed
        self._seed = seed
        self._plans: dict[str, FitPlan] = {}

    fills_pool = False

    @classmethod
    def check(cls, options: Any, *, space: Any, objectives: tuple[str, ...]) -> dict[str, Any]:
        """One Keras architecture, accuracy, one process, no enqueued start; Keras Tuner
        chooses and Optuna only records (random sampler, no pruner)."""
        from spaces.families import Families

        if not runner_for(space).trains_in_epochs or isinstance(space, Families):
            raise FmsearchError(
                f"--engine keras-tuner: expected one Keras architecture, got --arch {options.arch}"
            )
        if objectives != ("accuracy",):
            raise FmsearchError(
                "--engine keras-tuner: expected --objective accuracy (Keras Tuner optimises the "
                f"validation accuracy), got --objective {','.join(objectives)}"
            )
        if options.workers != 1:
            raise FmsearchError(
                f"--engine keras-tuner: expected --workers 1 (Keras Tuner runs its trials in one "
                f"process), got --workers {options.workers}"
            )
        if options.enqueue:
            raise FmsearchError(
                "--engine keras-tuner: expected no --enqueue (Keras Tuner picks every trial), "
                "got --enqueue"
            )
        study_name = options.study_name or f"{options.arch}-kt-{options.tuner}"
        return {"sampler": "random", "pruner": "none", "study_name": study_name}

    @classmethod
    def create(cls, config: Any, *, n_trials: int, directory: Path, ladder: Any = None) -> Engine:
        t = config.training
        return cls(tuner=config.engine.tuner, max_epochs=t.max_epochs, n_trials=n_trials,
                   directory=directory / "keras-tuner",
                   distributions={**describe_space(config.space), **t.narrowed},
                   fixed=t.fixed, seed=t.seed)  # fmt: skip

    @classmethod
    def run_params(cls, config: Any) -> dict[str, Any]:
        return {"tuner": config.engine.tuner}

    def fit_plan(self, trial: optuna.Trial) -> FitPlan | None:
        return self._plans.get(trial.user_attrs.get(KT_TRIAL_ATTR))

    def run(self, session: Session) -> None:
        import keras_tuner as kt

        study = session.study
        waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
        if waiting:
            raise FmsearchError(
                f"study {study.study_name!r}: expected no waiting trials for Keras Tuner, got "
                f"{len(waiting)} (an Optuna search's pool; use another --study-name)"
            )
        finished: list[optuna.trial.FrozenTrial] = []
        callbacks = [*session.callbacks, lambda _study, trial: finished.append(trial)]

        def run_one(values: dict[str, Any], plan: FitPlan, kt_trial_id: str) -> float | None:
            self._plans[kt_trial_id] = plan
            study.enqueue_trial(values, user_attrs={KT_TRIAL_ATTR: kt_trial_id})
            study.optimize(session.objective, n_trials=1, catch=(TrialFailed,),
                           callbacks=callbacks)  # fmt: skip
            trial = finished[-1]
            return trial.value if trial.state == optuna.trial.TrialState.COMPLETE else None

        tuner_args = {
            "hypermodel": None,
            "objective": kt.Objective("val_accuracy", direction="max"),
            "hyperparameters": hyperparameters(self._distributions, fixed=self._fixed),
            "tune_new_entries": False,
            "allow_new_entries": False,
            "seed": oracle_seed(self._seed),
            "directory": str(self._directory),
            "project_name": study.study_name,
            "overwrite": False,
            "max_consecutive_failed_trials": MAX_CONSECUTIVE_FAILURES,
        }
        if self._tuner == "hyperband":
            tuner_args |= {"max_epochs": self._max_epochs, "factor": HYPERBAND_FACTOR}
        else:
            tuner_args["max_trials"] = self._n_trials
        search = _tuner_class(self._tuner)(
            run_one=run_one,
            epochs=self._max_epochs,
            deadline=session.deadline,
            guard=session.guard,
            **tuner_args,
        )
        # Trials run before (a resumed search) count toward Keras Tuner's budget: add n_trials.
        search.oracle.max_trials = len(search.oracle.trials) + self._n_trials
        try:
            search.search(verbose=0)
        except RuntimeError as exc:
            # Keras Tuner's own stop after too many failed trials in a row.
            raise FmsearchError(f"Keras Tuner stopped: {exc}") from exc


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
    seed: int | None = None,
    fixed: Mapping[str, Any] | None = None,
    narrowed: Mapping[str, BaseDistribution] | None = None,
    **lifecycle: Any,
) -> StudyOutcome:
    """Search ``arch`` with Keras Tuner's ``tuner``, each trial recorded in ``study``.

    Args:
        study: A study from :func:`search.storage.rdb.create_or_load_study`; its pool must be
            empty (Keras Tuner, not the pool, says what runs).
        tuner: One of :data:`TUNERS`.
        arch: A Keras key of ``spaces.ARCHITECTURES``.
        split: Training and validation data.
        tracker: The MLflow store to record into.
        max_epochs: Epochs a trial trains at most (Hyperband's ``max_epochs``).
        n_trials: Trials to add to the ones Keras Tuner has run before in ``directory``.
        directory: Where Keras Tuner keeps its state, one folder per study.
        seed: The search's seed (see :func:`oracle_seed`); trial ``n`` trains from seed
            ``seed + n``.
        fixed: Hyperparameters pinned to one value (``--fix``).
        narrowed: Narrower distributions for some hyperparameters (``--space-file``).
        **lifecycle: ``timeout``, ``hard_timeout``, ``deterministic``, ``precision``,
            ``run_params``, ``callbacks`` and ``on_epoch``, as
            :func:`search.engines._base.run_engine` takes them.

    Raises:
        FmsearchError: ``arch`` is not a Keras architecture, or ``MAX_CONSECUTIVE_FAILURES``
            trials failed in a row.
    """
    space = ARCHITECTURES[arch]
    if not runner_for(space).trains_in_epochs:
        raise FmsearchError(f"--engine keras-tuner: expected a Keras architecture, got {arch}")
    engine = KerasTunerEngine(
        tuner=tuner,
        max_epochs=max_epochs,
        n_trials=n_trials,
        directory=directory,
        distributions={**describe_space(space), **(narrowed or {})},
        fixed=fixed,
        seed=seed,
    )
    given = lifecycle.pop("run_params", None) or {}
    run_params = {"engine": "keras-tuner", "tuner": tuner, **given}
    # Keras Tuner decides the epochs (no patience) and draws from the narrowed ranges itself.
    return run_engine(engine, study=study, arch=arch, split=split, tracker=tracker,
                      max_epochs=max_epochs, seed=seed, run_params=run_params,
                      **lifecycle)  # fmt: skip
