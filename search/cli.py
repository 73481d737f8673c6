"""The ``fmsearch`` command line: thin click commands over ``search``, ``spaces``, ``runners``.

Environment variables are read here only (click's ``envvar=``; the flag wins). Heavy imports
(TensorFlow, MLflow, Optuna) happen inside the commands, so ``fmsearch --help`` is instant.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
from pathlib import Path

import click

from runners.errors import FmsearchError
from search.choices import PRUNERS, SAMPLERS
from spaces import ARCHITECTURES

logger = logging.getLogger("search.cli")

_ENVIRONMENT = {
    # fmsearch's processes send nothing home.
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # Bounded retries: a dead tracking server costs seconds, not MLflow's default 4 minutes.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


class _Group(click.Group):
    """Turns fmsearch's fatal errors into one-line messages with a non-zero exit."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FmsearchError as exc:
            raise click.ClickException(str(exc)) from None


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
quiet_option = click.option("--quiet", "-q", is_flag=True, help="Only warnings and the result.")
verbose_option = click.option("--verbose", "-v", is_flag=True, help="Debug logs and tracebacks.")


def _check_study_name(ctx: click.Context, param: click.Parameter, value: str | None):
    # The name is also an MLflow experiment name, a filter value and a directory name.
    if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
        raise click.BadParameter(
            f"expected letters, digits, '.', '_' or '-' (not first), got {value!r}"
        )
    return value


def _setup_logging(*, quiet: bool = False, verbose: bool = False) -> None:
    import optuna

    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
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


def _storage(storage: str):
    from search.storage import open_storage

    return open_storage(storage)


@main.command()
@click.option(
    "--arch",
    type=click.Choice(sorted(ARCHITECTURES)),
    required=True,
    help="Architecture to search.",
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
@click.option("--seed", type=int, help="Seed of the sampler and of each trial's initial weights.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Start no new trial after this long.",
)
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
@data_dir_option
@register_as_option
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
    timeout,
    max_epochs,
    patience,
    subset,
    val_size,
    data_dir,
    register_as,
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
      fmsearch run --arch mlp --storage postgresql://user@db/optuna --study-name mlp-big
    """
    _setup_logging(quiet=quiet, verbose=verbose)
    from tqdm.contrib.logging import logging_redirect_tqdm

    from runners.data import load_fashion_mnist, split_train_val
    from search.choices import make_pruner, make_sampler
    from search.progress import ProgressBar
    from search.storage import create_or_load_study
    from search.study import run_study
    from search.urls import default_storage, redact

    # Everything that can be wrong with the input is checked before the study exists.
    tracker = _tracker(tracking_uri)
    storage = storage or default_storage()
    optuna_storage = _storage(storage)
    data = load_fashion_mnist(data_dir=data_dir)
    split = split_train_val(data.x_train, data.y_train, val_size=val_size, subset=subset)
    study = create_or_load_study(
        storage=optuna_storage,
        study_name=study_name or arch,
        arch=arch,
        sampler=make_sampler(sampler, seed=seed),
        pruner=make_pruner(pruner, max_epochs=max_epochs),
    )
    if seed is not None and study.trials:
        # A resumed study with the same seed would otherwise replay its first suggestions.
        study.sampler = make_sampler(sampler, seed=seed + len(study.trials))
    logger.info(
        "study %s: %d trials on %d training / %d validation images, up to %d epochs",
        study.study_name,
        n_trials,
        len(split.y_train),
        len(split.y_val),
        max_epochs,
    )
    progress = ProgressBar(total=n_trials, disable=True if quiet else None)
    try:
        with logging_redirect_tqdm():
            outcome = run_study(
                study=study,
                arch=arch,
                split=split,
                tracker=tracker,
                n_trials=n_trials,
                max_epochs=max_epochs,
                timeout=timeout,
                seed=seed,
                patience=patience or None,
                run_params={
                    "sampler": sampler,
                    "pruner": pruner,
                    "max_epochs": max_epochs,
                    "patience": patience,
                    "subset": subset or len(split.y_train),
                    "val_size": val_size,
                    "seed": seed,
                    "storage": redact(storage),
                    "data_source": data.source,
                },
                callbacks=[progress],
            )
    finally:
        progress.close()
    click.echo(
        f"study {outcome.study_name}: {outcome.n_complete} complete, {outcome.n_pruned} pruned, "
        f"{outcome.n_failed} failed"
        + (
            f"; best trial {outcome.best_trial}: val_accuracy {outcome.best_value:.4f}"
            if outcome.best_trial is not None
            else ""
        )
    )
    if not promote:
        return
    if outcome.best_trial is None:
        raise FmsearchError(f"study {outcome.study_name!r} has no completed trial to promote")
    _promote(study=study, tracker=tracker, data=data, register_as=register_as)


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
@quiet_option
@verbose_option
def promote(study_name, storage, tracking_uri, data_dir, register_as, quiet, verbose) -> None:
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
    _promote(study=study, tracker=tracker, data=data, register_as=register_as)


def _promote(*, study, tracker, data, register_as: str | None) -> None:
    from search.promotion import default_model_name, promote_winner

    promotion = promote_winner(
        study=study,
        tracker=tracker,
        test_images=data.x_test,
        test_labels=data.y_test,
        model_name=register_as or default_model_name(study),
    )
    click.echo(
        f"{promotion.model_name} version {promotion.version} from trial "
        f"{promotion.trial_number} is the {promotion.alias} ({promotion.decision}); "
        f"test macro F1 {promotion.test_macro_f1:.4f}"
    )
    uri = f"models:/{promotion.model_name}@{promotion.alias}"
    click.echo(f"load it with mlflow.pyfunc.load_model({uri!r})")


@main.command()
@tracking_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
def ui(tracking_uri, host, port) -> None:
    """Serve the MLflow UI over fmsearch's tracking store."""
    from search.urls import default_artifact_root, default_tracking_uri, redact, sqlite_path

    uri = tracking_uri or default_tracking_uri()
    if uri.startswith(("http://", "https://")):
        raise FmsearchError(f"{redact(uri)} is already a tracking server: open it in a browser")
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise FmsearchError(f"no MLflow store at {db}: run `fmsearch run` first")
    command = [_mlflow_executable(), "ui", "--backend-store-uri", uri]
    command += ["--host", host, "--port", str(port)]
    artifact_root = default_artifact_root(uri)
    if artifact_root is not None:
        command += ["--default-artifact-root", artifact_root.as_uri()]
    click.echo(f"MLflow UI on http://{host}:{port} over {redact(uri)} (Ctrl-C stops it)", err=True)
    sys.stdout.flush()
    os.execv(command[0], command)


def _mlflow_executable() -> str:
    beside = Path(sys.executable).with_name("mlflow")
    found = str(beside) if beside.exists() else shutil.which("mlflow")
    if found is None:
        raise FmsearchError("the `mlflow` command is not installed beside fmsearch")
    return found


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
