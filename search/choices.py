"""The CLI's vocabulary: samplers and pruners by name, and what each space searches.

The CLI's strings become Optuna objects here, once.

Kept free of heavy imports so that ``fmsearch --help`` lists the choices instantly.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

from runners.errors import FmsearchError

if TYPE_CHECKING:
    import optuna

SAMPLERS = ("tpe", "random", "cmaes", "gp")
PRUNERS = ("hyperband", "median", "none")


def make_sampler(name: str, *, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler called ``name`` (one of ``SAMPLERS``).

    Raises:
        FmsearchError: Unknown name, or the GP sampler without PyTorch.
    """
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        # CMA-ES handles only numeric parameters; the rest go to the independent sampler.
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            raise FmsearchError(
                "--sampler gp needs PyTorch: pip install 'fmsearch[gp]' "
                "(the CPU build is enough: --index-url https://download.pytorch.org/whl/cpu)"
            ) from exc
        return optuna.samplers.GPSampler(seed=seed)
    raise FmsearchError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")


def make_pruner(name: str, *, max_epochs: int) -> optuna.pruners.BasePruner:
    """The Optuna pruner called ``name`` (one of ``PRUNERS``), sized to ``max_epochs``.

    Raises:
        FmsearchError: Unknown name.
    """
    import optuna

    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max_epochs, reduction_factor=3
        )
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise FmsearchError(f"--pruner must be one of {', '.join(PRUNERS)}, got {name!r}")


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
