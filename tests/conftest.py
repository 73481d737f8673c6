"""Shared fixtures: the real Fashion-MNIST (small slices of it), and stores under tmp_path."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# What the CLI sets for its own processes, set here for in-process library calls too.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one xdist worker per core: one TensorFlow thread each (two each spent
    # 10% more CPU on the same tests, in thread pools waiting on each other). Processes the
    # tests start inherit it; `fmsearch run --workers N` still sets its workers' own.
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

import numpy as np
import pytest

from runners.data import FashionMNIST, Split, load_fashion_mnist, split_train_val

# Modules by how long they take, longest first (measured with --durations=0). `make test`
# hands whole modules to whichever xdist worker is free (--dist loadfile): a long module
# that starts last would stretch the run by its length. Modules not listed follow.
SLOWEST_FIRST = (
    "scale_out/test_multi_host.py",
    "test_cli_architectures.py",
    "benchmarks/test_measurements.py",
    "benchmarks/test_budget.py",
    "benchmarks/test_searches.py",
    "test_cli_search_controls.py",
    "scale_out/test_postgres_restart.py",
    "scale_out/test_tracking_outage.py",
    "test_end_to_end.py",
    "search/promotion/test_promotion.py",
    "search/budget/test_finals.py",
    "scale_out/test_killed_worker.py",
    "test_cli.py",
    "search/engines/test_optuna_pool.py",
    "search/engines/test_keras_tuner.py",
    "spaces/test_spaces.py",
    "search/insight/test_insight_runs.py",
    "search/storage/test_rdb.py",
    "runners/test_training.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    # A stable sort: tests keep their order inside a module.
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0].removeprefix("tests/"),
                                         len(rank)))  # fmt: skip


@pytest.fixture(autouse=True)
def _restore_mlflow_uris():
    """``mlflow.set_tracking_uri`` (which every Tracker calls) exports the URI into
    ``os.environ``, where a later test's subprocess would find a deleted store; the registry
    URI lives in a module global, where a later test's client would find it."""
    from mlflow.tracking._model_registry import utils as registry
    from mlflow.tracking._tracking_service import utils as tracking

    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    before = {key: os.environ.get(key) for key in keys}
    globals_before = (tracking._tracking_uri, registry._registry_uri)
    yield
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    tracking._tracking_uri, registry._registry_uri = globals_before


@pytest.fixture(scope="session")
def fashion() -> FashionMNIST:
    """The real data set, loaded (and checksum-verified) once per test session."""
    return load_fashion_mnist(download=False)


@pytest.fixture(scope="session")
def small_split(fashion: FashionMNIST) -> Split:
    """600 real training and 300 real validation images."""
    return split_train_val(fashion.x_train, fashion.y_train, val_size=300, subset=600)


@pytest.fixture
def storage_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/optuna.db"


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its schema migrated, to copy: MLflow's migrations take about
    a second per new store, and most tests want a new store."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_db(tmp_path, empty_mlflow_db) -> Path:
    """A new, empty MLflow store at ``tmp_path/mlflow.db``."""
    path = tmp_path / "mlflow.db"
    shutil.copyfile(empty_mlflow_db, path)
    return path


@pytest.fixture
def tracker(tmp_path, mlflow_db):
    from search.tracking import Tracker

    return Tracker(tracking_uri=f"sqlite:///{mlflow_db}", artifact_root=tmp_path / "art")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def cli():
    """Invoke ``fmsearch`` in-process: ``cli("run", "--arch", "mlp", ...)``."""
    from click.testing import CliRunner

    from search.cli import main

    runner = CliRunner()

    def invoke(*args, **kwargs):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False, **kwargs)

    return invoke


@pytest.fixture
def stores(tmp_path, mlflow_db):
    """Optuna storage and MLflow tracking URIs under ``tmp_path``."""
    return {"storage": f"sqlite:///{tmp_path}/optuna.db", "tracking": f"sqlite:///{mlflow_db}"}
