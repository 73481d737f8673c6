"""Quick variants of the benchmarks that measure one part: speed, memory, storage, scaling."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.common import RESULTS, find_run

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


def test_final_flips_trains_the_recorded_configuration_both_ways(run_quick):
    payload = run_quick("final_flips")
    record = find_run(Path(payload["source"]).stem, payload["run"], directory=RESULTS)["result"]
    (source,) = [t for t in record["ladder"]["trials"] if t["number"] == payload["trial"]]
    chosen, flipped = payload["rows"]
    assert (chosen["flip"], flipped["flip"]) == (source["params"]["flip"], True) == (False, True)
    for row in payload["rows"]:
        trained = row["trained_params"]
        assert trained["flip"] is row["flip"]
        assert trained["lr_schedule"] == "one_cycle"
        assert trained["learning_rate"] == pytest.approx(source["params"]["learning_rate"])
        assert row["epochs"] == 1 and 0.0 <= row["test_accuracy_tta"] <= 1.0
