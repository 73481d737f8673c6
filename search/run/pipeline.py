"""One ``fmsearch run``, phase by phase: check the options, open the study, run its trials
(Optuna's pool here or in worker processes, or Keras Tuner), then the refit or a plan's
finals, promotion and the report. :func:`search.api.search` is its entry point.

It logs its progress (``logging``: the plan, the estimate, the finals); the results come back
as objects, which the CLI prints.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna

from runners.data import FashionMNIST, Split
from runners.errors import FmsearchError
from search.budget.plan import Plan
from search.engines import engine_class
from search.engines._base import Engine
from search.kinds import runner_for
from search.names import FINAL_ON_ALL_DATA_TAG, REFIT_ATTR
from search.outcome import StudyOutcome
from search.run.workers import SearchSettings
from search.storage.urls import redact
from search.tracking import Tracker
from search.trials.choices import PLANNED_PRUNER
from spaces import resolve
from spaces.common import AUGMENTED_MIN_EPOCHS, short_run_start, short_search_fixes
from spaces.families import Families
from spaces.recipes import Recipe, recipe

logger = logging.getLogger(__name__)

# Longer than this and `run --trials` suggests a --budget-hours command instead.
LONG_SEARCH_SECONDS = 2 * 3600
# Fewer training images than this in all (trials x epochs x images) and `run --trials` prints
# no estimate: measuring (a traced model, trained for a few seconds) costs about as much as
# such a search on the fast models, and the search takes under two minutes on the slowest here.
ESTIMATE_MIN_IMAGES = 10_000
DEFAULT_TRIALS = 20


@dataclass(frozen=True, kw_only=True)
class SearchOptions:
    """What ``fmsearch run`` is asked (its options, by the same names; see ``fmsearch run
    --help`` for each). ``trials=None`` is the default 20, or a plan from ``budget_hours``.
    ``enqueue``: True starts from the architecture's published configuration, a name from
    that source recipe (``spaces.recipes``), False from nothing, None as ``--enqueue``'s
    default."""

    arch: str
    trials: int | None = None
    study_name: str | None = None
    storage: str | None = None
    tracking_uri: str | None = None
    sampler: str = "tpe"
    pruner: str = "hyperband"
    seed: int | None = None
    deterministic: bool = False
    timeout: float | None = None
    budget_hours: float | None = None
    max_epochs: int = 10
    patience: int = 3
    subset: int | None = None
    val_size: int = 10_000
    objective: str = "accuracy"
    fixes: Sequence[str] = ()
    space_file: Path | None = None
    precision: str = "auto"
    enqueue: bool | str | None = None
    refit_epochs: int | None = None
    final_on_all_data: bool = False
    top_k: int | None = None
    weights: Path | None = None
    engine: str = "optuna"
    tuner: str = "hyperband"
    workers: int = 1
    threads: int | None = None
    heartbeat_interval: int = 10
    data_dir: Path | None = None
    register_as: str | None = None
    max_params: int | None = None
    max_latency_ms: float | None = None
    promote: bool = True
    quiet: bool = False


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


@dataclass(frozen=True)
class Checked:
    """The options as the search will use them, checked before anything is created."""

    options: SearchOptions
    engine: type[Engine]
    space: Any
    objectives: tuple[str, ...]
    planned: bool
    fixed: dict[str, Any]
    narrowed: dict[str, Any]
    n_trials: int
    timeout: float | None
    hard_timeout: bool
    grid: tuple[dict[str, Any], ...] = ()
    recipe: Recipe | None = None
    weights: str | None = None


def check(options: SearchOptions, *, grid: Sequence[dict[str, Any]] | None = None) -> Checked:
    """Everything that can be wrong with the options, refused before the study exists;
    the engine's and the plan's adjustments (sampler, pruner, study name) made. ``grid``:
    the points of a grid that comes from elsewhere than a space file (fine-tuning)."""
    from search.trials.choices import check_requirements, describe_space, parse_objectives
    from search.trials.overrides import load_space_file, parse_fixed
    from search.trials.spaces import pretrained_weights

    o = options
    engine = engine_class(o.engine)
    timeout, hard_timeout = time_limit(o.timeout, o.budget_hours)
    if o.deterministic and o.seed is None:
        raise FmsearchError("--deterministic repeats seeded trials: expected --seed N too")
    space = resolve(o.arch)
    runner = runner_for(space)
    check_requirements(space, arch=o.arch)
    objectives = parse_objectives(o.objective, space, arch=o.arch)
    planned = _planned(o, space=space, objectives=objectives, engine=engine)
    named_recipe = _recipe(o)
    distributions = describe_space(space) if o.fixes or o.space_file else {}
    fixed = parse_fixed(o.fixes, distributions)
    narrowed = load_space_file(o.space_file, distributions) if o.space_file else {}
    if runner.trains_in_epochs and not planned:
        # A recipe's augmentation is part of it: a short search keeps it searchable.
        named = {*fixed, *narrowed, *(named_recipe.params if named_recipe else ())}
        fixed = {**short_search_fixes(o.max_epochs, named=named), **fixed}
    changes: dict[str, Any] = {}
    if o.enqueue is None:
        changes["enqueue"] = engine.fills_pool and o.space_file is None
    changes |= engine.check(o, space=space, objectives=objectives)
    if planned and changes.get("pruner", o.pruner) != "none":
        changes["pruner"] = PLANNED_PRUNER
    plan_only = {"--final-on-all-data": o.final_on_all_data, "--top-k": o.top_k is not None}
    unplanned = "no --budget-hours" if o.budget_hours is None else "a search that is not planned"
    for option, given in plan_only.items():
        if given and not planned:
            raise FmsearchError(
                f"{option}: expected a planned search (--budget-hours without --trials, a "
                "Keras architecture, the Optuna engine, one objective, no --refit-epochs), "
                f"got {unplanned}"
            )
    if o.refit_epochs and len(objectives) > 1:
        raise FmsearchError(
            "--refit-epochs: expected --objective accuracy (a refit is judged on accuracy "
            f"alone), got --objective {o.objective}"
        )
    if len(objectives) > 1 and changes.get("pruner", o.pruner) != "none":
        logger.info("pruning is off: Optuna cannot prune multi-objective studies")
        changes["pruner"] = "none"
    if grid is None:
        grid = (
            _grid(o, narrowed=narrowed, planned=planned, engine=engine)
            if o.sampler == "grid"
            else []
        )
    return Checked(
        options=replace(o, **changes),
        engine=engine,
        space=space,
        objectives=objectives,
        planned=planned,
        fixed=fixed,
        narrowed=narrowed,
        n_trials=len(grid) or o.trials or DEFAULT_TRIALS,
        timeout=timeout,
        hard_timeout=hard_timeout,
        grid=tuple(grid),
        recipe=named_recipe,
        weights=pretrained_weights(space, given=o.weights, arch=o.arch),
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


def starts(space, *, max_epochs: int, planned: bool, recipe: Recipe | None = None) -> list[dict]:
    """The configurations a new study starts from: the named recipe as published; or the
    published configuration, and for a short Keras search the same retuned for few
    epochs."""
    if recipe is not None:
        return [dict(recipe.params)]
    families = isinstance(space, Families)
    published = space.starts() if families else [space.DEFAULTS]
    short = runner_for(space).trains_in_epochs and max_epochs < AUGMENTED_MIN_EPOCHS
    if planned or not short:
        return published
    return [*published, *(space.starts(short=True) if families else [short_run_start(space)])]


@dataclass
class Opened:
    """A search's study and what it runs on, once set up."""

    checked: Checked
    tracker: Tracker
    storage: str
    data: FashionMNIST
    split: Split
    settings: SearchSettings
    study: optuna.Study
    run_params: dict[str, Any]
    parent_run_id: str
    started_at: float

    @property
    def options(self) -> SearchOptions:
        return self.checked.options


