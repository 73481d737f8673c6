"""What the ``fmsearch`` commands share: the environment they set, their common options
(declared once here), option types, and logging."""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path

import click

from runners.precision import PRECISIONS
from search.storage.urls import redact
from spaces import ARCHITECTURES, resolve

ENVIRONMENT = {
    # fmsearch's processes send nothing home.
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # Bounded retries: a dead tracking server costs seconds, not MLflow's default 4 minutes.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    # MLflow's warnings (a pickled scikit-learn model's, say) are for -v, like TensorFlow's.
    "MLFLOW_LOGGING_LEVEL": "ERROR",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # MLflow writes "View run ... at: URL" to stdout itself, the tracking URI's password
    # included (found by tests/scale_out/test_secrets.py); fmsearch prints its own lines.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # `fmsearch ui` and `fmsearch server`: MLflow 3's job runner (seven Huey processes for
    # GenAI jobs, which fmsearch never submits) more than doubles the server's start-up.
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
}


class Finite(click.FloatRange):
    """A ``FloatRange`` that refuses nan, which passes every comparison, and infinities, which
    are no limit where a limit is asked for."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"expected a finite number, got {value!r}", param, ctx)
        return number


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
    type=Finite(min=0, min_open=True),
    metavar="MS",
    help="Promote only models that predict in at most MS milliseconds per image.",
)
timeout_option = click.option(
    "--timeout",
    type=Finite(min=0, min_open=True),
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
    type=Finite(min=0, min_open=True),
    metavar="HOURS",
    help="The time the whole command may take. Without --trials (Keras architectures): "
    "measure this host, plan a ladder of growing data subsets, train the top configurations "
    "on all images, promote (the plan is printed first). With --trials: stop starting "
    "trials after this long; a Keras trial still running ends after its current epoch.",
)


class ArchType(click.ParamType):
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
seed_option = click.option(
    "--seed", type=click.IntRange(0, 2**32 - 1), metavar="N",
    help="Seed of the sampler and of each trial's initial weights, data order and augmentation "
    "(0 to 2**32-1, NumPy's range).",
)  # fmt: skip
subset_option = click.option(
    "--subset", type=click.IntRange(min=1), metavar="N",
    help="Train on N training images (stratified) instead of all 50,000.",
)  # fmt: skip
precision_option = click.option(
    "--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
    help="Keras models compute in float32, or in mixed bfloat16/float16 (weights and the "
    "softmax stay float32); auto: mixed bfloat16 on CPUs with native bfloat16 (AMX, "
    "AVX512-BF16) and Ampere+ GPUs, mixed float16 on older GPUs, else float32. Each worker "
    "resolves auto on its own host.",
)  # fmt: skip
quiet_option = click.option("--quiet", "-q", is_flag=True, help="Only warnings and the result.")
verbose_option = click.option("--verbose", "-v", is_flag=True, help="Debug logs and tracebacks.")


# "fmsearch-" plus the name is the default registered model name; MLflow's registry keeps
# names of at most 256 characters, and a directory name is at most 255 bytes.
MAX_STUDY_NAME = 128
STARTED_AT_ENV = "FMSEARCH_WORKER_STARTED_AT"


def check_study_name(ctx: click.Context, param: click.Parameter, value: str | None):
    # The name is also an MLflow experiment name, a filter value and a directory name.
    if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
        raise click.BadParameter(
            f"expected letters, digits, '.', '_' or '-' (not first), got {value!r}"
        )
    if value is not None and len(value) > MAX_STUDY_NAME:
        raise click.BadParameter(f"expected at most {MAX_STUDY_NAME} characters, got {len(value)}")
    return value


def redact_record(record: logging.LogRecord) -> bool:
    """Every log line without the passwords of the URLs it quotes (fmsearch's own lines
    redact them; a library's warning, a retry or a traceback may quote a URL whole)."""
    record.msg, record.args = redact(record.getMessage()), None
    if record.exc_info:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        record.exc_info = None
    return True


def setup_logging(*, quiet: bool = False, verbose: bool = False) -> None:
    import optuna

    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    if verbose:  # MLflow sets its loggers' level from this when it is imported
        os.environ["MLFLOW_LOGGING_LEVEL"] = "DEBUG"
    logging.basicConfig(level=level, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact_record)
    for name in ("search", "runners", "spaces"):
        logging.getLogger(name).setLevel(level)
    # Optuna logs every failed trial's traceback at WARNING; fmsearch logs one line per trial.
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.DEBUG if verbose else optuna.logging.ERROR)
    for noisy in ("mlflow", "alembic", "absl"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.ERROR)
    # urllib3 warns on every retry of an unreachable tracking server; the final error says it.
    logging.getLogger("urllib3").setLevel(logging.DEBUG if verbose else logging.ERROR)
    # TensorFlow warns about retracing every time a new trial's model first predicts.
    logging.getLogger("tensorflow").setLevel(logging.DEBUG if verbose else logging.ERROR)


def study_name_option(*, help: str, required: bool = True):
    """``--study-name``: a name that is also an MLflow experiment and a directory name."""
    return click.option("--study-name", required=required, callback=check_study_name, help=help)


def val_size_option(*, help: str):
    return click.option(
        "--val-size", type=click.IntRange(min=10), default=10_000, show_default=True, help=help
    )


def echo_promotion(promotion) -> None:
    """What promotion decided, as the commands that promote print it."""
    click.echo(
        f"{promotion.model_name} version {promotion.version} from trial "
        f"{promotion.trial_number} is the {promotion.alias} ({promotion.decision}); "
        f"test macro F1 {promotion.test_macro_f1:.4f}"
    )
    uri = f"models:/{promotion.model_name}@{promotion.alias}"
    click.echo(f"load it with mlflow.pyfunc.load_model({uri!r})")
