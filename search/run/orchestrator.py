"""One search from its options to its result, and one worker's share of a study: the only
path through a run. :mod:`search.run.pipeline` holds its phases (check, open, plan, finals,
report); the API and the recipes call :func:`run_search` and :func:`work`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runners.errors import FmsearchError
from search.run.config import Mode, SearchOptions, check, time_limit
from search.run.pipeline import RefitOutcome
from search.run.start import open_storage, open_tracker, start, study_runner

if TYPE_CHECKING:
    import optuna

    from runners.data import Split
    from search.budget.plan import Plan
    from search.outcome import StudyOutcome
    from search.promotion.promote import Promotion

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchResult:
    """What :func:`search` did.

    Attributes:
        study: The study (trials, best trial, user attributes).
        searched: Its counts and best trial once the search's trials ended (before a refit
            or a plan's finals).
        outcome: Its counts and best trial at the end.
        plan: The plan a budgeted search followed (None: not planned).
        refit: The refit asked for by ``refit_epochs`` (None: none, or none needed).
        promotion: What promotion decided (None: ``promote=False``).
    """

    study: optuna.Study
    searched: StudyOutcome
    outcome: StudyOutcome
    plan: Plan | None
    refit: RefitOutcome | None
    promotion: Promotion | None

    @property
    def study_name(self) -> str:
        return self.study.study_name


@dataclass(frozen=True)
class WorkResult:
    """What :func:`work` did: the study's outcome when this worker left it, and why it
    stopped early to be started again as a new process (None: the pool is done)."""

    outcome: StudyOutcome
    restart_reason: str | None


def run_search(
    options: SearchOptions,
    *,
    grid: Sequence[dict[str, Any]] | None = None,
    prepare: Callable[[optuna.Study], None] | None = None,
) -> SearchResult:
    """:func:`search` for a study whose grid comes from elsewhere than a space file
    (``grid``), and which ``prepare`` marks before its first trial (fine-tuning)."""
    from search.kinds import runner_for
    from search.run import pipeline
    from search.storage.urls import default_storage

    # The whole command counts against --budget-hours, set-up included.
    started_at = time.time()
    config = check(options, grid=grid)
    start(runner_for(config.space), precision=config.training.precision,
          threads=config.engine.threads)  # fmt: skip
    tracker = open_tracker(config.stores.tracking_uri)
    storage = config.stores.storage or default_storage()
    heartbeat = config.engine.heartbeat_interval
    opened = pipeline.open_search(
        config,
        tracker=tracker,
        optuna_storage=open_storage(storage, heartbeat_interval=heartbeat),
        storage=storage,
        started_at=started_at,
    )
    if prepare is not None:
        prepare(opened.study)
    plan, ladder = _run_trials(opened)
    return _finish(opened, plan=plan, ladder=ladder)


def _run_trials(s) -> tuple[Plan | None, Any]:
    """The search's trials, here, in local worker processes, or by workers elsewhere;
    planned first when the search is. Returns the plan and its ladder, if planned."""
    from search.kinds import runner_for
    from search.run import pipeline, planning
    from search.run.workers import run_local_workers, threads_per_worker, wait_for_pool
    from search.storage.urls import store_dir

    c = s.config
    timeout, hard_timeout, n_trials = c.budget.seconds, c.budget.hard, c.budget.n_trials
    plan = ladder = None
    if c.mode is Mode.PLAN:
        plan, ladder = planning.make_plan(s)
        n_trials = sum(r.configs for r in plan.rungs)
        timeout, hard_timeout = plan.search_ends_at - time.time(), True
    elif hard_timeout:
        # Set-up counts against the budget here as it does for a plan: the command keeps to it.
        timeout -= time.time() - s.started_at
    elif timeout is None and runner_for(c.space).trains_in_epochs and not c.quiet:
        pipeline.estimate(s, n_trials=n_trials)
    workers = c.engine.workers
    if workers == 1:
        engine = c.engine.cls.create(c, n_trials=n_trials, directory=store_dir(s.storage),
                                     ladder=ladder)  # fmt: skip
        pipeline.work_here(study=s.study, arch=c.arch, objectives=c.training.objectives,
                           settings=s.settings, split=s.split, tracker=s.tracker,
                           timeout=timeout, hard_timeout=hard_timeout, n_trials=n_trials,
                           quiet=c.quiet, run_params=s.run_params, engine=engine,
                           ladder=ladder)  # fmt: skip
    elif workers == 0:
        logger.info("waiting for workers to run study %s's trials", s.study.study_name)
        wait_for_pool(s.study, tracker=s.tracker, timeout=timeout, hard=hard_timeout)
    else:
        command = _worker_command(s, plan=plan, timeout=timeout, hard_timeout=hard_timeout)
        # The stores go by environment, not the command line, which `ps` shows any user.
        stores = {"FMSEARCH_STORAGE": s.storage, "MLFLOW_TRACKING_URI": s.tracker.tracking_uri}
        threads = c.engine.threads or threads_per_worker(workers)
        codes = run_local_workers(command, n_workers=workers, threads=threads, env=stores)
        if any(codes):
            logger.warning("worker exit codes: %s", codes)
    return plan, ladder


def _worker_command(s, *, plan, timeout, hard_timeout) -> list[str]:
    """The ``fmsearch worker`` command line of this search's local worker processes."""
    from search.run.workers import worker_command

    c = s.config
    command = [*worker_command(), "worker", "--study-name", s.study.study_name]
    command += ["--heartbeat-interval", str(c.engine.heartbeat_interval)]
    command += ["--data-dir", str(c.stores.data_dir)] if c.stores.data_dir else []
    # A planned search's workers take its deadline and ladder from the study's plan.
    hours = c.budget.budget_hours
    command += ["--budget-hours", str(hours)] if hours and not plan else []
    command += ["--timeout", str(timeout)] if timeout and not hard_timeout else []
    command += ["--quiet"] if c.quiet else []
    return command


