"""Quick variants of the benchmarks that measure one part: speed, memory, storage, scaling."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "name",
    [
        "architectures",
        "scaling",
        "trial_memory",
        "storage_load",
        "tracking_overhead",
        "trial_speed",
        "flops",
        "probe_accuracy",
        "recipes",
    ],
)
def test_quick_benchmark_writes_its_results(name, run_quick):
    run_quick(name)
