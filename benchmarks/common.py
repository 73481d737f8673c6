"""What every benchmark records beside its numbers: when, where, with what."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

RESULTS = Path(__file__).with_name("results")


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


def clean_environment() -> dict[str, str]:
    """This process's environment without fmsearch's store settings, for a child ``fmsearch``
    that must use the embedded defaults of its own directory (and not, say, a tracking URI
    that ``mlflow.set_tracking_uri`` exported into this process)."""
    drop = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "FMSEARCH_STORAGE")
    return {k: v for k, v in os.environ.items() if k not in drop}
