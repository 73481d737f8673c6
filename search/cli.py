"""The ``fmsearch`` command line: thin click commands over ``search``, ``spaces``, ``runners``.

Environment variables are read here only (click's ``envvar=``; the flag wins). Heavy imports
(TensorFlow, MLflow, Optuna) happen inside the commands, so ``fmsearch --help`` is instant.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import pkgutil
import re
import shutil
import sys
import time
from pathlib import Path

import click

from runners.errors import FmsearchError
from runners.precision import PRECISIONS
from search.choices import ENGINES, OBJECTIVES, PLANNED_PRUNER, PRUNERS, SAMPLERS, TUNERS
from search.names import FINAL_ON_ALL_DATA_TAG
from search.urls import redact
from spaces import ARCHITECTURES, resolve
from spaces.common import AUGMENTED_MIN_EPOCHS, short_run_start, short_search_fixes
from spaces.families import AUTO, Families

logger = logging.getLogger(__name__)

_ENVIRONMENT = {
    # fmsearch's processes send nothing home.
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # Bounded retries: a dead tracking server costs seconds, not MLflow's default 4 minutes.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # MLflow writes "View run ... at: URL" to stdout itself, the tracking URI's password
    # included (found by tests/scale_out/test_secrets.py); fmsearch prints its own lines.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # `fmsearch ui` and `fmsearch server`: MLflow 3's job runner (seven Huey processes, for
    # its GenAI jobs, which fmsearch never submits) made the server answer after 23 s here.
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}


# Modules that load TensorFlow when imported: a scikit-learn run does without them.
_TENSORFLOW_MODULES = frozenset(
    {"runners.augment", "runners.lr_find", "runners.throughput", "runners.training"}
)


def preload(*, keras: bool) -> list[str]:
    """Import now every fmsearch module a search may reach later; returns their names.

    A search lasts hours, and what Python imports later comes from the files as they are by
    then: a 2-hour planned search whose checkout changed under it died at its finals, where
    the new ``search.ensemble`` met the old ``search.study`` it had loaded at the start. The
    TensorFlow modules are loaded only for a Keras architecture (``keras``).
    """
    import runners
    import search

    names = [
        info.name
        for package in (search, runners)
        for info in pkgutil.iter_modules(package.__path__, f"{package.__name__}.")
        if info.name != "search.__main__" and (keras or info.name not in _TENSORFLOW_MODULES)
    ]
    for name in names:
        importlib.import_module(name)
    return names


class _Finite(click.FloatRange):
    """A ``FloatRange`` that refuses nan, which passes every comparison, and infinities, which
    are no limit where a limit is asked for."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"expected a finite number, got {value!r}", param, ctx)
        return number


class _Group(click.Group):
    """Turns fmsearch's fatal errors into one-line messages with a non-zero exit."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FmsearchError as exc:
            # Its text may quote a library's error, which quotes URLs whole.
            raise click.ClickException(redact(str(exc))) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fmsearch")
def main() -> None:
    """fmsearch: find the best Fashion-MNIST classifier by search, with every step on record.

    Studies run on Optuna, every trial is tracked in MLflow, and the winner is registered as
    an MLflow model. Local state lives under ./mlruns unless --storage / --tracking-uri say
    otherwise.
    """
    for key, value in _ENVIRONMENT.items():
        os.environ.setdefault(key, value)


storage_option = click.option(
    "--storage",
    envvar="FMSEARCH_STORAGE",
    metavar="URL",
    help="Optuna storage URL (SQLite, PostgreSQL, MySQL). Env: FMSEARCH_STORAGE. "
    "[default: sqlite:///mlruns/optuna.db]",
)
tracking_option = click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    metavar="URI",
    help="MLflow tracking URI (a database URL or http://server). Env: MLFLOW_TRACKING_URI. "
    "[default: sqlite:///mlruns/mlflow.db]",
)
data_dir_option = click.option(
    "--data-dir",
    envvar="FMSEARCH_DATA_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory with the four Fashion-MNIST *-ubyte.gz files. Env: FMSEARCH_DATA_DIR. "
    "[default: Debian's dataset-fashion-mnist, then the Keras cache, then a download]",
)
register_as_option = click.option(
    "--register-as", metavar="NAME", help="Registered model name. [default: fmsearch-ARCH]"
)
max_params_option = click.option(
    "--max-params",
    type=click.IntRange(min=1),
    metavar="N",
    help="Promote only models with at most N parameters.",
)
max_latency_option = click.option(
    "--max-latency-ms",
    type=_Finite(min=0, min_open=True),
    metavar="MS",
    help="Promote only models that predict in at most MS milliseconds per image.",
)
timeout_option = click.option(
    "--timeout",
    type=_Finite(min=0, min_open=True),
    metavar="SECONDS",
    help="Start no new trial after this long.",
)
host_option = click.option(
    "--host", default="127.0.0.1", show_default=True, help="Interface to listen on."
)


def port_option(*, default: int):
    return click.option("--port", type=click.IntRange(1, 65535), default=default, show_default=True)


budget_option = click.option(
    "--budget-hours",
    type=_Finite(min=0, min_open=True),
    metavar="HOURS",
    help="The time the whole command may take. Without --trials (Keras architectures): "
    "measure this host, plan a ladder of growing data subsets, train the top configurations "
    "on all images, promote (the plan is printed first). With --trials: stop starting "
    "trials after this long; a Keras trial still running ends after its current epoch.",
)


class _ArchType(click.ParamType):
    """``--arch``: one of the architectures, ``auto``, or several Keras ones, comma-separated."""

    name = "ARCH"

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[" + "|".join([*sorted(ARCHITECTURES), "auto", "A,B,..."]) + "]"

    def convert(self, value, param, ctx):
        try:
            resolve(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return value


def _time_limit(timeout: float | None, budget_hours: float | None) -> tuple[float | None, bool]:
    """Seconds to the end of the search, and whether running trials end then too."""
    if timeout is not None and budget_hours is not None:
        raise FmsearchError(
            f"expected --timeout or --budget-hours, got both (--timeout {timeout:g}, "
            f"--budget-hours {budget_hours:g})"
        )
    if budget_hours is not None:
        return budget_hours * 3600, True
    return timeout, False


workers_option = click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Worker processes on this machine sharing the study (0: only wait for workers "
    "started elsewhere with `fmsearch worker`).",
)
threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="CPU threads per worker.  [default: the cores divided among the workers]",
)
heartbeat_option = click.option(
    "--heartbeat-interval",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    metavar="SECONDS",
    help="How often a running trial tells the storage its worker is alive; a trial silent "
    "for 6 intervals is failed and run again.",
)
quiet_option = click.option("--quiet", "-q", is_flag=True, help="Only warnings and the result.")
verbose_option = click.option("--verbose", "-v", is_flag=True, help="Debug logs and tracebacks.")


# "fmsearch-" plus the name is the default registered model name; MLflow's registry keeps
# names of at most 256 characters, and a directory name is at most 255 bytes.
MAX_STUDY_NAME = 128
STARTED_AT_ENV = "FMSEARCH_WORKER_STARTED_AT"


def _check_study_name(ctx: click.Context, param: click.Parameter, value: str | None):
    # The name is also an MLflow experiment name, a filter value and a directory name.
    if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
        raise click.BadParameter(
            f"expected letters, digits, '.', '_' or '-' (not first), got {value!r}"
        )
    if value is not None and len(value) > MAX_STUDY_NAME:
        raise click.BadParameter(f"expected at most {MAX_STUDY_NAME} characters, got {len(value)}")
    return value


def _redact_record(record: logging.LogRecord) -> bool:
    """Every log line without the passwords of the URLs it quotes (fmsearch's own lines
    redact them; a library's warning, a retry or a traceback may quote a URL whole)."""
    record.msg, record.args = redact(record.getMessage()), None
    if record.exc_info:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        record.exc_info = None
    return True


def _setup_logging(*, quiet: bool = False, verbose: bool = False) -> None:
    import optuna

    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    if verbose:  # MLflow sets its loggers' level from this when it is imported
        os.environ["MLFLOW_LOGGING_LEVEL"] = "DEBUG"
    logging.basicConfig(level=level, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_redact_record)
    for name in ("search", "runners", "spaces"):
        logging.getLogger(name).setLevel(level)
    # Optuna logs every failed trial's traceback at WARNING; fmsearch logs one line per trial.
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.DEBUG if verbose else optuna.logging.ERROR)
    for noisy in ("mlflow", "alembic", "absl"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)
    # urllib3 warns on every retry of an unreachable tracking server; the final error says it.
    logging.getLogger("urllib3").setLevel(logging.DEBUG if verbose else logging.ERROR)
    # TensorFlow warns about retracing every time a new trial's model first predicts.
    logging.getLogger("tensorflow").setLevel(logging.DEBUG if verbose else logging.ERROR)


