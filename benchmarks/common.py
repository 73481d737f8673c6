"""What every benchmark records beside its numbers: when, where, with what."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("results")
STORE_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "FMSEARCH_STORAGE")


def add_results_dir(parser) -> None:
    """The ``--results-dir`` option every benchmark takes."""
    parser.add_argument(
        "--results-dir", type=Path, default=RESULTS, help=f"where to write (default {RESULTS})"
    )


# The CPU flags that decide a host's class: its training speed and `--precision auto`'s choice.
_CLASS_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def machine() -> dict[str, str]:
    """Where a measurement was taken: CPU model and class, cores, precision, versions."""
    from runners.precision import cpu_flags, resolve_policy

    flags = cpu_flags()
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
        "flags": " ".join(f for f in _CLASS_FLAGS if f in flags) or "none",
        "precision": resolve_policy("auto"),
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        **{p: version(p) for p in ("tensorflow", "keras", "mlflow", "optuna")},
    }


def runs(name: str, *, directory: Path = RESULTS) -> list[dict]:
    """Every run of benchmark ``name`` on record in ``<directory>/<name>.json``, oldest first."""
    path = directory / f"{name}.json"
    return json.loads(path.read_text())["runs"] if path.exists() else []


def find_run(name: str, label: str | None = None, *, directory: Path = RESULTS) -> dict:
    """The latest run of ``name`` labelled ``label`` (None: the latest run)."""
    found = [r for r in runs(name, directory=directory) if label in (None, r.get("label"))]
    if not found:
        raise LookupError(f"expected a run labelled {label!r} in {name}.json, got none")
    return found[-1]


def describe(info: dict[str, str]) -> str:
    """A run's machine in one line: CPU model and class, precision, cores, versions."""
    flags = info.get("flags")
    precision = info.get("precision")
    host = ", ".join(
        [f"{info['cores']} cores"]
        + ([f"CPU flags {flags}"] if flags else [])
        + ([f"`--precision auto`: {precision}"] if precision else [])
    )
    return (
        f"{info['date']} on {info['cpu']} ({host}), TensorFlow {info['tensorflow']}, "
        f"MLflow {info['mlflow']}, Optuna {info['optuna']}"
    )


def write(
    name: str,
    payload: dict,
    table: str,
    *,
    directory: Path = RESULTS,
    label: str | None = None,
    summary: Callable[[list[dict]], str] | None = None,
) -> Path:
    """Add this run to ``<directory>/<name>.json`` (every run on record, oldest first) and
    write ``<name>.md``, the benchmark's one page: ``summary`` of all runs where given, this
    run's table, the command that reproduces it and its machine; returns the page's path."""
    directory.mkdir(parents=True, exist_ok=True)
    record = {
        "machine": machine(),
        **({"label": label} if label else {}),
        "reproduce": " ".join(["python -m", f"benchmarks.{Path(sys.argv[0]).stem}", *sys.argv[1:]]),
        **payload,
        "table": table,
    }
    history = [*runs(name, directory=directory), record]
    (directory / f"{name}.json").write_text(json.dumps({"runs": history}, indent=2) + "\n")
    path = directory / f"{name}.md"
    path.write_text(page(name, history, summary=summary))
    return path


def page(
    name: str, history: list[dict], *, summary: Callable[[list[dict]], str] | None = None
) -> str:
    """A benchmark's page: the summary of its runs, the latest run's table, the earlier runs."""
    latest = history[-1]
    title = name.replace("_", " ").capitalize()
    parts = [f"# {title}", ""]
    if summary is not None:
        heading = "## The latest run" + (f": {latest['label']}" if latest.get("label") else "")
        parts += [summary(history), "", heading, ""]
    parts += [
        f"Measured {describe(latest['machine'])}.",
        "",
        f"Reproduce: `{latest['reproduce']}`",
        "",
        latest["table"].rstrip(),
    ]
    if len(history) > 1:
        parts += ["", f"Earlier runs, each with its table in [`{name}.json`]({name}.json):", ""]
        parts += [
            f"- {r['machine']['date']}, {r['machine']['cpu']}"
            + (f": {r['label']}" if r.get("label") else "")
            for r in reversed(history[:-1])
        ]
    return "\n".join(parts) + "\n"


def fmsearch_here(args: list[str], *, cwd: Path) -> tuple[float, Any]:
    """Run ``fmsearch ARGS`` in this process (no start-up cost) with ``cwd`` as the working
    directory, so its embedded stores go to ``cwd/mlruns``; returns the wall time and the one
    study of ``cwd/mlruns/optuna.db``."""
    import contextlib

    from search.cli import main

    # The previous run's Tracker exported its store into MLFLOW_TRACKING_URI (mlflow does),
    # where this run's --tracking-uri would find it.
    saved = {k: os.environ.pop(k) for k in STORE_VARIABLES if k in os.environ}
    Path(cwd).mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.chdir(cwd):
            start = time.perf_counter()
            main.main(args=args, standalone_mode=False)
            wall = time.perf_counter() - start
    finally:
        for key in STORE_VARIABLES:
            os.environ.pop(key, None)
        os.environ.update(saved)
    return wall, study_in(cwd)


def workdir_in(stack: contextlib.ExitStack, kept: Path | None) -> Path:
    """``kept`` (a ``--workdir``: the stores stay there), else a temporary directory that
    ``stack`` removes; absolute, and created."""
    workdir = (kept or Path(stack.enter_context(tempfile.TemporaryDirectory()))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def study_in(directory: Path):
    """The one study of ``directory/mlruns/optuna.db`` (where ``fmsearch`` run in
    ``directory`` keeps it by default)."""
    import optuna

    storage = f"sqlite:///{Path(directory).resolve()}/mlruns/optuna.db"
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


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
