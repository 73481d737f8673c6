"""Quick variants of the benchmarks of budgeted searches and of `make run`'s first search."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_first_run_against_the_plain_mlp(run_quick):
    payload = run_quick("first_run")
    assert len(payload["plain_mlp_test_accuracy"]) == len(payload["search_test_accuracy"]) == 1


def test_budget_plan_records_estimate_and_outcome(run_quick):
    """`fmsearch run --budget-hours --final-on-all-data` end to end through the CLI (in this
    process): the plan, its rungs, the finals on all 900 images, the ensemble decision, the
    chosen model trained again with the validation images and promoted, the estimate's check."""
    (row,) = run_quick("budget_plan")["runs"]
    assert row["estimated_seconds"] > 0 and row["actual_seconds"] > 0
    assert row["rungs"].startswith("100x3: ")
    # Retrained when the time left held it (it may not on a loaded machine): recorded either way.
    assert row["final_on_all_data"].startswith("trial " if row["retrained"] else "none: ")
    assert row["champion_stands_in"] == bool(row["retrained"])
    assert row["finals"] >= 1 and row["trials"] > row["finals"]
    assert row["ensemble"]["best_single"]["val_accuracy"] > 0.1
    assert 0.1 < row["test_accuracy"] <= 1


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