def _tracker(tracking_uri: str | None):
    from search.tracking import Tracker
    from search.urls import default_artifact_root, default_tracking_uri, sqlite_path

    uri = tracking_uri or default_tracking_uri()
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(tracking_uri=uri, artifact_root=default_artifact_root(uri))
    tracker.check_connection()
    return tracker


def _storage(storage: str, *, heartbeat_interval: int = 10):
    from search.storage import open_storage

    return open_storage(storage, heartbeat_interval=heartbeat_interval)


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    from runners.training import set_threads

    set_threads(threads)


def _work(
    *,
    study,
    arch,
    objectives,
    settings,
    split,
    tracker,
    timeout,
    hard_timeout,
    n_trials,
    quiet,
    run_params,
    refit_split=None,
    refit=None,
    ladder=None,
    callbacks=(),
):
    """Run the study's pool (or ``refit``) in this process, with a progress bar."""
    from search.study import run_worker

    return _with_progress(
        n_trials=n_trials,
        quiet=quiet,
        search=lambda progress: run_worker(
            study=study,
            arch=arch,
            split=split,
            tracker=tracker,
            max_epochs=settings.max_epochs,
            timeout=timeout,
            hard_timeout=hard_timeout,
            seed=settings.seed,
            patience=settings.patience or None,
            objectives=objectives,
            narrowed=settings.distributions(),
            precision=settings.precision,
            deterministic=settings.deterministic,
            run_params=run_params,
            callbacks=[progress, *callbacks],
            on_epoch=progress.epoch,
            refit_split=refit_split,
            refit=refit,
            ladder=ladder,
        ),
    )


def _with_progress(*, n_trials, quiet, search):
    """``search(progress)`` with a progress bar over ``n_trials`` trials, logs above it."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from search.progress import ProgressBar

    progress = ProgressBar(total=n_trials, disable=True if quiet else None)
    try:
        with logging_redirect_tqdm():
            return search(progress)
    finally:
        progress.close()


def _full_split(data, *, settings, split):
    """All training images and ``split``'s validation images (``split`` itself without
    --subset): what refit trials train on."""
    from runners.data import split_train_val

    if settings.subset is None:
        return split
    return split_train_val(data.x_train, data.y_train, val_size=settings.val_size, subset=None)


def _refit(*, study, arch, settings, split, data, tracker, epochs, quiet, run_params) -> None:
    """Train the study's best configuration again on all training images, in this process."""
    from optuna.trial import TrialState

    from search.names import REFIT_ATTR
    from search.outcome import refit_candidate

    refit = refit_candidate(study, epochs=epochs)
    if refit is None:
        logger.info("no refit: the best trial is a refit, or has one already")
        return
    full = _full_split(data, settings=settings, split=split)
    click.echo(
        f"refit: trial {refit.of}'s configuration on {len(full.x_train):,} training images, "
        f"up to {epochs} epochs",
        err=True,
    )
    # --timeout and --budget-hours bound the search, not the refit that follows it.
    _work(study=study, arch=arch, objectives=("accuracy",), settings=settings, split=split,
          tracker=tracker, timeout=None, hard_timeout=False, n_trials=1, quiet=quiet,
          run_params=run_params, refit_split=full, refit=refit)  # fmt: skip
    done = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(REFIT_ATTR) == refit.of]
    if not done:
        click.echo("refit: not run")
    elif done[-1].state == TrialState.COMPLETE:
        best = study.trials[refit.of]
        click.echo(
            f"refit trial {done[-1].number}: val_accuracy {done[-1].value:.4f} "
            f"(trial {refit.of}: {best.value:.4f})"
        )
    else:
        click.echo(f"refit trial {done[-1].number}: {done[-1].state.name.lower()}")


def _check_keras_tuner(*, arch, space, objectives, workers, enqueue) -> None:
    """What --engine keras-tuner cannot do, refused before the study exists."""
    from search.kinds import runner_for

    if not runner_for(space).trains_in_epochs or isinstance(space, Families):
        raise FmsearchError(
            f"--engine keras-tuner: expected one Keras architecture, got --arch {arch}"
        )
    if len(objectives) > 1:
        raise FmsearchError(
            "--engine keras-tuner: expected --objective accuracy (Keras Tuner optimises one "
            f"objective), got --objective {','.join(objectives)}"
        )
    if workers != 1:
        raise FmsearchError(
            f"--engine keras-tuner: expected --workers 1 (Keras Tuner runs its trials in one "
            f"process), got --workers {workers}"
        )
    if enqueue:
        raise FmsearchError(
            "--engine keras-tuner: expected no --enqueue (Keras Tuner picks every trial), "
            "got --enqueue"
        )


def _work_keras_tuner(
    *, study, tuner, arch, settings, split, tracker, storage, timeout, hard_timeout,
    n_trials, quiet, run_params,
):  # fmt: skip
    """Run Keras Tuner's search in this process, with a progress bar."""
    from search.kt_engine import run_keras_tuner
    from search.urls import store_dir

    return _with_progress(
        n_trials=n_trials,
        quiet=quiet,
        search=lambda progress: run_keras_tuner(
            study=study,
            tuner=tuner,
            arch=arch,
            split=split,
            tracker=tracker,
            max_epochs=settings.max_epochs,
            n_trials=n_trials,
            directory=store_dir(storage) / "keras-tuner",
            timeout=timeout,
            hard_timeout=hard_timeout,
            seed=settings.seed,
            deterministic=settings.deterministic,
            fixed=settings.fixed,
            narrowed=settings.distributions(),
            precision=settings.precision,
            run_params=run_params,
            callbacks=[progress],
            on_epoch=progress.epoch,
        ),
    )


def _echo_outcome(outcome) -> None:
    click.echo(
        f"study {outcome.study_name}: {outcome.n_complete} complete, {outcome.n_pruned} pruned, "
        f"{outcome.n_failed} failed"
        + (f", {outcome.n_retried} re-run after their worker died" if outcome.n_retried else "")
        + (
            f"; best trial {outcome.best_trial}: val_accuracy {outcome.best_value:.4f}"
            if outcome.best_trial is not None
            else ""
        )
    )