def open_search(checked: Checked, *, tracker: Tracker, optuna_storage, storage: str,
                started_at: float) -> Opened:  # fmt: skip
    """Load the data, create (or resume) the study with its starting configurations, and
    open its MLflow parent run."""
    from runners.data import load_fashion_mnist
    from search.engines.lifecycle import open_study_run
    from search.run.workers import prepare_study

    o = checked.options
    data = load_fashion_mnist(data_dir=o.data_dir)
    settings = SearchSettings.from_distributions(
        sampler=o.sampler, pruner=o.pruner, max_epochs=o.max_epochs, patience=o.patience,
        subset=o.subset, val_size=o.val_size, seed=o.seed, fixed=checked.fixed,
        narrowed=checked.narrowed, precision=o.precision, deterministic=o.deterministic,
        weights=checked.weights,
    )  # fmt: skip
    # Split before the study exists, so that an impossible --subset creates nothing.
    split = settings.split(data)
    first = starts(checked.space, max_epochs=o.max_epochs, planned=checked.planned,
                   recipe=checked.recipe)  # fmt: skip
    # They count toward --trials; a planned search runs them all on its lowest rung.
    first = (first if checked.planned else first[: checked.n_trials]) if o.enqueue else []
    pool = max(o.workers, 1) if checked.planned else checked.n_trials
    baseline = (o.enqueue if isinstance(o.enqueue, str) else "published") if first else None
    if checked.grid:
        # The pool is the grid: each point enqueued once per study, nothing else added.
        first, pool, baseline = list(checked.grid), 0, None
    study = prepare_study(
        storage=optuna_storage,
        storage_url=storage,
        study_name=o.study_name or o.arch.replace(",", "-"),
        arch=o.arch,
        objectives=checked.objectives,
        settings=settings,
        # Keras Tuner, not the pool, decides what runs: it enqueues each trial itself. A
        # planned search's ladder adds its own, one per free worker at a time.
        n_trials=pool if checked.engine.fills_pool else 0,
        enqueue=first,
        baseline=baseline,
    )
    logger.info(
        "study %s: %s, %s, up to %d epochs",
        study.study_name,
        "planned from the budget" if checked.planned else f"{checked.n_trials} trials",
        f"{o.workers} worker processes" if o.workers != 1 else "in this process",
        o.max_epochs,
    )
    run_params = _run_params(o, engine=checked.engine, fixed=checked.fixed,
                             train_images=len(split.x_train), storage=storage,
                             data_source=data.source)  # fmt: skip
    if checked.space.BACKBONE is not None:  # where its backbone's weights came from
        run_params["weights"] = checked.weights or "none: trained from scratch"
    _, parent_run_id = open_study_run(study, arch=o.arch, tracker=tracker, params=run_params)
    return Opened(checked=checked, tracker=tracker, storage=storage, data=data, split=split,
                  settings=settings, study=study, run_params=run_params,
                  parent_run_id=parent_run_id, started_at=started_at)  # fmt: skip


