"""A planned search for real, on tiny data: rungs on growing subsets, finals on all images,
the ensemble decision, promotion of what won."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import optuna
import pytest

from runners.data import CLASS_NAMES
from search.budget.ensemble import DECISION_FILE, add_stand_in, combine_finals
from search.budget.finals import (
    make_ladder,
    most_final_epochs,
    plan_summary,
    record_outcome,
    record_plan,
    retrain_on_all_data,
    run_finals,
    with_validation_in_training,
)
from search.budget.ladder import RungMedianPruner
from search.budget.plan import Plan, Rung
from search.engines.optuna_pool import run_worker
from search.names import (
    ENSEMBLE_ATTR,
    EPOCH_SECONDS_ATTR,
    EPOCHS_ATTR,
    FINAL_ATTR,
    MEMBERS_TAG,
    PLAN_ATTR,
    PLAN_TAG_PREFIX,
    PROMOTED_FROM_ATTR,
    REFIT_ATTR,
    REFIT_EPOCHS_ATTR,
    RUN_ID_ATTR,
    RUNG_ATTR,
    STANDS_IN_ATTR,
    STANDS_IN_TAG,
    STRETCH_TO_ATTR,
    TRAIN_IMAGES_ATTR,
    TTA_ATTR,
    TTA_TAG,
)
from search.promotion.promote import promote_winner, select_candidate
from search.storage.rdb import create_or_load_study, open_storage

pytestmark = pytest.mark.slow


def _plan() -> Plan:
    # Three configurations on 200 images, the best on all 600; the top two trained again,
    # then the chosen one with the validation images (--final-on-all-data).
    return Plan(
        budget_seconds=900, started_at=time.time(), train_images_per_s=2e3,
        eval_images_per_s=1e4, probe_seconds=0.0, train_images=600, val_images=300,
        reduction_factor=3, rungs=(Rung(200, 2, 3, 2.0), Rung(600, 2, 1, 3.0)),
        search_seconds=600, top_k=2, final_epochs=2, final_seconds=20, reserve_seconds=60,
        estimated_seconds=680, retrain_seconds=60,
    )  # fmt: skip


def test_a_planned_search_from_ladder_to_champion(storage_url, tracker, fashion, small_split):
    study = create_or_load_study(
        storage=open_storage(storage_url), study_name="planned", arch="mlp",
        sampler=optuna.samplers.RandomSampler(seed=0), pruner=RungMedianPruner(),
    )  # fmt: skip
    plan = _plan()
    ladder = make_ladder(plan, data=fashion, full=small_split, val_size=300)
    common = {"study": study, "arch": "mlp", "split": small_split, "tracker": tracker,
              "max_epochs": 2, "seed": 0}  # fmt: skip
    outcome = run_worker(
        **common, ladder=ladder, timeout=plan.search_ends_at - time.time(), hard_timeout=True
    )

    rungs = {r: [t for t in study.trials if t.user_attrs.get(RUNG_ATTR) == r] for r in (0, 1)}
    assert [len(rungs[0]), len(rungs[1])] == [3, 1]
    assert {t.user_attrs[TRAIN_IMAGES_ATTR] for t in rungs[0]} == {200}
    (up,) = rungs[1]
    assert up.user_attrs[TRAIN_IMAGES_ATTR] == 600 and len(up.intermediate_values) == 2
    done = [t for t in [*rungs[0], up] if t.state == optuna.trial.TrialState.COMPLETE]
    assert up in done and all(t.user_attrs[EPOCH_SECONDS_ATTR] > 0 for t in done)
    best_low = max(rungs[0], key=lambda t: t.value)
    assert up.user_attrs[PROMOTED_FROM_ATTR] == best_low.number and up.params == best_low.params
    run = tracker._client.get_run(up.user_attrs[RUN_ID_ATTR])
    assert run.info.run_name == f"trial-{up.number}-rung-1"
    assert run.data.tags["fmsearch.rung"] == "1"

    def run_final(refit, seconds):
        return run_worker(**common, refit=refit, refit_split=small_split, timeout=seconds,
                          hard_timeout=True)  # fmt: skip

    trained = run_finals(study=study, plan=plan, run=run_final)
    finals = [t for t in study.trials if t.user_attrs.get(FINAL_ATTR)]
    assert trained[0] == up.number and len(trained) == len(finals) == 2  # the top rung first
    for final in finals:
        assert final.state == optuna.trial.TrialState.COMPLETE
        assert final.user_attrs[TRAIN_IMAGES_ATTR] == 600
        assert final.params["lr_schedule"] == "one_cycle"
        assert 1 <= final.user_attrs[REFIT_EPOCHS_ATTR] <= 2 * plan.final_epochs
        assert final.user_attrs[STRETCH_TO_ATTR] == most_final_epochs(plan)
        assert final.user_attrs[EPOCHS_ATTR] <= most_final_epochs(plan)
        assert final.user_attrs[REFIT_ATTR] in trained
    assert run_finals(study=study, plan=plan, run=run_final) == []  # trained once only

    choice = combine_finals(study=study, tracker=tracker, split=small_split,
                            parent_run_id=outcome.parent_run_id, arch="mlp")  # fmt: skip
    assert {o.members for o in choice.options} >= {(f.number,) for f in finals}
    ensembles = [t for t in study.trials if ENSEMBLE_ATTR in t.user_attrs]
    parent = tracker._client.get_run(outcome.parent_run_id)
    recorded = json.loads(_read(tracker, outcome.parent_run_id))
    assert recorded["combined"] is choice.combined
    if choice.combined:  # it beat the best final model on validation: one trial stands for it
        (ensemble,) = ensembles
        assert ensemble.value == pytest.approx(choice.chosen.val_accuracy)
        assert ensemble.value > choice.best_single.val_accuracy
        assert ensemble.user_attrs[TTA_ATTR] is choice.chosen.tta
        assert "beats" in parent.data.tags["fmsearch.ensemble"]
    else:
        assert ensembles == [] and "alone" in parent.data.tags["fmsearch.ensemble"]

    # --final-on-all-data: the chosen model's members again, with the validation images.
    chosen = select_candidate(study)
    members = chosen.user_attrs.get(ENSEMBLE_ATTR) or [chosen.number]
    retrained = retrain_on_all_data(
        study=study, plan=plan, chosen=chosen,
        run=lambda refit, seconds: run_worker(
            **common, refit=refit, refit_split=with_validation_in_training(small_split),
            timeout=seconds, hard_timeout=True),
    )  # fmt: skip
    assert set(retrained) == set(members)
    for member, number in retrained.items():
        again, source = study.trials[number], study.trials[member]
        assert again.user_attrs[STANDS_IN_ATTR] == member
        assert again.user_attrs[TRAIN_IMAGES_ATTR] == 900  # 600 training + 300 validation
        assert again.value == source.value  # not validated on images it trained on
        assert again.user_attrs[REFIT_EPOCHS_ATTR] == source.user_attrs["best_epoch"] + 1
        assert again.user_attrs["epochs"] == again.user_attrs[REFIT_EPOCHS_ATTR]  # no stopping
        run = tracker._client.get_run(again.user_attrs[RUN_ID_ATTR])
        assert run.info.run_name.endswith("-all-data")
        assert run.data.tags[STANDS_IN_TAG] == str(member)
    stand_in = add_stand_in(study=study, tracker=tracker, chosen=chosen, retrained=retrained,
                            parent_run_id=outcome.parent_run_id, arch="mlp")  # fmt: skip
    if ENSEMBLE_ATTR in chosen.user_attrs:
        assert stand_in.user_attrs[ENSEMBLE_ATTR] == [retrained[m] for m in members]
        assert stand_in.value == chosen.value
        promoted = stand_in.number
    else:
        assert stand_in is None
        promoted = retrained[chosen.number]
    # The selection stays the one made on validation; promotion takes the stand-in.
    assert select_candidate(study).number == promoted

    promotion = promote_winner(study=study, tracker=tracker, test_images=fashion.x_test[:300],
                               test_labels=fashion.y_test[:300], model_name="planned")  # fmt: skip
    assert promotion.trial_number == promoted
    served = tracker.load_served_model("models:/planned@champion")
    frame = served.predict(fashion.x_test[:8])
    assert frame.shape == (8, 2 + len(CLASS_NAMES))
    figures = record_outcome(tracker=tracker, parent_run_id=outcome.parent_run_id, plan=plan)
    assert figures["plan_actual_seconds"] > 0
    assert tracker.run_metrics(outcome.parent_run_id)["plan_estimated_seconds"] == 680


def _read(tracker, run_id):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        return Path(tracker._client.download_artifacts(run_id, DECISION_FILE, tmp)).read_text()


def test_a_resumed_study_s_new_plan_shows_in_tags_beside_the_first_plan_s_params(tracker):
    study = optuna.create_study()
    parent = tracker.start_study_run(
        experiment_id=tracker.experiment_id("planned"), study_name="planned", arch="mlp",
        params={},
    )  # fmt: skip
    first = _plan()
    second = dataclasses.replace(first, top_k=1, final_epochs=5)
    record_plan(study, tracker=tracker, parent_run_id=parent, plan=first, arch="mlp")
    record_plan(study, tracker=tracker, parent_run_id=parent, plan=second, arch="mlp")
    run = tracker._client.get_run(parent)
    # MLflow params never change: the first plan's stay, the new one's go to tags.
    assert run.data.params == {k: str(v) for k, v in plan_summary(first).items()}
    assert run.data.params["plan_top_k"] == "2"
    assert {k: run.data.tags[PLAN_TAG_PREFIX + k] for k in plan_summary(second)} == {
        k: str(v) for k, v in plan_summary(second).items()
    }
    assert run.data.tags[PLAN_TAG_PREFIX + "plan_top_k"] == "1"
    assert Plan.from_json(study.user_attrs[PLAN_ATTR]) == second


def test_an_ensemble_serves_the_mean_of_its_members_and_their_mirrors(tiny_study, tracker):
    from search.names import MODEL_URI_TAG
    from tests.search.conftest import BAD_MLP, GOOD_MLP

    study, _ = tiny_study(enqueue=[GOOD_MLP, BAD_MLP, GOOD_MLP], max_epochs=1)
    uris = [tracker.run_tags(t.user_attrs[RUN_ID_ATTR])[MODEL_URI_TAG] for t in study.trials]
    uris, again_uri = uris[:2], uris[2]
    run_id = tracker.start_ensemble_run(
        study_name="tiny", parent_run_id="none", arch="mlp", name="ensemble-0-1-tta",
        model_uris=tuple(uris), tta=True, params={"members": "0,1"},
    )  # fmt: skip
    tags = tracker.run_tags(run_id)
    assert tags[MEMBERS_TAG] == ",".join(uris) and tags[TTA_TAG] == "true"
    served_uri = tracker.log_served_model(
        run_id, model_uri=uris[0], flavor="keras", class_names=CLASS_NAMES,
        members=tuple(uris), tta=True,
    )  # fmt: skip
    images = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    frame = tracker.load_served_model(served_uri).predict(images)
    views = [images[..., None], images[:, :, ::-1, None]]
    members = [tracker.load_keras_model(u) for u in uris]
    expected = np.mean([m.predict(v, verbose=0) for m in members for v in views], axis=0)
    np.testing.assert_allclose(frame[list(CLASS_NAMES)].to_numpy(), expected, rtol=1e-4, atol=1e-6)
    assert frame["class_index"].tolist() == expected.argmax(axis=1).tolist()

    # --final-on-all-data: member 0 retrained (as trial 2); the combination stands in again.
    first = study.trials[0]
    study.add_trial(optuna.trial.create_trial(
        value=0.95, params=first.params, distributions=first.distributions,
        user_attrs={ENSEMBLE_ATTR: [0, 1], TTA_ATTR: True, RUN_ID_ATTR: run_id},
    ))  # fmt: skip
    chosen = study.trials[-1]
    assert add_stand_in(study=study, tracker=tracker, chosen=chosen, retrained={},
                        parent_run_id="none", arch="mlp") is None  # fmt: skip
    stand_in = add_stand_in(study=study, tracker=tracker, chosen=chosen, retrained={0: 2},
                            parent_run_id="none", arch="mlp")  # fmt: skip
    assert stand_in.user_attrs[ENSEMBLE_ATTR] == [2, 1] and stand_in.user_attrs[TTA_ATTR]
    assert stand_in.user_attrs[STANDS_IN_ATTR] == chosen.number
    assert stand_in.value == 0.95
    tags = tracker.run_tags(stand_in.user_attrs[RUN_ID_ATTR])
    assert tags[MEMBERS_TAG] == f"{again_uri},{uris[1]}" and tags[TTA_TAG] == "true"
    assert tags[STANDS_IN_TAG] == str(chosen.number)
    assert select_candidate(study).number == stand_in.number


def test_finals_are_planned_at_the_pace_the_finals_kept():
    """A final that took longer per epoch than its configuration's rungs said slows the
    estimate of the finals and the retraining after it (none yet: the estimate stands)."""
    from optuna.distributions import IntDistribution
    from optuna.trial import TrialState, create_trial

    from search.budget.finals import epoch_seconds_on_all, finals_pace
    from search.names import EPOCHS_ATTR, TRAIN_SECONDS_ATTR

    study = optuna.create_study(direction="maximize")

    def add(value, **attrs):
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=value, params={"x": 1},
                                     distributions={"x": IntDistribution(0, 9)},
                                     user_attrs=attrs))  # fmt: skip
        return study.trials[-1]

    plan = _plan()
    source = add(0.8, **{RUNG_ATTR: 1, TRAIN_IMAGES_ATTR: 600, TRAIN_SECONDS_ATTR: 10.0,
                         EPOCHS_ATTR: 2})  # fmt: skip
    assert finals_pace(study, plan) == 1.0
    estimate = epoch_seconds_on_all(study, plan, source)
    add(0.85, **{FINAL_ATTR: True, REFIT_ATTR: source.number, EPOCHS_ATTR: 4,
                 TRAIN_SECONDS_ATTR: 4 * 1.5 * estimate})  # fmt: skip
    assert finals_pace(study, plan) == pytest.approx(1.5)


def test_a_trials_steady_epoch_is_what_the_finals_are_estimated_from():
    """Where a trial recorded its steady epoch (its first, which traces the steps, left
    out), that is its seconds per epoch, not its training time over its epochs."""
    from search.budget.ladder import seconds_per_epoch
    from search.names import EPOCH_SECONDS_ATTR, EPOCHS_ATTR, TRAIN_SECONDS_ATTR

    assert seconds_per_epoch({TRAIN_SECONDS_ATTR: 12.0, EPOCHS_ATTR: 3}) == 4.0
    assert seconds_per_epoch(
        {TRAIN_SECONDS_ATTR: 12.0, EPOCHS_ATTR: 3, EPOCH_SECONDS_ATTR: 2.5}
    ) == 2.5  # fmt: skip
    assert seconds_per_epoch({}) is None


def _a_slow_best_and_a_fast_second(**changes):
    """A study whose top rung's best took 10 s an epoch and the next 1 s (600 images), and a
    ladder's plan of one final of 20 epochs, with ``changes``."""
    import dataclasses

    from optuna.distributions import IntDistribution
    from optuna.trial import TrialState, create_trial

    from search.names import EPOCHS_ATTR, TRAIN_SECONDS_ATTR

    study = optuna.create_study(direction="maximize")
    for x, value, seconds in [(1, 0.93, 10.0), (2, 0.92, 1.0)]:
        study.add_trial(create_trial(
            state=TrialState.COMPLETE, value=value, params={"x": x},
            distributions={"x": IntDistribution(0, 9)},
            user_attrs={RUNG_ATTR: 1, TRAIN_IMAGES_ATTR: 600, TRAIN_SECONDS_ATTR: 3 * seconds,
                        EPOCHS_ATTR: 3},
        ))  # fmt: skip
    plan = dataclasses.replace(  # a ladder, not a thin one (whose baseline trains, however slow)
        _plan(), rungs=(Rung(200, 2, 9, 2.0), Rung(600, 2, 3, 3.0)),
        **{"top_k": 1, "final_epochs": 20, **changes},
    )  # fmt: skip
    return study, plan