@main.command()
@click.option(
    "--arch",
    type=_ArchType(),
    required=True,
    help="Architecture to search; 'auto' or several Keras ones comma-separated "
    f"(resnet,vggbn,cnn) search the families in one study. 'auto': {','.join(AUTO)}.",
)
@click.option(
    "--trials",
    "n_trials",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Trials to add to the study.",
)
@click.option(
    "--study-name",
    callback=_check_study_name,
    help="Study (and MLflow experiment) name.  [default: the --arch]",
)
@storage_option
@tracking_option
@click.option("--sampler", type=click.Choice(SAMPLERS), default="tpe", show_default=True)
@click.option("--pruner", type=click.Choice(PRUNERS), default="hyperband", show_default=True)
@click.option(
    "--seed", type=click.IntRange(0, 2**32 - 1), metavar="N",
    help="Seed of the sampler and of each trial's initial weights, data order and augmentation "
    "(0 to 2**32-1, NumPy's range).",
)  # fmt: skip
@click.option(
    "--deterministic", is_flag=True,
    help="With --seed: TensorFlow's op determinism, so that each trial repeats exactly on "
    "this machine (slower: random augmentation runs serially).",
)  # fmt: skip
@timeout_option
@budget_option
@click.option(
    "--max-epochs",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Epochs a trial trains at most (the pruner's full budget).",
)
@click.option(
    "--patience",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="End a trial after this many epochs without a better validation accuracy (0: never).",
)
@click.option(
    "--subset",
    type=click.IntRange(min=1),
    metavar="N",
    help="Train trials on N training images (stratified) instead of all 50,000.",
)
@click.option(
    "--val-size",
    type=click.IntRange(min=10),
    default=10_000,
    show_default=True,
    help="Validation images, split off the 60k training images.",
)
@click.option(
    "--objective",
    type=click.Choice(OBJECTIVES),
    default="accuracy",
    show_default=True,
    help="What to optimise: validation accuracy, or accuracy against the parameter count or "
    "the latency per image (multi-objective: a Pareto front, no pruning).",
)
@click.option(
    "--fix",
    "fixes",
    multiple=True,
    metavar="NAME=VALUE",
    help="Pin a hyperparameter (repeatable), e.g. --fix optimizer=adam --fix mix=none.",
)
@click.option(
    "--space-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file narrowing ranges or choices, e.g. 'learning_rate: {low: 0.001, high: 0.005}'.",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="auto",
    show_default=True,
    help="Keras models compute in float32, or in mixed bfloat16/float16 (weights and the "
    "softmax stay float32); auto: mixed bfloat16 on CPUs with native bfloat16 (AMX, "
    "AVX512-BF16) and Ampere+ GPUs, mixed float16 on older GPUs, else float32. Each worker "
    "resolves auto on its own host.",
)
@click.option(
    "--enqueue/--no-enqueue",
    default=None,
    help="Start with the architecture's published configuration (once per study; a Keras "
    "search of under 10 epochs also with it retuned for few epochs).  "
    "[default: on, unless --space-file narrows the space or --engine keras-tuner]",
)
@click.option(
    "--refit-epochs",
    type=click.IntRange(min=1),
    metavar="N",
    help="After the search, train its best configuration again on all training images (not "
    "only --subset) for up to N epochs, unpruned: a trial of the study, tracked and "
    "promoted like the others (once per best trial).",
)
@click.option(
    "--final-on-all-data",
    is_flag=True,
    help="A planned search (--budget-hours) trains the model it chose on validation again "
    "with the validation images among its training images, for its best epoch count, and "
    "promotes that one (the plan keeps the time for it).",
)
@click.option(
    "--engine",
    type=click.Choice(ENGINES),
    default="optuna",
    show_default=True,
    help="Who picks the trials: Optuna (--sampler, --pruner, --workers), or Keras Tuner "
    "(--tuner) over the same space, trained and tracked the same way.",
)
@click.option(
    "--tuner",
    type=click.Choice(TUNERS),
    default="hyperband",
    show_default=True,
    help="Keras Tuner's algorithm with --engine keras-tuner.",
)
@workers_option
@threads_option
@heartbeat_option
@data_dir_option
@register_as_option
@max_params_option
@max_latency_option
@click.option(
    "--promote/--no-promote",
    default=True,
    show_default=True,
    help="Judge the best trial on the test set and register it when the study ends.",
)
@quiet_option
@verbose_option
def run(
    arch,
    n_trials,
    study_name,
    storage,
    tracking_uri,
    sampler,
    pruner,
    seed,
    deterministic,
    timeout,
    budget_hours,
    max_epochs,
    patience,
    subset,
    val_size,
    objective,
    fixes,
    space_file,
    precision,
    enqueue,
    refit_epochs,
    final_on_all_data,
    engine,
    tuner,
    workers,
    threads,
    heartbeat_interval,
    data_dir,
    register_as,
    max_params,
    max_latency_ms,
    promote,
    quiet,
    verbose,
) -> None:
    """Search ARCH: add --trials trials to a study, then promote the best model.

    Re-running the same command resumes the study and adds trials.

    \b
    Examples:
      fmsearch run --arch resnet --trials 100
      fmsearch run --arch cnn --trials 10 --subset 10000 --max-epochs 5
      fmsearch run --arch resnet --trials 100 --subset 5000 --refit-epochs 20
      fmsearch run --arch mlp --storage postgresql://user@db/optuna --study-name mlp-big
      fmsearch run --arch vggbn --enqueue --fix optimizer=adamw --space-file narrow.yaml
      fmsearch run --arch cnn --objective accuracy,latency --max-latency-ms 0.05
      fmsearch run --arch resnet --trials 100 --workers 2
      fmsearch run --arch cnn --trials 30 --engine keras-tuner --tuner bayesian
    """
    from search.kinds import runner_for

    _setup_logging(quiet=quiet, verbose=verbose)

    _set_threads(threads)
    from runners.data import load_fashion_mnist, split_train_val
    from search.choices import check_requirements, describe_space, parse_objectives
    from search.outcome import summarize
    from search.overrides import load_space_file, parse_fixed
    from search.study import open_study_run
    from search.urls import default_storage
    from search.workers import (
        SearchSettings,
        prepare_study,
        run_local_workers,
        threads_per_worker,
        wait_for_pool,
        worker_command,
    )

    # The whole command counts against --budget-hours, set-up included.
    started_at = time.time()
    # Everything that can be wrong with the input is checked before the study exists.
    timeout, hard_timeout = _time_limit(timeout, budget_hours)
    if deterministic and seed is None:
        raise FmsearchError("--deterministic repeats seeded trials: expected --seed N too")
    space = resolve(arch)
    preload(keras=runner_for(space).uses_tensorflow)
    check_requirements(space, arch=arch)
    objectives = parse_objectives(objective, space, arch=arch)
    trials_given = click.get_current_context().get_parameter_source("n_trials") not in (
        click.core.ParameterSource.DEFAULT,
        None,
    )
    planned = _planned(budget_hours=budget_hours, trials_given=trials_given, space=space,
                       engine=engine, objectives=objectives, refit_epochs=refit_epochs)  # fmt: skip
    distributions = describe_space(space) if fixes or space_file else {}
    fixed = parse_fixed(fixes, distributions)
    narrowed = load_space_file(space_file, distributions) if space_file else {}
    if runner_for(space).trains_in_epochs and not planned:
        fixed = {**short_search_fixes(max_epochs, named={*fixed, *narrowed}), **fixed}
    if enqueue is None:
        enqueue = engine != "keras-tuner" and space_file is None
    if engine == "keras-tuner":
        _check_keras_tuner(arch=arch, space=space, objectives=objectives, workers=workers,
                           enqueue=enqueue)  # fmt: skip
        sampler, pruner = "random", "none"  # Keras Tuner chooses; Optuna only records
        study_name = study_name or f"{arch}-kt-{tuner}"
    if planned and pruner != "none":
        pruner = PLANNED_PRUNER
    if final_on_all_data and not planned:
        raise FmsearchError(
            "--final-on-all-data: expected a planned search (--budget-hours without --trials, "
            "a Keras architecture, the Optuna engine, one objective, no --refit-epochs), got "
            + ("no --budget-hours" if budget_hours is None else "a search that is not planned")
        )
    if refit_epochs and len(objectives) > 1:
        raise FmsearchError(
            "--refit-epochs: expected --objective accuracy (a refit is judged on accuracy "
            f"alone), got --objective {objective}"
        )
    if len(objectives) > 1 and pruner != "none":
        logger.info("pruning is off: Optuna cannot prune multi-objective studies")
        pruner = "none"
    tracker = _tracker(tracking_uri)
    storage = storage or default_storage()
    optuna_storage = _storage(storage, heartbeat_interval=heartbeat_interval)
    data = load_fashion_mnist(data_dir=data_dir)
    # Split before the study exists, so that an impossible --subset creates nothing.
    split = split_train_val(data.x_train, data.y_train, val_size=val_size, subset=subset)
    settings = SearchSettings.from_distributions(
        sampler=sampler,
        pruner=pruner,
        max_epochs=max_epochs,
        patience=patience,
        subset=subset,
        val_size=val_size,
        seed=seed,
        fixed=fixed,
        narrowed=narrowed,
        precision=precision,
        deterministic=deterministic,
    )
    starts = _starts(space, max_epochs=max_epochs, planned=planned) if enqueue else []
    # They count toward --trials; a planned search runs them all on its lowest rung.
    starts = starts if planned else starts[:n_trials]
    study = prepare_study(
        storage=optuna_storage,
        storage_url=storage,
        study_name=study_name or arch.replace(",", "-"),
        arch=arch,
        objectives=objectives,
        settings=settings,
        # Keras Tuner, not the pool, decides what runs: it enqueues each trial itself. A
        # planned search's ladder adds its own, one per free worker at a time.
        n_trials=0 if engine == "keras-tuner" else max(workers, 1) if planned else n_trials,
        enqueue=starts,
    )
    logger.info(
        "study %s: %s, %s, up to %d epochs",
        study.study_name,
        "planned from the budget" if planned else f"{n_trials} trials",
        f"{workers} worker processes" if workers != 1 else "in this process",
        max_epochs,
    )
    run_params = {
        "sampler": sampler,
        "pruner": pruner,
        "max_epochs": max_epochs,
        "patience": patience,
        "subset": subset or 60_000 - val_size,
        "val_size": val_size,
        "seed": seed,
        "objective": objective,
        "fixed": ", ".join(f"{k}={v}" for k, v in fixed.items()) or None,
        "space_file": str(space_file) if space_file else None,
        "precision": precision,
        "budget_hours": budget_hours,
        "refit_epochs": refit_epochs,
        "engine": engine,
        "tuner": tuner if engine == "keras-tuner" else None,
        "storage": redact(storage),
        "data_source": data.source,
        "workers": workers,
    }
    _, parent_run_id = open_study_run(study, arch=arch, tracker=tracker, params=run_params)
    plan = ladder = None
    if planned:
        plan, ladder = _make_plan(
            study=study, arch=arch, settings=settings, split=split, data=data, tracker=tracker,
            parent_run_id=parent_run_id, budget_hours=budget_hours, started_at=started_at,
            retrain_on_all=final_on_all_data,
        )  # fmt: skip
        n_trials = sum(r.configs for r in plan.rungs)
        timeout, hard_timeout = plan.search_ends_at - time.time(), True
    elif budget_hours is not None:
        # Set-up counts against the budget here as it does for a plan: a 30-minute budget
        # otherwise bought 30 minutes of trials after a minute or more of set-up.
        timeout = budget_hours * 3600 - (time.time() - started_at)
    elif runner_for(space).trains_in_epochs and not quiet and timeout is None:
        _estimate(arch=arch, settings=settings, split=split, tracker=tracker, workers=workers,
                  parent_run_id=parent_run_id, n_trials=n_trials)  # fmt: skip
    if engine == "keras-tuner":
        _work_keras_tuner(
            study=study,
            tuner=tuner,
            arch=arch,
            settings=settings,
            split=split,
            tracker=tracker,
            storage=storage,
            timeout=timeout,
            hard_timeout=hard_timeout,
            n_trials=n_trials,
            quiet=quiet,
            run_params=run_params,
        )
    elif workers == 1:
        _work(
            study=study,
            arch=arch,
            objectives=objectives,
            settings=settings,
            split=split,
            tracker=tracker,
            timeout=timeout,
            hard_timeout=hard_timeout,
            n_trials=n_trials,
            quiet=quiet,
            run_params=run_params,
            ladder=ladder,
        )
    elif workers == 0:
        click.echo(f"waiting for workers to run study {study.study_name}'s trials", err=True)
        wait_for_pool(study, tracker=tracker, timeout=timeout, hard=hard_timeout)
    else:
        command = [*worker_command(), "worker", "--study-name", study.study_name]
        command += ["--heartbeat-interval", str(heartbeat_interval)]
        command += ["--data-dir", str(data_dir)] if data_dir else []
        # A planned search's workers take its deadline and ladder from the study's plan.
        command += ["--budget-hours", str(budget_hours)] if budget_hours and not plan else []
        command += ["--timeout", str(timeout)] if timeout and not hard_timeout else []
        command += ["--quiet"] if quiet else []
        # The stores go by environment, not the command line, which `ps` shows any user.
        stores = {"FMSEARCH_STORAGE": storage, "MLFLOW_TRACKING_URI": tracker.tracking_uri}
        codes = run_local_workers(
            command, n_workers=workers, threads=threads or threads_per_worker(workers), env=stores
        )
        if any(codes):
            logger.warning("worker exit codes: %s", codes)
    outcome = summarize(study, parent_run_id="")
    _echo_outcome(outcome)
    try:
        if plan is not None:
            ladder.retire_waiting(study)
            _finals(study=study, arch=arch, settings=settings, split=split, tracker=tracker,
                    plan=plan, quiet=quiet, run_params=run_params,
                    parent_run_id=parent_run_id)  # fmt: skip
            if final_on_all_data:
                _retrain(study=study, arch=arch, settings=settings, split=split,
                         tracker=tracker, plan=plan, quiet=quiet, run_params=run_params,
                         parent_run_id=parent_run_id, max_params=max_params,
                         max_latency_ms=max_latency_ms)  # fmt: skip
            outcome = summarize(study, parent_run_id="")
        if refit_epochs:
            _refit(study=study, arch=arch, settings=settings, split=split, data=data,
                   tracker=tracker, epochs=refit_epochs, quiet=quiet,
                   run_params=run_params)  # fmt: skip
        if promote:
            if outcome.best_trial is None:
                raise FmsearchError(
                    f"study {outcome.study_name!r} has no completed trial to promote"
                )
            _promote(
                study=study,
                tracker=tracker,
                data=data,
                register_as=register_as,
                max_params=max_params,
                max_latency_ms=max_latency_ms,
            )
    finally:
        _refresh_report(study=study, tracker=tracker, register_as=register_as)
        if plan is not None:
            _check_plan(tracker=tracker, parent_run_id=parent_run_id, plan=plan)


def _starts(space, *, max_epochs: int, planned: bool) -> list[dict]:
    """The configurations a new study starts from: the published one, and for a short
    Keras search the same retuned for few epochs."""
    from search.kinds import runner_for

    families = isinstance(space, Families)
    published = space.starts() if families else [space.DEFAULTS]
    if not runner_for(space).trains_in_epochs or planned or max_epochs >= AUGMENTED_MIN_EPOCHS:
        return published
    return [*published, *(space.starts(short=True) if families else [short_run_start(space)])]


def _planned(*, budget_hours, trials_given, space, engine, objectives, refit_epochs) -> bool:
    """Whether ``run`` plans its search from --budget-hours (see the option's help)."""
    from search.kinds import runner_for

    if budget_hours is None or trials_given:
        return False
    why_not = (
        "a scikit-learn architecture" if not runner_for(space).trains_in_epochs
        else "--engine keras-tuner" if engine != "optuna"
        else "a multi-objective search" if len(objectives) > 1
        else "--refit-epochs (the plan trains its winners on all images itself)"
        if refit_epochs else None
    )  # fmt: skip
    if why_not:
        logger.info("--budget-hours bounds the trials, no plan: %s", why_not)
    return why_not is None


def _make_plan(*, study, arch, settings, split, data, tracker, parent_run_id, budget_hours,
               started_at, retrain_on_all):  # fmt: skip
    """Measure this host, plan the budget, print and record the plan; the plan and ladder."""
    from runners.precision import resolve_policy
    from search.budget import make_ladder, measure_host, record_plan
    from search.plan import make_plan

    throughput = measure_host(
        arch=arch, split=split, fixed=settings.fixed, policy=resolve_policy(settings.precision)
    )
    plan = make_plan(
        budget_seconds=budget_hours * 3600,
        train_images_per_s=throughput.train_images_per_s,
        eval_images_per_s=throughput.eval_images_per_s,
        train_images=len(split.x_train),
        val_images=len(split.x_val),
        started_at=started_at,
        probe_seconds=time.time() - started_at,
        max_rung_epochs=settings.max_epochs,
        retrain_on_all=retrain_on_all,
    )
    click.echo(plan.describe(arch=arch), err=True)
    record_plan(study, tracker=tracker, parent_run_id=parent_run_id, plan=plan, arch=arch)
    ladder = make_ladder(plan, data=data, full=split, val_size=settings.val_size)
    return plan, ladder


# Longer than this and `run --trials` suggests a --budget-hours command instead.
_LONG_SEARCH_SECONDS = 2 * 3600


def _estimate(*, arch, settings, split, tracker, workers, parent_run_id, n_trials) -> None:
    """Print (and record) what --trials N costs at most on this host, measured first."""
    from runners.precision import resolve_policy
    from search.budget import measure_host
    from search.plan import estimate_trials, span

    rate = measure_host(arch=arch, split=split, fixed=settings.fixed, seconds=1.0,
                        policy=resolve_policy(settings.precision))  # fmt: skip
    seconds = estimate_trials(
        n_trials=n_trials, max_epochs=settings.max_epochs, train_images=len(split.x_train),
        val_images=len(split.x_val), train_images_per_s=rate.train_images_per_s,
        eval_images_per_s=rate.eval_images_per_s, workers=max(workers, 1),
    )  # fmt: skip
    click.echo(
        f"estimate: {n_trials} trials of up to {settings.max_epochs} epochs on "
        f"{len(split.x_train):,} images take up to {span(seconds)} here "
        f"({rate.train_images_per_s:,.0f} training images/s; pruning and --patience end "
        "most trials sooner)",
        err=True,
    )
    if seconds > _LONG_SEARCH_SECONDS:
        click.echo(
            f"to fit a time budget instead: fmsearch run --arch {arch} --budget-hours 2",
            err=True,
        )
    try:
        tracker.log_metrics(parent_run_id, {"estimated_max_seconds": seconds})
    except Exception as exc:
        logger.warning("the estimate was not recorded: %s", exc)


def _timed_refit(*, study, arch, settings, split, tracker, quiet, run_params, refit_split):
    """``run(refit, seconds)``: one refit on ``refit_split`` in this process, ended after the
    epoch that passes ``seconds`` (what the plan's finals and retraining call)."""

    def run(refit, seconds):
        return _work(study=study, arch=arch, objectives=("accuracy",), settings=settings,
                     split=split, tracker=tracker, timeout=seconds, hard_timeout=True,
                     n_trials=1, quiet=quiet, run_params=run_params, refit_split=refit_split,
                     refit=refit)  # fmt: skip

    return run


def _finals(*, study, arch, settings, split, tracker, plan, quiet, run_params,
            parent_run_id) -> None:  # fmt: skip
    """Train the plan's top configurations on all the images, in this process, then keep
    their ensemble or flip TTA if either wins on validation."""
    from search.budget import run_finals
    from search.ensemble import combine_finals

    run = _timed_refit(study=study, arch=arch, settings=settings, split=split, tracker=tracker,
                       quiet=quiet, run_params=run_params, refit_split=split)  # fmt: skip
    trained = run_finals(study=study, plan=plan, run=run)
    if trained:
        click.echo(f"final training of trials {', '.join(map(str, trained))} on all images")
    choice = combine_finals(study=study, tracker=tracker, split=split,
                            parent_run_id=parent_run_id, arch=arch)  # fmt: skip
    if choice is not None:
        chosen = choice.chosen
        click.echo(
            f"{'kept ' if choice.combined else ''}{chosen.describe()}: val_accuracy "
            f"{chosen.val_accuracy:.4f}"
            + ("" if choice.combined else " (no ensemble or flip TTA beat it)")
        )


def _retrain(*, study, arch, settings, split, tracker, plan, quiet, run_params, parent_run_id,
             max_params, max_latency_ms) -> None:  # fmt: skip
    """--final-on-all-data: the chosen model's members trained again with the validation
    images, in this process, and the model that stands in for it."""
    from search.budget import retrain_on_all_data, with_validation_in_training
    from search.ensemble import add_stand_in
    from search.promotion import select_candidate

    everything = with_validation_in_training(split)
    run = _timed_refit(study=study, arch=arch, settings=settings, split=split, tracker=tracker,
                       quiet=quiet, run_params=run_params, refit_split=everything)  # fmt: skip
    chosen = select_candidate(study, max_params=max_params, max_latency_ms=max_latency_ms)
    retrained = retrain_on_all_data(study=study, plan=plan, chosen=chosen, run=run)
    add_stand_in(study=study, tracker=tracker, chosen=chosen, retrained=retrained,
                 parent_run_id=parent_run_id, arch=arch)  # fmt: skip
    outcome = (", ".join(f"trial {m} as trial {n}" for m, n in retrained.items())
               or "none: the time left did not hold a retraining")  # fmt: skip
    tracker.set_tags(parent_run_id, {FINAL_ON_ALL_DATA_TAG: outcome})
    click.echo(f"retrained on {len(everything.x_train):,} images (validation included): {outcome}")


def _check_plan(*, tracker, parent_run_id, plan) -> None:
    """Say how the plan's estimate compared with what the command took."""
    from search.budget import record_outcome

    try:
        figures = record_outcome(tracker=tracker, parent_run_id=parent_run_id, plan=plan)
    except Exception as exc:
        logger.warning("the plan's outcome was not recorded: %s", exc)
        return
    click.echo(
        f"plan: estimated {figures['plan_estimated_seconds']:.0f} s, took "
        f"{figures['plan_actual_seconds']:.0f} s ({figures['plan_error']:+.0%}; budget "
        f"{plan.budget_seconds:.0f} s)"
    )


def _refresh_report(*, study, tracker, register_as: str | None) -> None:
    """The study's report on its parent run; a report that cannot be drawn costs a warning."""
    from search.promotion import default_model_name
    from search.report import publish_report

    try:
        publish_report(
            study=study, tracker=tracker, model_name=register_as or default_model_name(study)
        )
    except Exception as exc:
        logger.warning("the study report was not refreshed: %s", exc, exc_info=True)


@main.command()
@click.option(
    "--study-name",
    required=True,
    callback=_check_study_name,
    help="The study to work on (made by `fmsearch run`).",
)
@storage_option
@tracking_option
@data_dir_option
@threads_option
@heartbeat_option
@timeout_option
@budget_option
@click.option(
    "--wait",
    type=_Finite(min=0),
    default=0,
    show_default=True,
    metavar="SECONDS",
    help="Wait this long for the study to be created.",
)
@click.option(
    "--max-trials-per-process",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    metavar="N",
    help="Start again as a new process after N trials, freeing what the old one kept (0: never).",
)
@click.option(
    "--max-memory-mib",
    type=_Finite(min=0),
    default=0,
    metavar="MIB",
    help="Start again as a new process after a trial that leaves it this large (0: never).",
)
@click.option("--worker-index", type=click.IntRange(min=0), default=0, hidden=True)
# When the first process of this worker started: a worker started again keeps its time limit.
@click.option("--started-at", type=float, envvar=STARTED_AT_ENV, hidden=True)
@quiet_option
@verbose_option
def worker(
    study_name,
    storage,
    tracking_uri,
    data_dir,
    threads,
    heartbeat_interval,
    timeout,
    budget_hours,
    wait,
    max_trials_per_process,
    max_memory_mib,
    worker_index,
    started_at,
    quiet,
    verbose,
) -> None:
    """Run trials of an existing study until its budget is spent, then exit.

    Start as many as you like, on any host that reaches the study's storage and the MLflow
    tracking store; each trial runs once. Ctrl-C stops a worker cleanly (its trial fails);
    a killed worker's trial is run again by another worker. Every --max-trials-per-process
    trials (or past --max-memory-mib) the worker starts again as a new process, the same
    command with the same process id, so that a long study does not grow it without bound.

    \b
    Example:
      fmsearch worker --study-name resnet --storage postgresql://optuna@db/optuna
    """
    from search.kinds import runner_for

    _setup_logging(quiet=quiet, verbose=verbose)
    _set_threads(threads)
    started_at = time.time() if started_at is None else started_at
    timeout, hard_timeout = _time_limit(timeout, budget_hours)
    if timeout is not None:
        timeout -= time.time() - started_at
    from runners.data import load_fashion_mnist, split_train_val
    from search.budget import make_ladder, stored_plan
    from search.urls import default_storage
    from search.workers import Recycler, open_worker_study, pool_open

    tracker = _tracker(tracking_uri)
    recycler = Recycler(
        max_trials=max_trials_per_process or None, max_memory_mib=max_memory_mib or None
    )
    study, arch, objectives, settings = open_worker_study(
        storage=_storage(storage or default_storage(), heartbeat_interval=heartbeat_interval),
        study_name=study_name,
        wait=wait,
        seed_offset=1000 * worker_index,
    )
    preload(keras=runner_for(resolve(arch)).uses_tensorflow)
    data = load_fashion_mnist(data_dir=data_dir)
    split = split_train_val(
        data.x_train, data.y_train, val_size=settings.val_size, subset=settings.subset
    )
    ladder = None
    plan = stored_plan(study)
    if plan is not None and timeout is None:
        # A planned search: its ladder, and its deadline for everyone.
        ladder = make_ladder(plan, data=data, full=split, val_size=settings.val_size)
        timeout, hard_timeout = plan.search_ends_at - time.time(), True
    outcome = _work(
        study=study,
        arch=arch,
        objectives=objectives,
        settings=settings,
        split=split,
        tracker=tracker,
        timeout=timeout,
        hard_timeout=hard_timeout,
        n_trials=None,
        quiet=True,
        run_params={},
        # A refit trial re-run after its worker died can come to any worker: all images.
        refit_split=_full_split(data, settings=settings, split=split),
        ladder=ladder,
        callbacks=[recycler],
    )
    _echo_outcome(outcome)
    if recycler.reason is not None and pool_open(study):
        _start_again(recycler.reason, started_at=started_at)


def _start_again(reason: str, *, started_at: float) -> None:
    """Replace this worker process with a new one running the same command (``exec``: same
    process id, so whatever supervises it sees one worker throughout)."""
    from search.workers import worker_command

    if sys.argv[1:2] != ["worker"]:
        # Called in-process (a test's CliRunner): there is no command line to start again.
        logger.warning("worker stopped after %s; not started from a command line", reason)
        return
    logger.warning("worker starts again as a new process after %s", reason)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(
        sys.executable,
        [*worker_command(), *sys.argv[1:]],
        {**os.environ, STARTED_AT_ENV: repr(started_at)},
    )


@main.command()
@storage_option
@click.option("--study-name", callback=_check_study_name, help="Only this study.")
def studies(storage, study_name) -> None:
    """List the studies in a storage: trials waiting/running/complete/pruned/failed, best."""
    _setup_logging(quiet=True)
    import optuna

    from search.names import ARCH_ATTR
    from search.outcome import summarize
    from search.urls import default_storage

    url = storage or default_storage()
    optuna_storage = _storage(url)
    names = [s.study_name for s in optuna.get_all_study_summaries(optuna_storage)]
    if study_name is not None:
        names = [n for n in names if n == study_name]
    click.echo(f"storage {redact(url)}: {len(names)} studies")
    header = ("study", "arch", "waiting", "running", "complete", "pruned", "failed", "best")
    click.echo("\t".join(header))
    for name in sorted(names):
        study = optuna.load_study(study_name=name, storage=optuna_storage)
        o = summarize(study, parent_run_id="")
        best = f"{o.best_value:.4f} (trial {o.best_trial})" if o.best_trial is not None else "-"
        row = (name, study.user_attrs.get(ARCH_ATTR, "?"), o.n_waiting, o.n_running,
               o.n_complete, o.n_pruned, o.n_failed, best)  # fmt: skip
        click.echo("\t".join(map(str, row)))


@main.command()
@click.option(
    "--backend-store-uri",
    envvar="FMSEARCH_SERVER_BACKEND",
    metavar="URI",
    help="The server's database. Env: FMSEARCH_SERVER_BACKEND. "
    "[default: sqlite:///mlruns/mlflow.db]",
)
@click.option(
    "--artifacts-destination",
    envvar="FMSEARCH_SERVER_ARTIFACTS",
    metavar="URI",
    help="Where the server keeps the artifacts it serves. Env: FMSEARCH_SERVER_ARTIFACTS. "
    "[default: mlruns/artifacts]",
)
@host_option
@port_option(default=5000)
@click.option("--workers", "server_workers", type=click.IntRange(min=1), default=2,
              show_default=True, help="Server processes.")  # fmt: skip
@click.option(
    "--allowed-hosts",
    envvar="FMSEARCH_SERVER_ALLOWED_HOSTS",
    metavar="HOSTS",
    help="Comma-separated names the server answers to (the Host header: 'mlflow', "
    "'tracking-host:5000', wildcards 'app-*'), besides localhost and IP addresses, which it "
    "always answers. Env: FMSEARCH_SERVER_ALLOWED_HOSTS.",
)
def server(
    backend_store_uri, artifacts_destination, host, port, server_workers, allowed_hosts
) -> None:
    """Run an MLflow tracking server over fmsearch's store, for workers on other hosts.

    Point workers at it with --tracking-uri http://HOST:PORT; reached by a name (not an IP
    address), the name must be in --allowed-hosts: MLflow refuses other Host headers (DNS
    rebinding). It listens on 127.0.0.1 unless --host says otherwise: it has no
    authentication, so put a proxy in front to expose it.
    """
    from search.urls import DEFAULT_STORE_DIR, default_tracking_uri, sqlite_path

    uri = backend_store_uri or default_tracking_uri()
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    artifacts = artifacts_destination or (DEFAULT_STORE_DIR / "artifacts").resolve().as_uri()
    command = [_mlflow_executable(), "server", "--artifacts-destination", artifacts]
    command += ["--serve-artifacts", "--host", host, "--port", str(port)]
    command += ["--workers", str(server_workers)]
    if allowed_hosts:
        command += ["--allowed-hosts", _with_local_hosts(allowed_hosts)]
    click.echo(
        f"MLflow tracking server on http://{host}:{port} over {redact(uri)} (Ctrl-C stops it)",
        err=True,
    )
    sys.stdout.flush()
    # The store's URL, password included, goes by environment: a command line is what `ps`
    # shows every user of the host.
    os.execve(command[0], command, {**os.environ, "MLFLOW_BACKEND_STORE_URI": uri})


def _with_local_hosts(allowed_hosts: str) -> str:
    """``allowed_hosts`` as MLflow matches Host headers (exactly, port included: a bare name
    also gets ``name:*``), plus what MLflow allows when not given the option (localhost and
    private IP addresses), which the option would otherwise take away."""
    from mlflow.server.security_utils import get_default_allowed_hosts

    names = [name.strip() for name in allowed_hosts.split(",") if name.strip()]
    with_ports = [f"{name}:*" for name in names if ":" not in name and "*" not in name]
    return ",".join([*names, *with_ports, *get_default_allowed_hosts()])


@main.command()
@click.option(
    "--study-name",
    required=True,
    callback=_check_study_name,
    help="The study whose best trial to promote.",
)
@storage_option
@tracking_option
@data_dir_option
@register_as_option
@max_params_option
@max_latency_option
@quiet_option
@verbose_option
def promote(
    study_name,
    storage,
    tracking_uri,
    data_dir,
    register_as,
    max_params,
    max_latency_ms,
    quiet,
    verbose,
) -> None:
    """Judge a study's best trial on the test set and register it.

    It becomes the `champion` alias only if it beats the current champion's test accuracy;
    otherwise it is the `challenger`. The decision is recorded on the model version.
    """
    _setup_logging(quiet=quiet, verbose=verbose)
    from runners.data import load_fashion_mnist
    from search.storage import load_study
    from search.urls import default_storage

    tracker = _tracker(tracking_uri)
    study = load_study(storage=_storage(storage or default_storage()), study_name=study_name)
    data = load_fashion_mnist(data_dir=data_dir)
    _promote(
        study=study,
        tracker=tracker,
        data=data,
        register_as=register_as,
        max_params=max_params,
        max_latency_ms=max_latency_ms,
    )


def _promote(
    *,
    study,
    tracker,
    data,
    register_as: str | None,
    max_params: int | None,
    max_latency_ms: float | None,
) -> None:
    from search.promotion import default_model_name, promote_winner

    promotion = promote_winner(
        study=study,
        tracker=tracker,
        test_images=data.x_test,
        test_labels=data.y_test,
        model_name=register_as or default_model_name(study),
        max_params=max_params,
        max_latency_ms=max_latency_ms,
    )
    click.echo(
        f"{promotion.model_name} version {promotion.version} from trial "
        f"{promotion.trial_number} is the {promotion.alias} ({promotion.decision}); "
        f"test macro F1 {promotion.test_macro_f1:.4f}"
    )
    uri = f"models:/{promotion.model_name}@{promotion.alias}"
    click.echo(f"load it with mlflow.pyfunc.load_model({uri!r})")


@main.command()
@click.option(
    "--study-name",
    required=True,
    callback=_check_study_name,
    help="The study to report on.",
)
@storage_option
@tracking_option
@register_as_option
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also write the report as one HTML file here.  [default: report-STUDY.html]",
)
@quiet_option
@verbose_option
def report(study_name, storage, tracking_uri, register_as, output, quiet, verbose) -> None:
    """Draw a study's report and attach it to its MLflow parent run.

    Optimization history, hyperparameter importances, parallel coordinates, intermediate
    values, trials per worker, the Pareto front (multi-objective), the best 10 trials, the
    epochs pruning saved and the champion's test result; also one self-contained HTML file.
    """
    _setup_logging(quiet=quiet, verbose=verbose)
    from search.promotion import default_model_name
    from search.report import publish_report
    from search.storage import load_study
    from search.urls import default_storage

    tracker = _tracker(tracking_uri)
    study = load_study(storage=_storage(storage or default_storage()), study_name=study_name)
    output = output or Path(f"report-{study_name}.html")
    result = publish_report(
        study=study,
        tracker=tracker,
        model_name=register_as or default_model_name(study),
        html_path=output,
    )
    counts = ", ".join(f"{n} {state.lower()}" for state, n in result.counts.items())
    click.echo(f"study {study_name}: {counts}; {result.epochs_saved} epochs saved by pruning")
    click.echo(f"report: {output} and the parent run's artifacts under report/")


