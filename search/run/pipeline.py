"""One ``fmsearch run``'s phases after its options are checked (:mod:`search.run.config`):
open the study, plan or estimate, run trials here, then the refit or a plan's finals and the
report. :mod:`search.run.orchestrator` calls them in order.

It logs its progress (``logging``: the plan, the estimate, the finals); the results come back
as objects, which the CLI prints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import optuna

from runners.data import FashionMNIST, Split
from search.budget.plan import Plan
from search.engines._base import Engine
from search.kinds import runner_for
from search.names import FINAL_ON_ALL_DATA_TAG, REFIT_ATTR
from search.outcome import StudyOutcome
from search.run.config import SearchConfig
from search.run.workers import SearchSettings
from search.storage.urls import redact
from search.tracking import Tracker
from spaces.common import AUGMENTED_MIN_EPOCHS, short_run_start
from spaces.families import Families
from spaces.recipes import Recipe

logger = logging.getLogger(__name__)

# Longer than this and `run --trials` suggests a --budget-hours command instead.
LONG_SEARCH_SECONDS = 2 * 3600
# Fewer training images than this in all (trials x epochs x images) and `run --trials` prints
# no estimate: measuring (a traced model, trained for a few seconds) costs about as much as
# such a search on the fast models, and the search takes under two minutes on the slowest here.
ESTIMATE_MIN_IMAGES = 10_000


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

    config: SearchConfig
    tracker: Tracker
    storage: str
    data: FashionMNIST
    split: Split
    settings: SearchSettings
    study: optuna.Study
    run_params: dict[str, Any]
    parent_run_id: str
    started_at: float


def open_search(config: SearchConfig, *, tracker: Tracker, optuna_storage, storage: str,
                started_at: float) -> Opened:  # fmt: skip
    """Load the data, create (or resume) the study with its starting configurations, and
    open its MLflow parent run."""
    from runners.data import load_fashion_mnist
    from search.engines.lifecycle import open_study_run
    from search.run.planning import choose_family, searches_several
    from search.run.workers import prepare_study

    c = config
    data = load_fashion_mnist(data_dir=c.stores.data_dir)
    settings = _settings(c)
    # Split before the study exists, so that an impossible --subset creates nothing.
    split = settings.split(data)
    if searches_several(c):
        c = choose_family(c, split=split, optuna_storage=optuna_storage, started_at=started_at)
        settings = _settings(c)  # the chosen architecture's pinned values, by its own names
    first, pool, baseline = _pool(c)
    study = prepare_study(
        storage=optuna_storage,
        storage_url=storage,
        study_name=c.study_name,
        arch=c.arch,
        objectives=c.training.objectives,
        settings=settings,
        # An engine that asks for each trial enqueues them itself. A planned search's
        # ladder adds its own, one per free worker at a time.
        n_trials=pool if c.engine.cls.fills_pool else 0,
        enqueue=first,
        baseline=baseline,
    )
    workers = c.engine.workers
    logger.info(
        "study %s: %s, %s, up to %d epochs",
        study.study_name,
        "planned from the budget" if c.planned else f"{c.budget.n_trials} trials",
        f"{workers} worker processes" if workers != 1 else "in this process",
        c.training.max_epochs,
    )
    run_params = _run_params(c, train_images=len(split.x_train), storage=storage,
                             data_source=data.source)  # fmt: skip
    _, parent_run_id = open_study_run(study, arch=c.arch, tracker=tracker, params=run_params)
    return Opened(config=c, tracker=tracker, storage=storage, data=data, split=split,
                  settings=settings, study=study, run_params=run_params,
                  parent_run_id=parent_run_id, started_at=started_at)  # fmt: skip


def _settings(c: SearchConfig) -> SearchSettings:
    """What every worker of ``c``'s study needs, kept with the study."""
    t = c.training
    return SearchSettings.from_distributions(
        sampler=c.engine.sampler, pruner=c.engine.pruner, max_epochs=t.max_epochs,
        patience=t.patience, subset=t.subset, val_size=t.val_size, seed=t.seed, fixed=t.fixed,
        narrowed=t.narrowed, precision=t.precision, deterministic=t.deterministic,
        weights=t.weights,
    )  # fmt: skip


