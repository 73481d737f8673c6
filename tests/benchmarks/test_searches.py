"""Quick variants of the benchmarks that run whole searches."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["search_efficiency", "pruning_savings", "short_search"])
def test_quick_benchmark_writes_its_results(name, run_quick):
    run_quick(name)
