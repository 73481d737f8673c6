"""Shared fixtures: the real Fashion-MNIST (small slices of it), and stores under tmp_path."""

from __future__ import annotations

import os

# What the CLI sets for its own processes, set here for in-process library calls too.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from runners.data import FashionMNIST, Split, load_fashion_mnist, split_train_val


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


@pytest.fixture
def tracker(tmp_path):
    from search.tracking import Tracker

    return Tracker(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=tmp_path / "art")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