@main.command()
@tracking_option
@host_option
@port_option(default=5000)
def ui(tracking_uri, host, port) -> None:
    """Serve the MLflow UI over fmsearch's tracking store."""
    from search.urls import default_artifact_root, default_tracking_uri, sqlite_path

    uri = tracking_uri or default_tracking_uri()
    if uri.startswith(("http://", "https://")):
        raise FmsearchError(f"{redact(uri)} is already a tracking server: open it in a browser")
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise FmsearchError(f"no MLflow store at {db}: run `fmsearch run` first")
    command = [_mlflow_executable(), "ui", "--backend-store-uri", uri]
    # One person browsing: one worker process, not MLflow's four (each imports all of MLflow).
    command += ["--host", host, "--port", str(port), "--workers", "1"]
    artifact_root = default_artifact_root(uri)
    if artifact_root is not None:
        command += ["--default-artifact-root", artifact_root.as_uri()]
    click.echo(f"MLflow UI on http://{host}:{port} over {redact(uri)} (Ctrl-C stops it)", err=True)
    sys.stdout.flush()
    os.execv(command[0], command)


def _executable(name: str, *, missing: str) -> str:
    """The command ``name`` beside this Python (the venv's), else on PATH."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise FmsearchError(missing)
    return found


def _mlflow_executable() -> str:
    return _executable("mlflow", missing="the `mlflow` command is not installed beside fmsearch")


@main.command()
@click.argument(
    "files",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option(
    "--model",
    "model_uri",
    required=True,
    help="A registered model (models:/NAME@ALIAS or models:/NAME/VERSION) or a model URI.",
)
@tracking_option
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write every column (all 10 probabilities) to this CSV file.",
)
def predict(files, model_uri, tracking_uri, output) -> None:
    """Classify images from .npy arrays or 28x28 grayscale .png files.

    \b
    Examples:
      fmsearch predict --model models:/fmsearch-resnet@champion shirt.png boot.png
      fmsearch predict --model models:/fmsearch-mlp/3 batch.npy --output predictions.csv
    """
    _setup_logging(quiet=True)
    from runners.data import read_image_files

    images, names = read_image_files(files)
    tracker = _tracker(tracking_uri)
    try:
        model = tracker.load_served_model(model_uri)
    except Exception as exc:
        raise FmsearchError(f"cannot load model {model_uri}: {str(exc).splitlines()[0]}") from exc
    try:
        frame = model.predict(images)
    except ValueError as exc:
        raise FmsearchError(str(exc)) from exc
    frame.insert(0, "image", names)
    for _, row in frame.iterrows():
        probability = row[row["class_name"]]
        click.echo(f"{row['image']}\t{row['class_index']}\t{row['class_name']}\t{probability:.4f}")
    if output is not None:
        frame.to_csv(output, index=False)
        click.echo(f"wrote {len(frame)} rows to {output}", err=True)


@main.command()
@click.argument("arch", required=False, type=click.Choice(sorted(ARCHITECTURES)))
def spaces(arch) -> None:
    """List the architectures, or one architecture's hyperparameters and ranges."""
    if arch is None:
        for name, module in ARCHITECTURES.items():
            click.echo(f"{name:8} {module.__doc__.strip().splitlines()[0]}")
        click.echo("\n`fmsearch spaces ARCH` lists an architecture's hyperparameters.")
        return
    import optuna

    from search.choices import describe_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    module = ARCHITECTURES[arch]
    click.echo(module.__doc__.strip().splitlines()[0])
    for name, dist in describe_space(module).items():
        click.echo(f"  {name:16} {_describe_distribution(dist)}")


