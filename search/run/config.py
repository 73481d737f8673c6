"""A search's options, as asked (:class:`SearchOptions`, flat like ``fmsearch run``'s) and as
validated once (:class:`SearchConfig`: frozen, grouped into stores, budget, training, engine
and promotion, with its :class:`Mode` named). Everything after :func:`check` reads the config,
never the options again.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runners.errors import FmsearchError
from search.engines import engine_class
from search.kinds import runner_for
from search.trials.choices import PLANNED_PRUNER
from spaces import resolve
from spaces.recipes import Recipe, recipe

if TYPE_CHECKING:
    from search.engines._base import Engine

logger = logging.getLogger(__name__)

DEFAULT_TRIALS = 20


@dataclass(frozen=True, kw_only=True)
class SearchOptions:
    """What ``fmsearch run`` is asked (its options, by the same names; see ``fmsearch run
    --help`` for each). ``trials=None`` is the default 20, or a plan from ``budget_hours``.
    ``enqueue``: True starts from the architecture's published configuration, a name from
    that source recipe (``spaces.recipes``), False from nothing, None as ``--enqueue``'s
    default."""

    arch: str
    study_name: str | None = None
    # Stores.
    storage: str | None = None
    tracking_uri: str | None = None
    data_dir: Path | None = None
    # Budget: trials, a time limit, or a plan.
    trials: int | None = None
    timeout: float | None = None
    budget_hours: float | None = None
    refit_epochs: int | None = None
    final_on_all_data: bool = False
    distill: bool = True
    top_k: int | None = None
    # Training.
    max_epochs: int = 10
    patience: int = 3
    subset: int | None = None
    val_size: int = 10_000
    objective: str = "accuracy"
    fixes: Sequence[str] = ()
    space_file: Path | None = None
    precision: str = "auto"
    seed: int | None = None
    deterministic: bool = False
    enqueue: bool | str | None = None
    weights: Path | None = None
    # Engine.
    engine: str = "optuna"
    sampler: str = "tpe"
    pruner: str = "hyperband"
    tuner: str = "hyperband"
    workers: int = 1
    threads: int | None = None
    heartbeat_interval: int = 10
    # Promotion.
    promote: bool = True
    register_as: str | None = None
    max_params: int | None = None
    max_latency_ms: float | None = None
    quiet: bool = False


class Mode(enum.Enum):
    """How a search spends its budget."""

    TRIALS = "trials"  # n trials, however long they take
    TIMEOUT = "timeout"  # up to n trials, none started once the time limit has passed
    PLAN = "plan"  # --budget-hours planned into a ladder of fidelities and finals
    GRID = "grid"  # every point of a grid once


@dataclass(frozen=True, kw_only=True)
class Stores:
    """Where the study, the MLflow records and the data live (None: the defaults)."""

    storage: str | None
    tracking_uri: str | None
    data_dir: Path | None


@dataclass(frozen=True, kw_only=True)
class Budget:
    """What the search may spend: ``n_trials`` (a plan's are its own), and ``seconds`` from
    the command's start (None: no limit), after which running trials end too when ``hard``."""

    mode: Mode
    n_trials: int
    seconds: float | None
    hard: bool
    budget_hours: float | None
    refit_epochs: int | None
    final_on_all_data: bool
    distill: bool
    top_k: int | None


@dataclass(frozen=True, kw_only=True)
class Training:
    """How each trial trains, and what it is judged on."""

    max_epochs: int
    patience: int
    subset: int | None
    val_size: int
    objectives: tuple[str, ...]
    fixed: dict[str, Any]
    narrowed: dict[str, Any]
    space_file: Path | None
    precision: str
    seed: int | None
    deterministic: bool
    weights: str | None

    @property
    def objective(self) -> str:
        """``--objective`` as given: the objectives, comma-separated."""
        return ",".join(self.objectives)


@dataclass(frozen=True, kw_only=True)
class EngineChoice:
    """What picks the trials (a class from ``search.engines.ENGINES``) and where they run."""

    name: str
    cls: type[Engine]
    sampler: str
    pruner: str
    tuner: str
    workers: int
    threads: int | None
    heartbeat_interval: int


@dataclass(frozen=True, kw_only=True)
class PromotionChoice:
    """Whether and under which name the winner is registered, and the limits it must meet."""

    enabled: bool
    register_as: str | None
    max_params: int | None
    max_latency_ms: float | None


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """One search, validated: what every phase after :func:`check` reads.

    Attributes:
        enqueue: What a new study starts from: the space's published configurations (True),
            the recipe of that name (``recipe``), or nothing (False).
        grid: The points of a ``Mode.GRID`` search.
    """

    arch: str
    space: Any
    study_name: str
    stores: Stores
    budget: Budget
    training: Training
    engine: EngineChoice
    promotion: PromotionChoice
    enqueue: bool | str
    recipe: Recipe | None
    grid: tuple[dict[str, Any], ...]
    quiet: bool
    # A planned search over several architectures searches one (search.run.planning).
    requested: str | None = None
    choice: Any = None

    @property
    def mode(self) -> Mode:
        return self.budget.mode

    @property
    def planned(self) -> bool:
        return self.budget.mode is Mode.PLAN


def time_limit(timeout: float | None, budget_hours: float | None) -> tuple[float | None, bool]:
    """Seconds to the end of the search, and whether running trials end then too."""
    if timeout is not None and budget_hours is not None:
        raise FmsearchError(
            f"expected --timeout or --budget-hours, got both (--timeout {timeout:g}, "
            f"--budget-hours {budget_hours:g})"
        )
    if budget_hours is not None:
        return budget_hours * 3600, True
    return timeout, False


def check(options: SearchOptions, *, grid: Sequence[dict[str, Any]] | None = None) -> SearchConfig:
    """Everything that can be wrong with the options, refused before the study exists; the
    engine's and the plan's adjustments (sampler, pruner, study name) made. ``grid``: the
    points of a grid that comes from elsewhere than a space file (fine-tuning).

    Raises:
        FmsearchError: Options that cannot work together, in one line.
    """
    from search.trials.choices import check_requirements, parse_objectives

    o = options
    engine = engine_class(o.engine)
    seconds, hard = time_limit(o.timeout, o.budget_hours)
    if o.deterministic and o.seed is None:
        raise FmsearchError("--deterministic repeats seeded trials: expected --seed N too")
    space = resolve(o.arch)
    check_requirements(space, arch=o.arch)
    objectives = parse_objectives(o.objective, space, arch=o.arch)
    planned = _planned(o, space=space, objectives=objectives, engine=engine)
    named_recipe = _recipe(o)
    fixed, narrowed = _pinned_and_narrowed(o, space=space, planned=planned, recipe=named_recipe)
    changes: dict[str, Any] = {}
    if o.enqueue is None:
        changes["enqueue"] = engine.fills_pool and o.space_file is None
    changes |= engine.check(o, space=space, objectives=objectives)
    _check_plan_only(o, planned=planned)
    if o.refit_epochs and len(objectives) > 1:
        raise FmsearchError(
            "--refit-epochs: expected --objective accuracy (a refit is judged on accuracy "
            f"alone), got --objective {o.objective}"
        )
    if planned and changes.get("pruner", o.pruner) != "none":
        changes["pruner"] = PLANNED_PRUNER
    if len(objectives) > 1 and changes.get("pruner", o.pruner) != "none":
        logger.info("pruning is off: Optuna cannot prune multi-objective studies")
        changes["pruner"] = "none"
    if grid is None and o.sampler == "grid":
        grid = _grid(o, narrowed=narrowed, planned=planned, engine=engine)
    o = replace(o, **changes)
    mode = (
        Mode.PLAN if planned else Mode.GRID if grid
        else Mode.TIMEOUT if seconds is not None else Mode.TRIALS
    )  # fmt: skip
    return _config(o, space=space, engine=engine, mode=mode, seconds=seconds, hard=hard,
                   objectives=objectives, fixed=fixed, narrowed=narrowed, grid=grid or (),
                   recipe=named_recipe)  # fmt: skip


def _config(o: SearchOptions, *, space, engine, mode: Mode, seconds, hard, objectives, fixed,
            narrowed, grid, recipe) -> SearchConfig:  # fmt: skip
    """The checked options, grouped."""
    from search.trials.spaces import pretrained_weights

    return SearchConfig(
        arch=o.arch,
        space=space,
        study_name=o.study_name or o.arch.replace(",", "-"),
        stores=Stores(storage=o.storage, tracking_uri=o.tracking_uri, data_dir=o.data_dir),
        budget=Budget(
            mode=mode,
            n_trials=len(grid) or o.trials or DEFAULT_TRIALS,
            seconds=seconds,
            hard=hard,
            budget_hours=o.budget_hours,
            refit_epochs=o.refit_epochs,
            final_on_all_data=o.final_on_all_data,
            distill=o.distill,
            top_k=o.top_k,
        ),
        training=Training(
            max_epochs=o.max_epochs,
            patience=o.patience,
            subset=o.subset,
            val_size=o.val_size,
            objectives=objectives,
            fixed=fixed,
            narrowed=narrowed,
            space_file=o.space_file,
            precision=o.precision,
            seed=o.seed,
            deterministic=o.deterministic,
            weights=pretrained_weights(space, given=o.weights, arch=o.arch),
        ),
        engine=EngineChoice(
            name=o.engine,
            cls=engine,
            sampler=o.sampler,
            pruner=o.pruner,
            tuner=o.tuner,
            workers=o.workers,
            threads=o.threads,
            heartbeat_interval=o.heartbeat_interval,
        ),
        promotion=PromotionChoice(
            enabled=o.promote,
            register_as=o.register_as,
            max_params=o.max_params,
            max_latency_ms=o.max_latency_ms,
        ),
        enqueue=o.enqueue,
        recipe=recipe,
        grid=tuple(grid),
        quiet=o.quiet,
    )


def _pinned_and_narrowed(o: SearchOptions, *, space, planned: bool, recipe: Recipe | None):
    """``--fix`` and ``--space-file`` against the space's distributions; a short Keras
    search pins what few epochs cannot learn (``short_search_fixes``)."""
    from search.trials.choices import describe_space
    from search.trials.overrides import load_space_file, parse_fixed
    from spaces.common import short_search_fixes

    distributions = describe_space(space) if o.fixes or o.space_file else {}
    fixed = parse_fixed(o.fixes, distributions)
    narrowed = load_space_file(o.space_file, distributions) if o.space_file else {}
    if runner_for(space).trains_in_epochs and not planned:
        # A recipe's augmentation is part of it: a short search keeps it searchable.
        named = {*fixed, *narrowed, *(recipe.params if recipe else ())}
        fixed = {**short_search_fixes(o.max_epochs, named=named), **fixed}
    return fixed, narrowed


def _check_plan_only(o: SearchOptions, *, planned: bool) -> None:
    """Refuse the options only a plan has, on a search that is not planned."""
    plan_only = {"--final-on-all-data": o.final_on_all_data, "--top-k": o.top_k is not None}
    unplanned = "no --budget-hours" if o.budget_hours is None else "a search that is not planned"
    for option, given in plan_only.items():
        if given and not planned:
            raise FmsearchError(
                f"{option}: expected a planned search (--budget-hours without --trials, a "
                "Keras architecture, the Optuna engine, one objective, no --refit-epochs), "
                f"got {unplanned}"
            )


def _recipe(options: SearchOptions) -> Recipe | None:
    """The recipe ``--enqueue NAME`` names, checked against ``--arch``."""
    if not isinstance(options.enqueue, str):
        return None
    try:
        found = recipe(options.enqueue)
    except KeyError as e:
        raise FmsearchError(f"--enqueue: {e.args[0]}") from None
    if found.arch != options.arch:
        raise FmsearchError(
            f"--enqueue {options.enqueue}: expected --arch {found.arch} (the recipe's), got "
            f"--arch {options.arch}"
        )
    return found


def _grid(options: SearchOptions, *, narrowed, planned: bool, engine) -> list[dict[str, Any]]:
    """--sampler grid: the combinations of the space file's choices, which the pool runs
    each once (a study resumed with the same grid runs none again)."""
    from search.trials.choices import grid_points

    if not engine.fills_pool or planned:
        raise FmsearchError(
            "--sampler grid: expected the Optuna engine and --trials (or none), got "
            + (f"--engine {options.engine}" if not engine.fills_pool else "a planned search")
        )
    points = grid_points(narrowed)
    if options.trials is not None and options.trials != len(points):
        raise FmsearchError(
            f"--sampler grid runs every point of its grid: expected --trials {len(points)} or "
            f"none, got --trials {options.trials}"
        )
    return points


def _planned(options: SearchOptions, *, space, objectives: tuple[str, ...], engine) -> bool:
    """Whether the search is planned from --budget-hours (see the option's help)."""
    if options.budget_hours is None or options.trials is not None:
        return False
    why_not = (
        "a scikit-learn architecture" if not runner_for(space).trains_in_epochs
        else f"--engine {options.engine}" if not engine.fills_pool
        else "a multi-objective search" if len(objectives) > 1
        # The finals' ensemble decision weighs accuracy on validation.
        else f"--objective {objectives[0]}" if objectives[0] != "accuracy"
        else "--refit-epochs (the plan trains its winners on all images itself)"
        if options.refit_epochs else None
    )  # fmt: skip
    if why_not:
        logger.info("--budget-hours bounds the trials, no plan: %s", why_not)
    return why_not is None