def _run_params(o: SearchOptions, *, engine: type[Engine], fixed, train_images: int, storage: str,
                data_source: str) -> dict[str, Any]:  # fmt: skip
    """The search's settings, as params of its parent run."""
    return {
        "sampler": o.sampler,
        "pruner": o.pruner,
        "max_epochs": o.max_epochs,
        "patience": o.patience,
        "subset": train_images,
        "val_size": o.val_size,
        "seed": o.seed,
        "objective": o.objective,
        "fixed": ", ".join(f"{k}={v}" for k, v in fixed.items()) or None,
        "space_file": str(o.space_file) if o.space_file else None,
        "precision": o.precision,
        "budget_hours": o.budget_hours,
        "refit_epochs": o.refit_epochs,
        "engine": o.engine,
        "tuner": None,
        **engine.run_params(o),
        "storage": redact(storage),
        "data_source": data_source,
        "workers": o.workers,
    }


def with_progress(*, n_trials, quiet, search):
    """``search(progress)`` with a progress bar over ``n_trials`` trials, logs above it."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from search.run.progress import ProgressBar

    progress = ProgressBar(total=n_trials, disable=True if quiet else None)
    try:
        with logging_redirect_tqdm():
            return search(progress)
    finally:
        progress.close()


def work_here(*, study, arch, objectives, settings: SearchSettings, split, tracker, timeout,
              hard_timeout, n_trials, quiet, run_params, refit_split=None, refit=None,
              ladder=None, callbacks=()) -> StudyOutcome:  # fmt: skip
    """Run the study's pool (or ``refit``) in this process, with a progress bar."""
    from search.engines.optuna_pool import run_worker

    def search(progress):
        return run_worker(
            study=study, arch=arch, split=split, tracker=tracker,
            max_epochs=settings.max_epochs, timeout=timeout, hard_timeout=hard_timeout,
            seed=settings.seed, patience=settings.patience or None, objectives=objectives,
            narrowed=settings.distributions(), precision=settings.precision,
            deterministic=settings.deterministic, run_params=run_params,
            callbacks=[progress, *callbacks], on_epoch=progress.epoch,
            refit_split=refit_split, refit=refit, ladder=ladder,
        )  # fmt: skip

    return with_progress(n_trials=n_trials, quiet=quiet, search=search)