def _pool(c: SearchConfig) -> tuple[list[dict[str, Any]], int, str | None]:
    """What a new study's pool starts with, how many trials it holds, and the baseline's
    label (None: no baseline)."""
    if c.grid:
        # The pool is the grid: each point enqueued once per study, nothing else added.
        return list(c.grid), 0, None
    if not c.enqueue:
        first = []
    else:
        first = starts(c.space, max_epochs=c.training.max_epochs, planned=c.planned,
                       recipe=c.recipe)  # fmt: skip
    # They count toward --trials; a planned search runs them all on its lowest rung.
    first = first if c.planned else first[: c.budget.n_trials]
    pool = max(c.engine.workers, 1) if c.planned else c.budget.n_trials
    baseline = (c.enqueue if isinstance(c.enqueue, str) else "published") if first else None
    return first, pool, baseline


def _run_params(c: SearchConfig, *, train_images: int, storage: str,
                data_source: str) -> dict[str, Any]:  # fmt: skip
    """The search's settings, as params of its parent run."""
    t = c.training
    params = {
        "sampler": c.engine.sampler,
        "pruner": c.engine.pruner,
        "max_epochs": t.max_epochs,
        "patience": t.patience,
        "subset": train_images,
        "val_size": t.val_size,
        "seed": t.seed,
        "objective": t.objective,
        "fixed": ", ".join(f"{k}={v}" for k, v in t.fixed.items()) or None,
        "space_file": str(t.space_file) if t.space_file else None,
        "precision": t.precision,
        "budget_hours": c.budget.budget_hours,
        "refit_epochs": c.budget.refit_epochs,
        "engine": c.engine.name,
        "tuner": None,
        **c.engine.cls.run_params(c),
        "storage": redact(storage),
        "data_source": data_source,
        "workers": c.engine.workers,
    }
    if c.requested is not None:  # --arch auto: what was asked, and what each family promised
        params["requested_arch"] = c.requested
    if c.choice is not None:
        params["expected_accuracy"] = ", ".join(
            f"{f} {e:.4f}" for f, e in c.choice.expected.items() if e is not None
        )
    if c.space.BACKBONE is not None:  # where its backbone's weights came from
        params["weights"] = t.weights or "none: trained from scratch"
    return params


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
              hard_timeout, n_trials, quiet, run_params, engine: Engine | None = None,
              refit_split=None, refit=None, ladder=None, callbacks=()) -> StudyOutcome:  # fmt: skip
    """Run ``engine``'s trials in this process, with a progress bar; by default the study's
    pool (or ``refit``)."""
    from search.engines.lifecycle import run_engine
    from search.engines.optuna_pool import PoolEngine

    engine = engine or PoolEngine(refit=refit, ladder=ladder)
    # An engine that picks each trial's values and epochs itself gets the space as it is.
    own = not engine.fills_pool

    def search(progress):
        return run_engine(
            engine, study=study, arch=arch, split=split, tracker=tracker,
            max_epochs=settings.max_epochs, timeout=timeout, hard_timeout=hard_timeout,
            seed=settings.seed, patience=None if own else settings.patience or None,
            objectives=objectives, narrowed=None if own else settings.distributions(),
            precision=settings.precision, deterministic=settings.deterministic,
            run_params=run_params, callbacks=[progress, *callbacks], on_epoch=progress.epoch,
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
    work_here(study=study, arch=s.config.arch, objectives=("accuracy",), settings=s.settings,
              split=s.split, tracker=s.tracker, timeout=None, hard_timeout=False, n_trials=1,
              quiet=s.config.quiet, run_params=s.run_params, refit_split=full,
              refit=refit)  # fmt: skip
    done = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(REFIT_ATTR) == refit.of]
    return RefitOutcome(of=refit.of, trial=done[-1] if done else None)