def _describe_distribution(dist) -> str:
    import optuna.distributions as d

    if isinstance(dist, d.CategoricalDistribution):
        return "one of " + ", ".join(map(str, dist.choices))
    kind = "int" if isinstance(dist, d.IntDistribution) else "float"
    scale = ", log scale" if dist.log else ""
    return f"{kind} from {dist.low:g} to {dist.high:g}{scale}"


@main.command()
@data_dir_option
def data(data_dir) -> None:
    """Find and verify Fashion-MNIST (shapes, labels, checksums); download it if needed."""
    _setup_logging(quiet=True)
    from runners.data import load_fashion_mnist

    loaded = load_fashion_mnist(data_dir=data_dir)
    click.echo(
        f"Fashion-MNIST from {loaded.source}: {len(loaded.y_train)} training and "
        f"{len(loaded.y_test)} test images, checksums OK"
    )


@main.command()
@tracking_option
@data_dir_option
@click.option(
    "--model",
    "model_names",
    multiple=True,
    metavar="NAME",
    help="Registered model to rank (repeatable).  [default: every fmsearch-* model]",
)
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=Path("leaderboard.csv"),
    show_default=True,
    help="Where to write the table as CSV.",
)
@quiet_option
@verbose_option
def leaderboard(tracking_uri, data_dir, model_names, csv_path, quiet, verbose) -> None:
    """Rank the champion of every study's model on the held-out test set.

    Accuracy, macro precision, recall and F1 are recomputed from each registered model; also
    its parameters, the training time of its trial and its latency per image. Prints a table,
    writes a CSV, and logs both with a bar chart to the fmsearch-leaderboard experiment.
    """
    _setup_logging(quiet=quiet, verbose=verbose)
    from runners.data import load_fashion_mnist
    from search.insight import build_leaderboard, entry_row, publish_leaderboard

    tracker = _tracker(tracking_uri)
    data = load_fashion_mnist(data_dir=data_dir)
    entries = build_leaderboard(
        tracker=tracker,
        test_images=data.x_test,
        test_labels=data.y_test,
        model_names=model_names,
    )
    rows = [entry_row(e) for e in entries]
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in rows[0]}
    click.echo("  ".join(k.rjust(w) if k != "model" else k.ljust(w) for k, w in widths.items()))
    for row in rows:
        click.echo(
            "  ".join(
                row[k].rjust(w) if k != "model" else row[k].ljust(w) for k, w in widths.items()
            )
        )
    publish_leaderboard(
        entries=entries, tracker=tracker, csv_path=csv_path, n_images=len(data.y_test)
    )
    click.echo(f"leaderboard: {csv_path}, and a run in the fmsearch-leaderboard experiment")


