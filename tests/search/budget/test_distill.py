"""An ensemble that won, distilled into one model on small real data: kept when it is close
enough on validation (then promoted in the ensemble's place), not kept otherwise."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import pytest

from search.budget.distill import DISTILL_FILE, distill_ensemble, latest_ensemble
from search.budget.plan import Plan, Rung
from search.engines.optuna_pool import run_worker
from search.names import (
    DISTILL_TAG,
    DISTILLED_ATTR,
    DISTILLED_FROM_ATTR,
    ENSEMBLE_ATTR,
    LATENCY_ATTR,
    MEMBERS_TAG,
    MODEL_URI_TAG,
    N_PARAMS_ATTR,
    RUN_ID_ATTR,
    TRAIN_IMAGES_ATTR,
    TTA_ATTR,
)
from search.promotion.promote import promote_winner, select_candidate
from tests.search.conftest import GOOD_MLP

pytestmark = pytest.mark.slow


def _plan(final_epochs: int = 2) -> Plan:
    return Plan(
        budget_seconds=900, started_at=time.time(), train_images_per_s=2e3,
        eval_images_per_s=1e4, probe_seconds=0.0, train_images=600, val_images=300,
        reduction_factor=3, rungs=(Rung(600, 2, 2, 2.0),), search_seconds=10, top_k=2,
        final_epochs=final_epochs, final_seconds=20, reserve_seconds=60,
        estimated_seconds=680, distill_seconds=10,
    )  # fmt: skip


def _with_ensemble(study, tracker, *, value: float) -> optuna.trial.FrozenTrial:
    """Trials 0 and 1 averaged with flip TTA, as the finals' combination adds them."""
    members = study.trials[:2]
    uris = [tracker.run_tags(t.user_attrs[RUN_ID_ATTR])[MODEL_URI_TAG] for t in members]
    run_id = tracker.start_ensemble_run(
        study_name=study.study_name, parent_run_id="none", arch="mlp", name="ensemble-0-1-tta",
        model_uris=tuple(uris), tta=True, params={"members": "0,1"},
    )  # fmt: skip
    tracker.end_run(run_id, status="FINISHED")
    study.add_trial(optuna.trial.create_trial(
        value=value, params=members[0].params, distributions=members[0].distributions,
        user_attrs={ENSEMBLE_ATTR: [0, 1], TTA_ATTR: True, RUN_ID_ATTR: run_id,
                    LATENCY_ATTR: 0.5, N_PARAMS_ATTR: 2 * members[0].user_attrs["n_params"]},
    ))  # fmt: skip
    return latest_ensemble(study)


def _distill(study, tracker, split, *, parent, **kwargs):
    taught = []

    def run(refit, seconds, soft):
        taught.append(soft)
        return run_worker(study=study, arch="mlp", split=split, tracker=tracker, max_epochs=2,
                          seed=0, refit=refit, refit_split=soft, timeout=seconds,
                          hard_timeout=True)  # fmt: skip

    decision = distill_ensemble(study=study, tracker=tracker, split=split, plan=_plan(),
                                parent_run_id=parent, run=run, **kwargs)  # fmt: skip
    return decision, taught


def _parent(tracker, name):
    return tracker.start_study_run(
        experiment_id=tracker.experiment_id(name), study_name=name, arch="mlp", params={}
    )


def _recorded(tracker, run_id) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(tracker._client.download_artifacts(run_id, DISTILL_FILE, tmp))
                          .read_text())  # fmt: skip


def test_a_student_close_to_its_ensemble_is_served_in_its_place(
    tiny_study, tracker, small_split, fashion
):
    study, _ = tiny_study(enqueue=[GOOD_MLP, {**GOOD_MLP, "dropout": 0.3}], max_epochs=2)
    members = [tracker.load_keras_model(tracker.run_tags(t.user_attrs[RUN_ID_ATTR])
                                        [MODEL_URI_TAG]) for t in study.trials]  # fmt: skip
    ensemble = _with_ensemble(study, tracker, value=max(t.value for t in study.trials) + 0.01)
    parent = _parent(tracker, study.study_name)
    # The real rule keeps a student 0.2 points below at most; a generous one keeps any.
    decision, (taught,) = _distill(study, tracker, small_split, parent=parent, tolerance=1.0)

    # The student learnt the ensemble's probabilities: its members', plain and mirrored.
    x = small_split.x_train
    views = [m.predict(v, verbose=0) for m in members for v in (x, x[:, :, ::-1])]
    np.testing.assert_allclose(taught.y_train, np.mean(views, axis=0), atol=1e-5)
    np.testing.assert_array_equal(taught.y_val, small_split.y_val)

    student = study.trials[decision.student]
    assert student.user_attrs[DISTILLED_FROM_ATTR] == ensemble.number
    assert student.user_attrs[TRAIN_IMAGES_ATTR] == 600
    assert student.params == study.trials[0].params  # the best member's configuration
    assert decision.kept and study.user_attrs[DISTILLED_ATTR] == {
        str(ensemble.number): student.number
    }
    assert decision.val_accuracy == (ensemble.value, student.value)
    assert decision.n_params[0] == 2 * decision.n_params[1]
    assert decision.latency_ms[0] == 0.5 and decision.latency_ms[1] > 0
    assert _recorded(tracker, parent)["kept"] is True
    assert "served in place of" in tracker.run_tags(parent)[DISTILL_TAG]

    # Promotion judges the ensemble best on validation and serves the one model instead.
    assert select_candidate(study).number == student.number
    promotion = promote_winner(
        study=study, tracker=tracker, test_images=fashion.x_test[:200],
        test_labels=fashion.y_test[:200], model_name="distilled",
    )  # fmt: skip
    assert promotion.trial_number == student.number
    version = tracker._client.get_model_version_by_alias("distilled", "champion")
    assert MEMBERS_TAG not in tracker.run_tags(version.run_id)


def test_a_student_far_below_its_ensemble_is_not_served(tiny_study, tracker, small_split):
    study, _ = tiny_study(enqueue=[GOOD_MLP, {**GOOD_MLP, "dropout": 0.3}], max_epochs=2)
    # No model of 600 images gets every validation image right: the student falls short.
    ensemble = _with_ensemble(study, tracker, value=1.0)
    parent = _parent(tracker, study.study_name)
    decision, _ = _distill(study, tracker, small_split, parent=parent)

    assert decision.student is not None and not decision.kept
    assert DISTILLED_ATTR not in study.user_attrs
    assert "not served: more than 0.2 points below" in tracker.run_tags(parent)[DISTILL_TAG]
    assert _recorded(tracker, parent)["student"] == decision.student
    assert select_candidate(study).number == ensemble.number


def test_no_time_left_trains_no_student(tiny_study, tracker, small_split):
    study, _ = tiny_study(enqueue=[GOOD_MLP, GOOD_MLP], max_epochs=1)
    _with_ensemble(study, tracker, value=0.9)
    parent = _parent(tracker, study.study_name)
    late = time.time() + 10_000  # past the plan's end

    decision, taught = _distill(study, tracker, small_split, parent=parent, now=lambda: late)

    assert taught == [] and decision.student is None and not decision.kept
    assert tracker.run_tags(parent)[DISTILL_TAG].startswith("not distilled: the 0 s left")
