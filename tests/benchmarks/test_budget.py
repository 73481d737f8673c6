"""Quick variants of the benchmarks of budgeted searches and of `make run`'s first search."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_first_run_against_the_plain_mlp(run_quick):
    payload = run_quick("first_run")
    assert len(payload["plain_mlp_test_accuracy"]) == len(payload["search_test_accuracy"]) == 1


def test_budget_plan_records_estimate_and_outcome_and_champion_run_reads_it(run_quick, tmp_path):
    """`fmsearch run --budget-hours --final-on-all-data` end to end through the CLI (in this
    process): the plan, its rungs, the finals on all 900 images, the ensemble decision, the
    chosen model trained again with the validation images and promoted, the estimate's check.
    champion_run reads the same run back (its own quick run is this one)."""
    kept = tmp_path / "kept"
    (row,) = run_quick("budget_plan", "--workdir", str(kept))["runs"]
    assert row["estimated_seconds"] > 0 and row["actual_seconds"] > 0
    assert row["rungs"].startswith("100x3: ")
    # Retrained when the time left held it (it may not on a loaded machine): recorded either way.
    assert row["final_on_all_data"].startswith("trial " if row["retrained"] else "none: ")
    assert row["champion_stands_in"] == bool(row["retrained"])
    assert row["finals"] >= 1 and row["trials"] > row["finals"]
    assert row["ensemble"]["best_single"]["val_accuracy"] > 0.1
    assert 0.1 < row["test_accuracy"] <= 1
    champion = run_quick("champion_run", "--summarize", str(kept / "mlp"))["result"]
    assert champion["test_accuracy"] == row["test_accuracy"]
    curve = champion["time_to_accuracy"]
    assert set(curve) == {"champion", "any trial"}
    assert set(curve["champion"]) == {"0.90", "0.92", "0.93", "0.94"}
    assert all(s is None or s > 0 for who in curve.values() for s in who.values())
    ladder = champion["ladder"]
    (published,) = [t for t in ladder["trials"] if t["baseline"] == "published"]
    assert published["rung"] == 0 and published["params"]
    finals = [t for t in ladder["trials"] if t["final"]]
    assert len(finals) == row["finals"] and all(t["rung"] is None for t in finals)
    # A step per rung the ladder climbed to (a short plan may climb none), then the finals.
    climbed = sorted({t["rung"] for t in ladder["trials"] if t["rung"]})
    steps = {s["step"]: s for s in ladder["agreement"]}
    assert list(steps) == [f"rung {n - 1} -> rung {n}" for n in climbed] + ["top rung -> final"]
    assert steps["top rung -> final"]["pairs"] == sum(t["state"] == "COMPLETE" for t in finals)


def test_a_search_beside_a_plain_cnn_trained_for_as_long(run_quick, tmp_path):
    """Both processes start together, one core each; each result is read back, and the
    search's stores stay in --workdir."""
    kept = tmp_path / "kept"
    payload = run_quick("versus_plain", "--workdir", str(kept))
    assert (kept / "mlruns" / "mlflow.db").is_file() and (kept / "fmsearch.log").is_file()
    searched, plain = payload["search"], payload["plain"]
    assert plain["epochs"] >= 1 and plain["train_images"] == 900
    assert plain["seconds"] <= payload["hours"] * 3600 + 60
    assert searched["family"] == "mlp" and searched["champion_trial"] >= 0
    assert 0.1 < searched["test_accuracy"] <= 1 and 0.1 < plain["test_accuracy"] <= 1
    assert searched["actual_seconds"] > 0


def test_distillation_reads_back_what_the_search_decided(run_quick):
    payload = run_quick("distillation")
    result, decided = payload["result"], payload["result"]["distillation"]
    assert result["finals"] >= 1 and 0.1 < result["test_accuracy"] <= 1
    if decided is not None:  # an ensemble won on validation
        ensemble_params, student_params = decided["n_params"]
        assert decided["ensemble"] > 0 and ensemble_params > 0
        if decided["student"] is not None:
            assert 0 < student_params < ensemble_params


def test_keras_tuner_tutorial_side_by_side(run_quick):
    payload = run_quick("keras_tuner_tutorial")
    assert payload["tutorial"]["best_epoch"] >= 1
    assert 0.1 < payload["fmsearch"]["test_accuracy"] <= 1


def test_equal_budget_three_ways(run_quick):
    payload = run_quick("equal_budget")
    assert {r["contender"] for r in payload["results"]} == {
        "fmsearch plan", "Keras Tuner Hyperband", "Optuna random, no pruning",
    }  # fmt: skip
    for row in payload["results"]:
        assert row["trials"] >= 1 and 0.1 < row["test_accuracy"] <= 1