@main.command()
@tracking_option
@data_dir_option
@click.option(
    "--val-size",
    type=click.IntRange(min=10),
    default=10_000,
    show_default=True,
    help="Validation images, split off the 60k training images as `fmsearch run` does.",
)
@quiet_option
@verbose_option
def eda(tracking_uri, data_dir, val_size, quiet, verbose) -> None:
    """Log the class distribution of train/validation/test and samples of each class."""
    _setup_logging(quiet=quiet, verbose=verbose)
    from runners.data import CLASS_NAMES, load_fashion_mnist, split_train_val
    from search.insight import run_eda

    tracker = _tracker(tracking_uri)
    data = load_fashion_mnist(data_dir=data_dir)
    split = split_train_val(data.x_train, data.y_train, val_size=val_size)
    run_id, counts = run_eda(data=data, split=split, tracker=tracker)
    click.echo("class".ljust(12) + "".join(s.rjust(12) for s in counts))
    for name in CLASS_NAMES:
        click.echo(name.ljust(12) + "".join(str(c[name]).rjust(12) for c in counts.values()))
    click.echo(f"EDA run {run_id} in the fmsearch-eda experiment")


@main.command()
@click.option(
    "--model",
    "model_uri",
    required=True,
    help="The model to explain, e.g. models:/fmsearch-cnn@champion.",
)
@click.option(
    "--index",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="The test image to explain.",
)
@click.option(
    "--embedding",
    type=click.Choice(["pca", "tsne"]),
    help="Also map the model's penultimate features of the test set in 2-d.",
)
@click.option(
    "--embedding-images",
    type=click.IntRange(min=10),
    default=2000,
    show_default=True,
    help="Test images in the embedding map.",
)
@click.option(
    "--lime-samples",
    type=click.IntRange(min=50),
    default=500,
    show_default=True,
    help="Perturbed images LIME fits its local model on.",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("explanations"),
    show_default=True,
)
@tracking_option
@data_dir_option
@quiet_option
@verbose_option
def explain(
    model_uri,
    index,
    embedding,
    embedding_images,
    lime_samples,
    output_dir,
    tracking_uri,
    data_dir,
    quiet,
    verbose,
) -> None:
    """Explain a model's prediction for one test image: occlusion saliency and LIME.

    \b
    Examples:
      fmsearch explain --model models:/fmsearch-cnn@champion --index 42
      fmsearch explain --model models:/fmsearch-cnn@champion --embedding tsne
    """
    _setup_logging(quiet=quiet, verbose=verbose)
    from runners.data import load_fashion_mnist
    from search.insight import explain as explain_image

    tracker = _tracker(tracking_uri)
    data = load_fashion_mnist(data_dir=data_dir)
    result = explain_image(
        tracker=tracker,
        model_uri=model_uri,
        images=data.x_test,
        labels=data.y_test,
        index=index,
        output_dir=output_dir,
        lime_samples=lime_samples,
        embedding=embedding,
        embedding_images=embedding_images,
    )
    click.echo(
        f"test image {index}: true {result.true_class}, predicted {result.predicted_class} "
        f"({result.confidence:.1%})"
    )
    for path in result.files:
        click.echo(f"wrote {path}")
    click.echo(f"logged to run {result.run_id} in the fmsearch-explain experiment")