def estimate(s: Opened, *, n_trials: int) -> None:
    """Print (and record) what --trials N costs at most on this host, measured first; a
    search smaller than the measurement (``ESTIMATE_MIN_IMAGES``) is not measured."""
    from runners.precision import resolve_policy
    from search.budget.costs import estimate_trials, measure_host
    from search.budget.plan import span

    c, split, max_epochs = s.config, s.split, s.settings.max_epochs
    images = n_trials * max_epochs * len(split.x_train)
    if images < ESTIMATE_MIN_IMAGES:
        logger.debug("no estimate: %d training images in all cost less than measuring", images)
        return
    rate = measure_host(arch=c.arch, split=split, fixed=s.settings.fixed, seconds=1.0,
                        policy=resolve_policy(s.settings.precision))  # fmt: skip
    seconds = estimate_trials(
        n_trials=n_trials, max_epochs=max_epochs, train_images=len(split.x_train),
        val_images=len(split.x_val), train_images_per_s=rate.train_images_per_s,
        eval_images_per_s=rate.eval_images_per_s, workers=max(c.engine.workers, 1),
    )  # fmt: skip
    logger.info(
        "estimate: %d trials of up to %d epochs on %s images take up to %s here (%s training "
        "images/s; pruning and --patience end most trials sooner)",
        n_trials, max_epochs, f"{len(split.x_train):,}", span(seconds),
        f"{rate.train_images_per_s:,.0f}",
    )  # fmt: skip
    if seconds > LONG_SEARCH_SECONDS:
        logger.info("to fit a time budget instead: fmsearch run --arch %s --budget-hours 2", c.arch)
    try:
        s.tracker.log_metrics(s.parent_run_id, {"estimated_max_seconds": seconds})
    except Exception as exc:
        logger.warning("the estimate was not recorded: %s", exc)


def _timed_refit(s: Opened, *, refit_split: Split):
    """``run(refit, seconds)``: one refit on ``refit_split`` in this process, ended after the
    epoch that passes ``seconds`` (what the plan's finals and retraining call)."""

    def run(refit, seconds):
        return work_here(study=s.study, arch=s.config.arch, objectives=("accuracy",),
                         settings=s.settings, split=s.split, tracker=s.tracker, timeout=seconds,
                         hard_timeout=True, n_trials=1, quiet=s.config.quiet,
                         run_params=s.run_params, refit_split=refit_split,
                         refit=refit)  # fmt: skip

    return run


def finals(s: Opened, *, plan: Plan) -> None:
    """Train the plan's top configurations on all the images, in this process, then keep
    their ensemble or flip TTA if either wins on validation, and distill what won into one
    model when the plan kept time for it."""
    from search.budget.distill import distill_ensemble
    from search.budget.ensemble import combine_finals
    from search.budget.finals import run_finals

    trained = run_finals(study=s.study, plan=plan, run=_timed_refit(s, refit_split=s.split))
    if trained:
        logger.info("final training of trials %s on all images", ", ".join(map(str, trained)))
    choice = combine_finals(study=s.study, tracker=s.tracker, split=s.split,
                            parent_run_id=s.parent_run_id, arch=s.config.arch)  # fmt: skip
    if choice is not None:
        chosen = choice.chosen
        logger.info(
            "%s%s: val_accuracy %.4f%s", "kept " if choice.combined else "", chosen.describe(),
            chosen.val_accuracy, "" if choice.combined else " (no ensemble or flip TTA beat it)",
        )  # fmt: skip
    if choice is not None and choice.combined and plan.distill_seconds:
        distill_ensemble(
            study=s.study, tracker=s.tracker, split=s.split, plan=plan,
            parent_run_id=s.parent_run_id,
            run=lambda refit, seconds, taught: _timed_refit(s, refit_split=taught)(refit, seconds),
        )  # fmt: skip


def retrain(s: Opened, *, plan: Plan) -> None:
    """--final-on-all-data: the chosen model's members trained again with the validation
    images, in this process, and the model that stands in for it."""
    from search.budget.ensemble import add_stand_in
    from search.budget.finals import retrain_on_all_data, with_validation_in_training
    from search.promotion.promote import select_candidate

    c = s.config
    everything = with_validation_in_training(s.split)
    run = _timed_refit(s, refit_split=everything)
    chosen = select_candidate(s.study, max_params=c.promotion.max_params,
                              max_latency_ms=c.promotion.max_latency_ms)  # fmt: skip
    retrained = retrain_on_all_data(study=s.study, plan=plan, chosen=chosen, run=run)
    add_stand_in(study=s.study, tracker=s.tracker, chosen=chosen, retrained=retrained,
                 parent_run_id=s.parent_run_id, arch=c.arch)  # fmt: skip
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
