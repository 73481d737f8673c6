"""The champion run's record of its ladder, read from a study built here (nothing trains)."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from benchmarks.champion_run import ladder_record
from search.names import (
    BASELINE_ATTR,
    ENSEMBLE_ATTR,
    EPOCHS_ATTR,
    FINAL_ATTR,
    PROMOTED_FROM_ATTR,
    REFIT_ATTR,
    RUNG_ATTR,
    STANDS_IN_ATTR,
)


def _add(study, value, *, x, state=TrialState.COMPLETE, reports=True, **attrs) -> int:
    study.add_trial(
        create_trial(
            state=state,
            value=value if state == TrialState.COMPLETE else None,
            params={"x": x},
            distributions={"x": FloatDistribution(0, 10)},
            intermediate_values=(
                {0: 0.5, 1: value if value is not None else 0.4} if reports else {}
            ),
            user_attrs=attrs,
        )
    )
    return len(study.trials) - 1


def test_the_record_ranks_each_step_up_against_the_one_below():
    study = optuna.create_study(direction="maximize")
    first = [_add(study, v, x=v * 10, **{RUNG_ATTR: 0}) for v in (0.70, 0.80, 0.75, 0.60)]
    published = _add(study, None, x=9.0, state=TrialState.PRUNED,
                     **{RUNG_ATTR: 0, BASELINE_ATTR: "published"})  # fmt: skip
    # Rung 1 keeps rung 0's best first but swaps the other two.
    upper = [
        _add(study, v, x=study.trials[n].params["x"], **{RUNG_ATTR: 1, PROMOTED_FROM_ATTR: n})
        for n, v in ((first[1], 0.90), (first[2], 0.85), (first[0], 0.88))
    ]
    # A final reports no epochs to a pruner: its own attribute counts them.
    final = _add(study, 0.94, x=8.0, reports=False,
                 **{FINAL_ATTR: True, REFIT_ATTR: upper[0], EPOCHS_ATTR: 28})  # fmt: skip
    _add(study, 0.94, x=8.0, **{REFIT_ATTR: final, STANDS_IN_ATTR: final})
    _add(study, 0.95, x=0.0, **{ENSEMBLE_ATTR: [final]})

    record = ladder_record(study)

    rows = {r["number"]: r for r in record["trials"]}
    assert sorted(rows) == [*first, published, *upper, final]
    assert rows[published]["baseline"] == "published" and rows[published]["value"] is None
    assert rows[published]["last_value"] == 0.4 and rows[published]["state"] == "PRUNED"
    assert rows[upper[2]]["from"] == first[0] and rows[final]["from"] == upper[0]
    assert rows[final]["final"] and rows[final]["rung"] is None
    assert rows[final]["epochs"] == 28 and rows[published]["epochs"] == 2
    steps = {s["step"]: s for s in record["agreement"]}
    assert list(steps) == ["rung 0 -> rung 1", "top rung -> final"]
    # Rung 0 ranked them 0.80 > 0.75 > 0.70, rung 1 0.90 > 0.85 < 0.88: rho = 1 - 6*2/24.
    assert steps["rung 0 -> rung 1"]["pairs"] == 3
    assert steps["rung 0 -> rung 1"]["spearman"] == pytest.approx(0.5)
    assert steps["top rung -> final"] == {"step": "top rung -> final", "pairs": 1, "spearman": None}


def test_ties_all_along_one_side_rank_nothing():
    study = optuna.create_study(direction="maximize")
    first = [_add(study, v, x=v * 10, **{RUNG_ATTR: 0}) for v in (0.7, 0.8, 0.9)]
    for n in first:
        _add(study, 0.9, x=study.trials[n].params["x"], **{RUNG_ATTR: 1, PROMOTED_FROM_ATTR: n})

    (step,) = ladder_record(study)["agreement"]

    assert step == {"step": "rung 0 -> rung 1", "pairs": 3, "spearman": None}