def _finish(s, *, plan: Plan | None, ladder) -> SearchResult:
    """After the trials: a plan's finals (and retraining), a refit, promotion; the report
    and the plan's check whatever happens."""
    from search.outcome import summarize
    from search.run import pipeline

    c, judged = s.config, s.config.promotion
    outcome = searched = summarize(s.study, parent_run_id="")
    promotion = refit = None
    try:
        if plan is not None:
            ladder.retire_waiting(s.study)
            pipeline.finals(s, plan=plan)
            if c.budget.final_on_all_data:
                pipeline.retrain(s, plan=plan)
        if c.budget.refit_epochs:
            refit = pipeline.refit_best(s, epochs=c.budget.refit_epochs)
        if plan is not None or refit is not None:  # they added trials
            outcome = summarize(s.study, parent_run_id="")
        if judged.enabled:
            if outcome.best_trial is None:
                raise FmsearchError(
                    f"study {outcome.study_name!r} has no completed trial to promote"
                )
            promotion = _promote(s.study, tracker=s.tracker, data=s.data, split=s.split,
                                 register_as=judged.register_as, max_params=judged.max_params,
                                 max_latency_ms=judged.max_latency_ms)  # fmt: skip
    finally:
        pipeline.refresh_report(study=s.study, tracker=s.tracker, register_as=judged.register_as)
        if plan is not None:
            pipeline.check_plan(s, plan=plan)
    return SearchResult(s.study, searched, outcome, plan, refit, promotion)


