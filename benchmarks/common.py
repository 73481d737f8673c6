"""What every benchmark records beside its numbers: when, where, with what."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

RESULTS = Path(__file__).with_name("results")


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


def write(name: str, payload: dict, table: str) -> Path:
    """Write ``results/<name>.json`` and ``results/<name>.md``; returns the Markdown path."""
    RESULTS.mkdir(exist_ok=True)
    payload = {"machine": machine(), **payload}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    info = payload["machine"]
    header = (
        f"Measured {info['date']} on {info['cpu']} ({info['cores']} cores), TensorFlow "
        f"{info['tensorflow']}, MLflow {info['mlflow']}, Optuna {info['optuna']}.\n\n"
    )
    path = RESULTS / f"{name}.md"
    path.write_text(header + table + "\n")
    return path