def full_split(data: FashionMNIST, *, settings: SearchSettings, split: Split) -> Split:
    """All training images and ``split``'s validation images (``split`` itself without
    --subset): what refit trials train on."""
    from runners.data import split_train_val

    if settings.subset is None:
        return split
    return split_train_val(data.x_train, data.y_train, val_size=settings.val_size, subset=None)


@dataclass(frozen=True)
class RefitOutcome:
    """A refit asked for: the trial it refits and the refit trial (None: it did not run)."""

    of: int
    trial: optuna.trial.FrozenTrial | None


def refit_best(s: Opened, *, epochs: int) -> RefitOutcome | None:
    """Train the study's best configuration again on all training images, in this process
    (None: the best trial is a refit, or has one already)."""
    from search.outcome import refit_candidate

    study = s.study
    refit = refit_candidate(study, epochs=epochs)
    if refit is None:
        logger.info("no refit: the best trial is a refit, or has one already")
        return None
    full = full_split(s.data, settings=s.settings, split=s.split)
    logger.info("refit: trial %d's configuration on %s training images, up to %d epochs",
                refit.of, f"{len(full.x_train):,}", epochs)  # fmt: skip
    # --timeout and --budget-hours bound the search, not the refit that follows it.
    work_here(study=study, arch=s.options.arch, objectives=("accuracy",), settings=s.settings,
              split=s.split, tracker=s.tracker, timeout=None, hard_timeout=False, n_trials=1,
              quiet=s.options.quiet, run_params=s.run_params, refit_split=full,
              refit=refit)  # fmt: skip
    done = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(REFIT_ATTR) == refit.of]
    return RefitOutcome(of=refit.of, trial=done[-1] if done else None)


def make_plan(s: Opened) -> tuple[Plan, Any]:
    """Measure this host, plan the budget, print and record the plan; the plan and ladder."""
    from runners.precision import resolve_policy
    from search.budget.finals import make_ladder, measure_host, record_plan
    from search.budget.plan import TOP_K
    from search.budget.plan import make_plan as plan_budget

    o = s.options
    throughput = measure_host(arch=o.arch, split=s.split, fixed=s.settings.fixed,
                              policy=resolve_policy(s.settings.precision))  # fmt: skip
    plan = plan_budget(
        budget_seconds=o.budget_hours * 3600,
        train_images_per_s=throughput.train_images_per_s,
        eval_images_per_s=throughput.eval_images_per_s,
        train_images=len(s.split.x_train),
        val_images=len(s.split.x_val),
        started_at=s.started_at,
        probe_seconds=time.time() - s.started_at,
        max_rung_epochs=s.settings.max_epochs,
        retrain_on_all=o.final_on_all_data,
        top_k=TOP_K if o.top_k is None else o.top_k,
    )
    logger.info("%s", plan.describe(arch=o.arch))
    record_plan(s.study, tracker=s.tracker, parent_run_id=s.parent_run_id, plan=plan, arch=o.arch)
    ladder = make_ladder(plan, data=s.data, full=s.split, val_size=s.settings.val_size)
    return plan, ladder


def estimate(s: Opened, *, n_trials: int) -> None:
    """Print (and record) what --trials N costs at most on this host, measured first; a
    search smaller than the measurement (``ESTIMATE_MIN_IMAGES``) is not measured."""
    from runners.precision import resolve_policy
    from search.budget.finals import measure_host
    from search.budget.plan import estimate_trials, span

    o, split = s.options, s.split
    images = n_trials * o.max_epochs * len(split.x_train)
    if images < ESTIMATE_MIN_IMAGES:
        logger.debug("no estimate: %d training images in all cost less than measuring", images)
        return
    rate = measure_host(arch=o.arch, split=split, fixed=s.settings.fixed, seconds=1.0,
                        policy=resolve_policy(s.settings.precision))  # fmt: skip
    seconds = estimate_trials(
        n_trials=n_trials, max_epochs=o.max_epochs, train_images=len(split.x_train),
        val_images=len(split.x_val), train_images_per_s=rate.train_images_per_s,
        eval_images_per_s=rate.eval_images_per_s, workers=max(o.workers, 1),
    )  # fmt: skip
    logger.info(
        "estimate: %d trials of up to %d epochs on %s images take up to %s here (%s training "
        "images/s; pruning and --patience end most trials sooner)",
        n_trials, o.max_epochs, f"{len(split.x_train):,}", span(seconds),
        f"{rate.train_images_per_s:,.0f}",
    )  # fmt: skip
    if seconds > LONG_SEARCH_SECONDS:
        logger.info("to fit a time budget instead: fmsearch run --arch %s --budget-hours 2", o.arch)
    try:
        s.tracker.log_metrics(s.parent_run_id, {"estimated_max_seconds": seconds})
    except Exception as exc:
        logger.warning("the estimate was not recorded: %s", exc)


