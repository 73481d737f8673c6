"""The benchmarks' quick variants run end to end (smoke tests: no timing is asserted).

Each runs in this process (``main()`` with the quick command line), which saves the start-up of
a new interpreter per benchmark; what a benchmark starts itself (``fmsearch`` commands, worker
processes) still runs as real processes. Two modules, so that pytest-xdist runs them side by side.
"""

from __future__ import annotations

import contextlib
import importlib
import sys

import pytest

from benchmarks.common import runs


@pytest.fixture
def run_quick(tmp_path, monkeypatch):
    """Run ``benchmarks.NAME --quick`` and check the JSON and Markdown it writes."""
    from tests.services import postgres

    def run(name: str, *options: str) -> dict:
        module = importlib.import_module(f"benchmarks.{name}")
        argv = [name, "--quick", "--results-dir", str(tmp_path), *options]
        monkeypatch.setattr(sys, "argv", argv)
        with postgres() if name == "storage_load" else contextlib.nullcontext():
            module.main()
        (payload,) = runs(f"{name}_quick", directory=tmp_path)
        assert payload["machine"]["tensorflow"] and payload["reproduce"].startswith("python -m")
        table = (tmp_path / f"{name}_quick.md").read_text()
        assert table.count("\n|") >= 3 and payload["reproduce"] in table
        return payload

    return run