@main.command("lr-find")
@click.option("--arch", type=click.Choice(sorted(ARCHITECTURES)), required=True)
@click.option(
    "--steps",
    type=click.IntRange(min=10),
    default=200,
    show_default=True,
    help="Batches the learning rate rises over.",
)
@click.option("--min-lr", type=_Finite(min=0, min_open=True), default=1e-6,
              show_default=True)  # fmt: skip
@click.option("--max-lr", type=_Finite(min=0, min_open=True), default=1.0,
              show_default=True)  # fmt: skip
@click.option(
    "--subset",
    type=click.IntRange(min=100),
    default=20_000,
    show_default=True,
    metavar="N",
    help="Training images to draw the batches from.",
)
@click.option(
    "--write-space-file",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the suggested range as a space file, for `fmsearch run --space-file`.",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("explanations"),
    show_default=True,
)
@tracking_option
@data_dir_option
@threads_option
@quiet_option
@verbose_option
def lr_find(
    arch,
    steps,
    min_lr,
    max_lr,
    subset,
    write_space_file,
    output_dir,
    tracking_uri,
    data_dir,
    threads,
    quiet,
    verbose,
) -> None:
    """Find a learning-rate range for ARCH: train briefly while the rate rises exponentially.

    Plots loss against learning rate and suggests a range; --write-space-file narrows a
    study's learning_rate to it:

    \b
      fmsearch lr-find --arch cnn --write-space-file lr.yaml
      fmsearch run --arch cnn --space-file lr.yaml
    """
    _setup_logging(quiet=quiet, verbose=verbose)
    _set_threads(threads)
    from runners.data import load_fashion_mnist, split_train_val
    from search.insight import find_learning_rate_range

    if min_lr >= max_lr:
        raise click.BadParameter(f"expected --min-lr below --max-lr ({max_lr:g}), got {min_lr:g}")
    tracker = _tracker(tracking_uri)
    data = load_fashion_mnist(data_dir=data_dir)
    split = split_train_val(data.x_train, data.y_train, val_size=1000, subset=subset)
    found = find_learning_rate_range(
        arch=arch,
        split=split,
        tracker=tracker,
        output_dir=output_dir,
        steps=steps,
        min_lr=min_lr,
        max_lr=max_lr,
    )
    click.echo(
        f"{arch}: suggested learning rate {found.low:.3g} to {found.high:.3g} "
        f"(measured {found.measured_low:.3g} to {found.measured_high:.3g}); plot {found.plot}"
    )
    if write_space_file is not None:
        write_space_file.write_text(
            f"# fmsearch lr-find --arch {arch} (run {found.run_id})\n"
            f"learning_rate: {{low: {found.low:.3g}, high: {found.high:.3g}}}\n",
            encoding="utf-8",
        )
        click.echo(f"wrote {write_space_file}: use it with --space-file")


@main.command()
@storage_option
@host_option
@port_option(default=8080)
def dashboard(storage, host, port) -> None:
    """Serve optuna-dashboard over the study storage (pip install 'fmsearch[dashboard]')."""
    from search.urls import default_storage

    url = storage or default_storage()
    found = _executable(
        "optuna-dashboard",
        missing="optuna-dashboard is not installed: expected `pip install 'fmsearch[dashboard]'`",
    )
    click.echo(f"optuna-dashboard on http://{host}:{port} over {redact(url)}", err=True)
    sys.stdout.flush()
    os.execv(found, [found, url, "--host", host, "--port", str(port)])