def _timed_refit(s: Opened, *, refit_split: Split):
    """``run(refit, seconds)``: one refit on ``refit_split`` in this process, ended after the
    epoch that passes ``seconds`` (what the plan's finals and retraining call)."""

    def run(refit, seconds):
        return work_here(study=s.study, arch=s.options.arch, objectives=("accuracy",),
                         settings=s.settings, split=s.split, tracker=s.tracker, timeout=seconds,
                         hard_timeout=True, n_trials=1, quiet=s.options.quiet,
                         run_params=s.run_params, refit_split=refit_split,
                         refit=refit)  # fmt: skip

    return run


def finals(s: Opened, *, plan: Plan) -> None:
    """Train the plan's top configurations on all the images, in this process, then keep
    their ensemble or flip TTA if either wins on validation."""
    from search.budget.ensemble import combine_finals
    from search.budget.finals import run_finals

    trained = run_finals(study=s.study, plan=plan, run=_timed_refit(s, refit_split=s.split))
    if trained:
        logger.info("final training of trials %s on all images", ", ".join(map(str, trained)))
    choice = combine_finals(study=s.study, tracker=s.tracker, split=s.split,
                            parent_run_id=s.parent_run_id, arch=s.options.arch)  # fmt: skip
    if choice is not None:
        chosen = choice.chosen
        logger.info(
            "%s%s: val_accuracy %.4f%s", "kept " if choice.combined else "", chosen.describe(),
            chosen.val_accuracy, "" if choice.combined else " (no ensemble or flip TTA beat it)",
        )  # fmt: skip


def retrain(s: Opened, *, plan: Plan) -> None:
    """--final-on-all-data: the chosen model's members trained again with the validation
    images, in this process, and the model that stands in for it."""
    from search.budget.ensemble import add_stand_in
    from search.budget.finals import retrain_on_all_data, with_validation_in_training
    from search.promotion.promote import select_candidate

    o = s.options
    everything = with_validation_in_training(s.split)
    run = _timed_refit(s, refit_split=everything)
    chosen = select_candidate(s.study, max_params=o.max_params, max_latency_ms=o.max_latency_ms)
    retrained = retrain_on_all_data(study=s.study, plan=plan, chosen=chosen, run=run)
    add_stand_in(study=s.study, tracker=s.tracker, chosen=chosen, retrained=retrained,
                 parent_run_id=s.parent_run_id, arch=o.arch)  # fmt: skip
    outcome = (", ".join(f"trial {m} as trial {n}" for m, n in retrained.items())
               or "none: the time left did not hold a retraining")  # fmt: skip
    s.tracker.set_tags(s.parent_run_id, {FINAL_ON_ALL_DATA_TAG: outcome})
    logger.info("retrained on %s images (validation included): %s",
                f"{len(everything.x_train):,}", outcome)  # fmt: skip


def check_plan(s: Opened, *, plan: Plan) -> None:
    """Say how the plan's estimate compared with what the command took."""
    from search.budget.finals import record_outcome

    try:
        figures = record_outcome(tracker=s.tracker, parent_run_id=s.parent_run_id, plan=plan)
    except Exception as exc:
        logger.warning("the plan's outcome was not recorded: %s", exc)
        return
    logger.info(
        "plan: estimated %.0f s, took %.0f s (%+.0f%%; budget %.0f s)",
        figures["plan_estimated_seconds"], figures["plan_actual_seconds"],
        100 * figures["plan_error"], plan.budget_seconds,
    )  # fmt: skip


def refresh_report(*, study, tracker, register_as: str | None) -> None:
    """The study's report on its parent run; a report that cannot be drawn costs a warning."""
    from search.insight.report import publish_report
    from search.promotion.promote import default_model_name

    try:
        publish_report(
            study=study, tracker=tracker, model_name=register_as or default_model_name(study)
        )
    except Exception as exc:
        logger.warning("the study report was not refreshed: %s", exc, exc_info=True)
