"""The benchmarks' quick variants run end to end (smoke tests: no timing is asserted)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "name",
    [
        "search_efficiency",
        "trial_memory",
        "pruning_savings",
        "scaling",
        "architectures",
        "storage_load",
        "tracking_overhead",
        "trial_speed",
    ],
)
def test_quick_benchmark_writes_its_results(name, tmp_path):
    from tests.services import postgres

    with postgres() if name == "storage_load" else contextlib.nullcontext():
        result = subprocess.run(
            [sys.executable, "-m", f"benchmarks.{name}", "--quick", "--results-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-4000:]
    payload = json.loads((tmp_path / f"{name}_quick.json").read_text())
    assert payload["machine"]["tensorflow"]
    table = (tmp_path / f"{name}_quick.md").read_text()
    assert table.count("\n|") >= 3
