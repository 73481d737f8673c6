"""What every benchmark records beside its numbers: when, where, with what."""

from __future__ import annotations

import json
import os
import platform
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("results")
_STORE_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "FMSEARCH_STORAGE")


def add_results_dir(parser) -> None:
    """The ``--results-dir`` option every benchmark takes."""
    parser.add_argument(
        "--results-dir", type=Path, default=RESULTS, help=f"where to write (default {RESULTS})"
    )


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        **{p: version(p) for p in ("tensorflow", "keras", "mlflow", "optuna")},
    }


def write(name: str, payload: dict, table: str, *, directory: Path = RESULTS) -> Path:
    """Write ``<directory>/<name>.json`` and ``.md``; returns the Markdown path."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), **payload}
    (directory / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    info = payload["machine"]
    header = (
        f"Measured {info['date']} on {info['cpu']} ({info['cores']} cores), TensorFlow "
        f"{info['tensorflow']}, MLflow {info['mlflow']}, Optuna {info['optuna']}.\n\n"
    )
    path = directory / f"{name}.md"
    path.write_text(header + table + "\n")
    return path


def fmsearch_here(args: list[str], *, cwd: Path) -> tuple[float, Any]:
    """Run ``fmsearch ARGS`` in this process (no start-up cost) with ``cwd`` as the working
    directory, so its embedded stores go to ``cwd/mlruns``; returns the wall time and the one
    study of ``cwd/mlruns/optuna.db``."""
    import contextlib

    import optuna

    from search.cli import main

    # The previous run's Tracker exported its store into MLFLOW_TRACKING_URI (mlflow does),
    # where this run's --tracking-uri would find it.
    saved = {k: os.environ.pop(k) for k in _STORE_VARIABLES if k in os.environ}
    Path(cwd).mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.chdir(cwd):
            start = time.perf_counter()
            main.main(args=args, standalone_mode=False)
            wall = time.perf_counter() - start
    finally:
        for key in _STORE_VARIABLES:
            os.environ.pop(key, None)
        os.environ.update(saved)
    storage = f"sqlite:///{Path(cwd).resolve()}/mlruns/optuna.db"
    (summary,) = optuna.get_all_study_summaries(storage)
    return wall, optuna.load_study(study_name=summary.study_name, storage=storage)


def finished_over_time(study) -> dict[str, Any]:
    """What a search did: its started trials' epochs, complete and pruned counts, and each
    complete trial as (seconds since the first trial started, value), in finishing order."""
    from optuna.trial import TrialState

    trials = [t for t in study.trials if t.datetime_start is not None]
    t0 = min(t.datetime_start for t in trials)
    done = sorted(
        ((t.datetime_complete - t0).total_seconds(), t.value)
        for t in trials
        if t.state == TrialState.COMPLETE
    )
    return {
        "epochs_trained": sum(len(t.intermediate_values) for t in trials),
        "complete": len(done),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "finished": done,
    }