def _finals_asked(study, plan, *, now: float) -> list[tuple[int, int]]:
    """(trial, epochs) of each final :func:`run_finals` starts at ``now``."""
    asked = []
    run_finals(study=study, plan=plan, now=lambda: now,
               run=lambda refit, seconds: asked.append((refit.of, refit.epochs)))  # fmt: skip
    return asked


def test_a_final_the_time_left_holds_too_few_epochs_of_gives_way():
    """53 s are left for one final of a planned 20 epochs: 5 of the best would fit (fewer
    than half), 50 of the second; with 203 s, 20 of the best fit and it goes first."""
    study, plan = _a_slow_best_and_a_fast_second(retrain_seconds=0.0)
    # trial 1 (x=2), at most twice the plan's epochs
    assert _finals_asked(study, plan, now=plan.finals_end_at - 53) == [(1, 40)]
    assert _finals_asked(study, plan, now=plan.finals_end_at - 203)[0][0] == 0


def test_a_final_whose_retraining_leaves_it_too_few_epochs_gives_way():
    """With a retraining on all images kept, an epoch of a final costs one of the retraining
    too. The best has 120 s: 12 epochs of itself alone, but 5 with its retraining, fewer
    than half the planned 20; the next gets the most the plan allows, 40."""
    from search.budget.costs import TRIAL_OVERHEAD_SECONDS

    study, plan = _a_slow_best_and_a_fast_second()
    assert plan.retrain_seconds > 0
    now = plan.retrain_ends_at - 2 * TRIAL_OVERHEAD_SECONDS - 120.5
    assert _finals_asked(study, plan, now=now) == [(1, 40)]