def work(
    *,
    study_name: str,
    storage: str | None = None,
    tracking_uri: str | None = None,
    data_dir: Path | None = None,
    threads: int | None = None,
    heartbeat_interval: int = 10,
    timeout: float | None = None,
    budget_hours: float | None = None,
    wait: float = 0.0,
    max_trials_per_process: int = 100,
    max_memory_mib: float = 0.0,
    worker_index: int = 0,
    started_at: float | None = None,
) -> WorkResult:
    """Run trials of an existing study (made by :func:`search`) until its pool is done.

    Start as many workers as you like, on any host that reaches the study's storage and the
    MLflow store; each trial runs once. See ``fmsearch worker --help`` for the arguments;
    ``started_at`` is when this worker's first process started (its time limit counts from
    then).
    """
    from runners.data import load_fashion_mnist
    from search.budget.finals import make_ladder, stored_plan
    from search.kinds import runner_for
    from search.run import pipeline
    from search.run.workers import Recycler, open_worker_study, pool_open
    from spaces import resolve

    started_at = time.time() if started_at is None else started_at
    timeout, hard_timeout = time_limit(timeout, budget_hours)
    if timeout is not None:
        timeout -= time.time() - started_at
    tracker = open_tracker(tracking_uri)
    recycler = Recycler(
        max_trials=max_trials_per_process or None, max_memory_mib=max_memory_mib or None
    )
    study, arch, objectives, settings = open_worker_study(
        storage=open_storage(storage, heartbeat_interval=heartbeat_interval),
        study_name=study_name,
        wait=wait,
        seed_offset=1000 * worker_index,
    )
    start(runner_for(resolve(arch)), precision=settings.precision, threads=threads)
    data = load_fashion_mnist(data_dir=data_dir)
    split = settings.split(data)
    ladder = None
    plan = stored_plan(study)
    if plan is not None and timeout is None:
        # A planned search: its ladder, and its deadline for everyone.
        ladder = make_ladder(plan, data=data, full=split, val_size=settings.val_size)
        timeout, hard_timeout = plan.search_ends_at - time.time(), True
    outcome = pipeline.work_here(
        study=study, arch=arch, objectives=objectives, settings=settings, split=split,
        tracker=tracker, timeout=timeout, hard_timeout=hard_timeout, n_trials=None, quiet=True,
        run_params={},
        # A refit trial re-run after its worker died can come to any worker: all images.
        refit_split=pipeline.full_split(data, settings=settings, split=split),
        ladder=ladder, callbacks=[recycler],
    )  # fmt: skip
    # Started again only while the pool still holds trials for it.
    restart = recycler.reason if recycler.reason is not None and pool_open(study) else None
    return WorkResult(outcome, restart)


def _study_split(study, data) -> Split | None:
    """The validation images the study's trials were judged on (None: a study made before
    fmsearch recorded its settings)."""
    from search.names import SETTINGS_ATTR
    from search.run.workers import SearchSettings

    settings = study.user_attrs.get(SETTINGS_ATTR)
    return None if settings is None else SearchSettings(**settings).split(data)


def _promote(study, *, tracker, data, split, register_as, max_params,
             max_latency_ms) -> Promotion:  # fmt: skip
    """Promote with the test images judged and a temperature fitted on ``split``'s
    validation images."""
    from search.promotion.promote import default_model_name, promote_winner

    return promote_winner(
        study=study,
        tracker=tracker,
        test_images=data.x_test,
        test_labels=data.y_test,
        model_name=register_as or default_model_name(study),
        max_params=max_params,
        max_latency_ms=max_latency_ms,
        val_images=None if split is None else split.x_val,
        val_labels=None if split is None else split.y_val,
    )


def promote(
    *,
    study_name: str,
    storage: str | None = None,
    tracking_uri: str | None = None,
    data_dir: Path | None = None,
    register_as: str | None = None,
    max_params: int | None = None,
    max_latency_ms: float | None = None,
) -> Promotion:
    """Judge a study's best trial on the test set and register it: the ``champion`` alias
    if it beats the current champion's test accuracy, else ``challenger``."""
    from runners.data import load_fashion_mnist
    from search.storage.rdb import load_study

    tracker = open_tracker(tracking_uri)
    study = load_study(storage=open_storage(storage), study_name=study_name)
    start(study_runner(study), precision="auto", threads=None)
    data = load_fashion_mnist(data_dir=data_dir)
    return _promote(study, tracker=tracker, data=data, split=_study_split(study, data),
                    register_as=register_as, max_params=max_params,
                    max_latency_ms=max_latency_ms)  # fmt: skip
