"""One runner per model kind: how a trial's model is trained, measured and logged.

A space says its kind (``KIND``); :func:`runner_for` hands back the one runner of that kind,
and the rest of ``search`` asks the runner rather than branching on the kind. A runner
knows what its models can do (``trains_in_epochs``: a budget plan, Keras Tuner, learning-rate
finding, short-search augmentation fixes; ``counts_params``: the ``params`` objective) and
does the kind-specific part of a trial: fit with pruning, predict, log the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from runners.data import IMAGE_SHAPE, NUM_CLASSES, Split
from runners.reporting import EpochReporter, TrialResult
from search.names import DTYPE_POLICY_ATTR, N_PARAMS_ATTR, OUT_OF_TIME_ATTR

if TYPE_CHECKING:
    import optuna

    from search.tracking import Tracker


@dataclass(frozen=True)
class FitPlan:
    """How the next Keras trial trains when another engine schedules it (Keras Tuner).

    Attributes:
        max_epochs: The epoch to train to.
        initial_epoch: Epochs its starting weights already carry.
        prepare: Called with the built model before training (loads those weights).
        callbacks: More Keras callbacks for ``fit``.
        stretch_to: The most epochs a decaying schedule may be lengthened to when the
            trial's deadline holds more than ``max_epochs`` (None: never lengthened).
    """

    max_epochs: int
    initial_epoch: int = 0
    prepare: Callable[[Any], None] | None = None
    callbacks: Sequence[Any] = ()
    stretch_to: int | None = None


@dataclass(frozen=True)
class FitRequest:
    """What one trial's training is asked to do (the objective decides it, the runner does it).

    Attributes:
        params: The trial's configuration.
        split: What it trains and is judged on.
        reporter: Gets every epoch (or data share) and decides on pruning.
        plan: Its epochs, and what another engine adds (starting weights, callbacks).
        seed: The trial's seed (None: unseeded).
        deterministic: TensorFlow's op determinism for a seeded trial.
        dtype_policy: The Keras dtype policy to build the model under.
        patience: Early stopping's patience (None: never).
        monitor_from: The first epoch early stopping watches.
        deadline: A ``time.monotonic()`` after which training ends (a hard budget).
        metric: What the trial's value is on the validation images
            (:data:`runners.metrics.METRICS`).
    """

    params: dict[str, Any]
    split: Split
    reporter: EpochReporter
    plan: FitPlan
    seed: int | None = None
    deterministic: bool = False
    dtype_policy: str = "float32"
    patience: int | None = None
    monitor_from: int = 0
    deadline: float | None = None
    metric: str = "accuracy"


@dataclass(frozen=True)
class Fitted:
    """A trained trial: its model, its training result, (Keras) its parameter count, and
    its validation predictions where training made them already (scikit-learn)."""

    model: Any
    result: TrialResult
    n_params: int | None = None
    predicted: np.ndarray | None = None


class ModelRunner:
    """Trains, measures and logs the models of one kind; subclasses are the kinds."""

    kind: ClassVar[str]
    #: Trained by gradient descent over epochs: budget plans, Keras Tuner, learning-rate
    #: finding, short-search fixes and the up-front time estimate apply.
    trains_in_epochs: ClassVar[bool] = False
    #: Has a parameter count, so ``--objective accuracy,params`` can weigh it.
    counts_params: ClassVar[bool] = False
    #: Needs TensorFlow's modules (imported before a long search starts).
    uses_tensorflow: ClassVar[bool] = False

    def resolve_policy(self, precision: str) -> str:
        """The dtype policy its models train under for ``--precision``."""
        return "float32"

    def steps(self, max_epochs: int) -> int:
        """How many reports a trial makes at most: what the pruner counts."""
        return max_epochs

    def fit(self, space: ModuleType, request: FitRequest, trial: optuna.Trial) -> Fitted:
        """Build ``space``'s model for ``request.params`` and train it with pruning.

        Raises:
            optuna.TrialPruned: The reporter's pruner stopped it.
        """
        raise NotImplementedError

    def predict(self, model: Any, images: np.ndarray) -> np.ndarray:
        """The class ``model`` predicts for each of ``images`` (N, 28, 28, uint8)."""
        raise NotImplementedError

    def log_model(self, tracker: Tracker, run_id: str, model: Any) -> str:
        """Log ``model`` into ``run_id``; returns its model URI."""
        raise NotImplementedError

    def release(self) -> None:
        """Free what a finished trial left behind in this process."""


class KerasRunner(ModelRunner):
    kind = "keras"
    trains_in_epochs = True
    counts_params = True
    uses_tensorflow = True

    def resolve_policy(self, precision: str) -> str:
        from runners.precision import resolve_policy

        return resolve_policy(precision)

    def fit(self, space: ModuleType, request: FitRequest, trial: optuna.Trial) -> Fitted:
        from runners.precision import dtype_policy
        from runners.training import fit_trial, seed_everything

        if request.seed is not None:
            seed_everything(request.seed, deterministic=request.deterministic)
        with dtype_policy(request.dtype_policy):
            model = space.build(request.params, input_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES)
        if request.plan.prepare is not None:
            request.plan.prepare(model)
        # Recorded before training, so that a pruned trial has them too.
        trial.set_user_attr(DTYPE_POLICY_ATTR, request.dtype_policy)
        n_params = model.count_params()
        trial.set_user_attr(N_PARAMS_ATTR, n_params)
        try:
            result = fit_trial(
                model,
                request.params,
                request.split,
                max_epochs=request.plan.max_epochs,
                reporter=request.reporter,
                patience=request.patience,
                monitor_from=request.monitor_from,
                deadline=request.deadline,
                stretch_to=request.plan.stretch_to,
                initial_epoch=request.plan.initial_epoch,
                callbacks=request.plan.callbacks,
                metric=request.metric,
            )
        except BaseException:
            # The traceback keeps this frame alive: without this the pruned trial's model
            # would outlive release()'s collection.
            model = None
            raise
        if result.out_of_time:
            trial.set_user_attr(OUT_OF_TIME_ATTR, True)
        return Fitted(model, result, n_params)

    def predict(self, model: Any, images: np.ndarray) -> np.ndarray:
        from runners.metrics import predict_classes

        return predict_classes(model, images)

    def log_model(self, tracker: Tracker, run_id: str, model: Any) -> str:
        return tracker.log_model(
            run_id,
            model,
            flavor="keras",
            input_shape=tuple(model.input_shape[1:]),
            output=(np.float32, (model.output_shape[-1],)),
        )

    def release(self) -> None:
        from runners.training import free_memory

        free_memory()


class SklearnRunner(ModelRunner):
    kind = "sklearn"

    def steps(self, max_epochs: int) -> int:
        from runners.estimators import FRACTIONS

        return len(FRACTIONS)

    def fit(self, space: ModuleType, request: FitRequest, trial: optuna.Trial) -> Fitted:
        from runners.estimators import fit_estimator_trial

        estimator = space.build(request.params, input_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES)
        model, result, predicted = fit_estimator_trial(
            estimator, request.split, reporter=request.reporter, metric=request.metric
        )
        return Fitted(model, result, predicted=predicted)

    def predict(self, model: Any, images: np.ndarray) -> np.ndarray:
        from runners.estimators import to_features

        return model.predict(to_features(images))

    def log_model(self, tracker: Tracker, run_id: str, model: Any) -> str:
        return tracker.log_model(
            run_id,
            model,
            flavor="sklearn",
            input_shape=(int(np.prod(IMAGE_SHAPE)),),
            output=(np.int64, ()),
            extra_packages=_extra_packages(model),
        )


def _extra_packages(pipeline: Any) -> tuple[str, ...]:
    """Distributions a scikit-learn pipeline needs beyond scikit-learn (its final step's)."""
    from importlib.metadata import packages_distributions

    module = type(pipeline[-1]).__module__.split(".")[0]
    if module == "sklearn":
        return ()
    # ``xgboost`` may come from the ``xgboost`` or the ``xgboost-cpu`` distribution.
    return tuple(packages_distributions().get(module, [module])[:1])


RUNNERS: dict[str, ModelRunner] = {"keras": KerasRunner(), "sklearn": SklearnRunner()}


def runner_for(space: Any) -> ModelRunner:
    """The runner of ``space``'s model kind (a space module, or a family of Keras spaces)."""
    return RUNNERS[space.KIND]