def test_the_finals_leave_a_student_its_share_of_the_time():
    """Two finals and a distilled model planned: each final gets a third of the time left."""
    study, plan = _a_slow_best_and_a_fast_second(retrain_seconds=0.0, top_k=2, final_epochs=10)
    student = dataclasses.replace(plan, distill_seconds=1.0)
    now = plan.finals_end_at - 300.0
    shares = {}
    for name, p in (("plain", plan), ("student", student)):
        asked = shares[name] = []
        run_finals(
            study=study,
            plan=p,
            now=lambda: now,
            run=lambda refit, seconds, a=asked: a.append((refit.epochs, seconds)),
        )
    assert [s for _, s in shares["plain"]] == pytest.approx([150.0, 300.0])
    assert [s for _, s in shares["student"]] == pytest.approx([100.0, 150.0])
    assert [e for e, _ in shares["student"]] < [e for e, _ in shares["plain"]]


@pytest.mark.parametrize(("share", "expected"), [(1.2, 20), (0.8, 16), (0.6, None)])
def test_a_retraining_that_does_not_fit_trains_most_of_its_epochs_or_none(share, expected):
    """20 epochs were best; the time left holds 1.2, 0.8 or 0.6 of them: all 20, as many as
    fit (at least three quarters), or none."""
    from optuna.distributions import IntDistribution
    from optuna.trial import TrialState, create_trial

    from search.budget.costs import TRIAL_OVERHEAD_SECONDS
    from search.budget.finals import epoch_seconds_on_all
    from search.names import BEST_EPOCH_ATTR, EPOCHS_ATTR, TRAIN_SECONDS_ATTR

    study = optuna.create_study(direction="maximize")
    study.add_trial(create_trial(
        state=TrialState.COMPLETE, value=0.9, params={"x": 1},
        distributions={"x": IntDistribution(0, 9)},
        user_attrs={FINAL_ATTR: True, TRAIN_IMAGES_ATTR: 600, TRAIN_SECONDS_ATTR: 60.0,
                    EPOCHS_ATTR: 30, BEST_EPOCH_ATTR: 19},
    ))  # fmt: skip
    (final,) = study.trials
    plan = _plan()
    per_epoch = epoch_seconds_on_all(study, plan, final, images=900)
    now = plan.retrain_ends_at - TRIAL_OVERHEAD_SECONDS - share * 20 * per_epoch - 0.01
    asked = []

    def run(refit, seconds):
        asked.append(refit.epochs)

    retrain_on_all_data(study=study, plan=plan, chosen=final, run=run, now=lambda: now)
    assert asked == ([] if expected is None else [expected])
