"""Starting a process that trains or loads models: TensorFlow's threads and start-up lines,
every fmsearch module loaded up front, and the stores opened and checked."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import pkgutil
import sys
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from search.tracking import Tracker

logger = logging.getLogger(__name__)

# Modules that load TensorFlow when imported: a scikit-learn run does without them.
_TENSORFLOW_MODULES = frozenset(
    {"runners.augment", "runners.lr_find", "runners.throughput", "runners.training"}
)


def preload(*, keras: bool) -> list[str]:
    """Import now every fmsearch module a search may reach later; returns their names.

    A search lasts hours, and what Python imports later comes from the files as they are by
    then: a search whose checkout changes under it would meet new modules beside the old ones
    it loaded at the start. The TensorFlow modules are loaded only for a Keras architecture
    (``keras``).
    """
    import runners
    import search

    names = [
        info.name
        for package in (search, runners)
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")
        if not info.name.endswith("__main__") and (keras or info.name not in _TENSORFLOW_MODULES)
    ]
    for name in names:
        importlib.import_module(name)
    return names


@contextlib.contextmanager
def start_up_output_logged() -> Iterator[None]:
    """Hold what native code writes to standard error meanwhile, then log it at DEBUG
    (``fmsearch -v`` shows it).

    TensorFlow's C++ start-up lines (absl's preamble, oneDNN, CUDA drivers looked for and not
    found) go straight to file descriptor 2, before any Python logging can filter them and
    whatever ``TF_CPP_MIN_LOG_LEVEL`` says (TensorFlow 2.21, measured): a user's terminal
    filled with seven lines of them before fmsearch's first.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read().decode(errors="replace").strip()
            if text:
                logger.debug("start-up output:\n%s", text)


def open_tracker(tracking_uri: str | None = None) -> Tracker:
    """The MLflow store at ``tracking_uri`` (default ``./mlruns/mlflow.db``), checked."""
    from search.storage.urls import default_artifact_root, default_tracking_uri, sqlite_path
    from search.tracking import Tracker

    uri = tracking_uri or default_tracking_uri()
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(tracking_uri=uri, artifact_root=default_artifact_root(uri))
    tracker.check_connection()
    return tracker


def open_storage(storage: str | None = None, *, heartbeat_interval: int = 10):
    """The Optuna storage at ``storage`` (default ``./mlruns/optuna.db``)."""
    from search.storage.rdb import open_storage as open_optuna_storage
    from search.storage.urls import default_storage

    url = storage or default_storage()
    return open_optuna_storage(url, heartbeat_interval=heartbeat_interval)


def set_threads(threads: int | None) -> None:
    """CPU threads TensorFlow may use in this process (None: its default)."""
    if threads is None:
        return
    from runners.training import set_threads as set_tensorflow_threads

    set_tensorflow_threads(threads)


def start(runner, *, precision: str, threads: int | None) -> None:
    """Set TensorFlow's threads (before its runtime starts), load every module a search may
    reach and find this host's devices: where TensorFlow prints its start-up lines, logged
    instead."""
    with start_up_output_logged():
        set_threads(threads)
        preload(keras=runner.uses_tensorflow)
        runner.resolve_policy(precision)


def study_runner(study):
    """The runner of the study's architecture (Keras for a study made before it was recorded)."""
    from search.kinds import RUNNERS, runner_for
    from search.names import ARCH_ATTR
    from spaces import resolve

    arch = study.user_attrs.get(ARCH_ATTR)
    return runner_for(resolve(arch)) if arch else RUNNERS["keras"]


def load_tensorflow(*, threads: int | None = None) -> None:
    """Start TensorFlow (and load fmsearch's Keras modules) with its start-up lines logged,
    not printed: for commands that build or load Keras models."""
    from search.kinds import RUNNERS

    # "auto" looks for GPUs: where TensorFlow says it found no CUDA driver.
    start(RUNNERS["keras"], precision="auto", threads=threads)
