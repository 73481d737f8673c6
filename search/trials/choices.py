"""The CLI's vocabulary: samplers and pruners by name, and what each space searches.

The CLI's strings become Optuna objects here, once.

Kept free of heavy imports so that ``fmsearch --help`` lists the choices instantly.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from runners.errors import FmsearchError

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

# Keras Tuner's algorithms (--engine keras-tuner).
TUNERS = ("hyperband", "bayesian", "random")
TPE_STARTUP_TRIALS = 5
# What a budgeted search prunes with: the median rule inside each rung of its ladder.
PLANNED_PRUNER = "rung-median"
OBJECTIVES = (
    "accuracy", "macro_f1", "worst_class_f1", "accuracy,params", "accuracy,latency",
)  # fmt: skip


def parse_objectives(text: str, space: ModuleType, *, arch: str) -> tuple[str, ...]:
    """``--objective`` as a tuple of objective names, checked against the space.

    Raises:
        FmsearchError: Unknown objective, or ``params`` for a scikit-learn space.
    """
    if text not in OBJECTIVES:
        raise FmsearchError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {text!r}")
    objectives = tuple(text.split(","))
    from search.kinds import runner_for

    if "params" in objectives and not runner_for(space).counts_params:
        raise FmsearchError(
            f"--objective {text}: expected a Keras architecture (a scikit-learn model has no "
            f"parameter count), got --arch {arch}; use accuracy,latency"
        )
    return objectives


def check_requirements(space: ModuleType, *, arch: str) -> None:
    """Fail early when an architecture's optional extra is not installed.

    Raises:
        FmsearchError: The space's ``REQUIRES`` package cannot be imported.
    """
    import importlib.util

    requires = space.REQUIRES
    if requires is not None and importlib.util.find_spec(requires[0]) is None:
        raise FmsearchError(f"--arch {arch} needs {requires[0]}: {requires[1]}")


def make_sampler(
    name: str, *, seed: int | None = None, fixed: dict[str, Any] | None = None
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler called ``name`` (a key of ``SAMPLERS``), with ``fixed`` values pinned.

    Raises:
        FmsearchError: Unknown name, or the GP sampler without PyTorch.
    """
    sampler = _make_sampler(name, seed=seed)
    return pinned(sampler, fixed) if fixed else sampler


def pinned(
    sampler: optuna.samplers.BaseSampler, fixed: dict[str, Any]
) -> optuna.samplers.BaseSampler:
    """``sampler`` with the ``fixed`` values pinned (Optuna's ``PartialFixedSampler``: they are
    recorded under the space's own distributions)."""
    import optuna

    with warnings.catch_warnings():  # experimental since Optuna 2.4, unchanged since
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.PartialFixedSampler(fixed, sampler)


def _tpe(seed: int | None) -> optuna.samplers.BaseSampler:
    import optuna

    # Constant liar: parallel workers do not all sample next to the same running trial.
    # Five random trials, not Optuna's ten: a 10-trial search (make run's) was otherwise all
    # random, and never improved on the configurations it starts from.
    return optuna.samplers.TPESampler(
        seed=seed, constant_liar=True, n_startup_trials=TPE_STARTUP_TRIALS
    )


def _random(seed: int | None) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _cmaes(seed: int | None) -> optuna.samplers.BaseSampler:
    import optuna

    # CMA-ES handles only numeric parameters; the rest go to the independent sampler.
    return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)


def _gp(seed: int | None) -> optuna.samplers.BaseSampler:
    import optuna

    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise FmsearchError(
            "--sampler gp needs PyTorch: pip install 'fmsearch[gp]' "
            "(the CPU build is enough: --index-url https://download.pytorch.org/whl/cpu)"
        ) from exc
    return optuna.samplers.GPSampler(seed=seed)


# The registry of --sampler: name -> a factory of the sampler, given the seed. "grid": every
# combination of the space file's choices, each once (the pool holds the grid; hyperparameters
# outside it are drawn at random).
SAMPLERS: dict[str, Callable[[int | None], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe,
    "random": _random,
    "cmaes": _cmaes,
    "gp": _gp,
    "grid": _random,
}


def _make_sampler(name: str, *, seed: int | None) -> optuna.samplers.BaseSampler:
    if name not in SAMPLERS:
        raise FmsearchError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")
    return SAMPLERS[name](seed)


def _hyperband(max_epochs: int) -> optuna.pruners.BasePruner:
    import optuna

    return optuna.pruners.HyperbandPruner(
        min_resource=1, max_resource=max_epochs, reduction_factor=3
    )


def _median(max_epochs: int) -> optuna.pruners.BasePruner:
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)


def _nop(max_epochs: int) -> optuna.pruners.BasePruner:
    import optuna

    return optuna.pruners.NopPruner()


def _rung_median(max_epochs: int) -> optuna.pruners.BasePruner:
    from search.budget.ladder import RungMedianPruner

    return RungMedianPruner()


# The registry of --pruner: name -> a factory of the pruner, given a trial's most epochs.
PRUNERS: dict[str, Callable[[int], optuna.pruners.BasePruner]] = {
    "hyperband": _hyperband,
    "median": _median,
    "none": _nop,
}
# Pruners a search picks itself, never offered on the command line.
_OWN_PRUNERS = {PLANNED_PRUNER: _rung_median}


def make_pruner(name: str, *, max_epochs: int) -> optuna.pruners.BasePruner:
    """The Optuna pruner called ``name`` (a key of ``PRUNERS``), sized to ``max_epochs``.

    Raises:
        FmsearchError: Unknown name.
    """
    factory = PRUNERS.get(name) or _OWN_PRUNERS.get(name)
    if factory is None:
        raise FmsearchError(f"--pruner must be one of {', '.join(PRUNERS)}, got {name!r}")
    return factory(max_epochs)


def describe_space(space: ModuleType, *, samples: int = 300) -> dict[str, Any]:
    """Every hyperparameter a space can suggest, with its distribution.

    Conditional hyperparameters (``n_units_l2`` only with three layers) appear only in some
    trials, so the space is sampled many times at random and the distributions merged.
    """
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    for _ in range(samples):
        trial = study.ask()
        space.suggest(trial)
        seen.append(trial.distributions)
    distributions: dict[str, Any] = {}
    # The richest trial first, so the listing follows the order the space suggests in.
    for found in sorted(seen, key=len, reverse=True):
        distributions |= {k: v for k, v in found.items() if k not in distributions}
    return distributions


def grid_points(narrowed: Mapping[str, BaseDistribution]) -> list[dict[str, Any]]:
    """Every combination of the choices ``narrowed`` lists (``--sampler grid``).

    Raises:
        FmsearchError: ``narrowed`` lists no choices to make a grid of.
    """
    from optuna.distributions import CategoricalDistribution

    axes = {n: d.choices for n, d in narrowed.items() if isinstance(d, CategoricalDistribution)}
    if not axes:
        raise FmsearchError(
            "--sampler grid: expected a --space-file listing choices (e.g. 'batch_size: [64, "
            "128]'), got " + ("ranges only" if narrowed else "no --space-file")
        )
    return combinations(axes)


def combinations(axes: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of one value per axis (name -> values), as a grid's points."""
    import itertools

    return [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]
