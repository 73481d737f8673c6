"""The benchmarks' quick variants run end to end (smoke tests: no timing is asserted).

Each runs in this process (``main()`` with the quick command line), which saves the start-up of
a new interpreter per benchmark; what a benchmark starts itself (``fmsearch`` commands, worker
processes) still runs as real processes.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "name",
    [
        "search_efficiency",
        "architectures",
        "scaling",
        "pruning_savings",
        "trial_memory",
        "storage_load",
        "champion_run",
        "short_search",
        "tracking_overhead",
        "trial_speed",
    ],
)
def test_quick_benchmark_writes_its_results(name, tmp_path, monkeypatch):
    from tests.services import postgres

    module = importlib.import_module(f"benchmarks.{name}")
    monkeypatch.setattr(sys, "argv", [name, "--quick", "--results-dir", str(tmp_path)])
    with postgres() if name == "storage_load" else contextlib.nullcontext():
        module.main()
    payload = json.loads((tmp_path / f"{name}_quick.json").read_text())
    assert payload["machine"]["tensorflow"]
    table = (tmp_path / f"{name}_quick.md").read_text()
    assert table.count("\n|") >= 3
