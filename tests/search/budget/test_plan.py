"""The budget's arithmetic: rungs, configurations per rung, the final training, the estimate."""

from __future__ import annotations

import pytest

from runners.errors import FmsearchError
from search.budget.costs import FINAL_EPOCHS, MAX_FINAL_EPOCHS, TRIAL_OVERHEAD_SECONDS
from search.budget.finals import final_epochs, retrain_reserve
from search.budget.plan import (
    MAX_FIRST_RUNG_CONFIGS,
    THIN_LADDER_CONFIGS,
    Plan,
    make_plan,
    rung_sizes,
)

T0 = 1_000_000.0


def _plan(hours, *, train=1500.0, predict=5000.0, images=50_000, **kwargs):
    return make_plan(
        budget_seconds=hours * 3600, train_images_per_s=train, eval_images_per_s=predict,
        train_images=images, val_images=10_000, started_at=T0, probe_seconds=20, **kwargs,
    )  # fmt: skip


def test_rungs_grow_by_the_reduction_factor_to_all_images():
    assert rung_sizes(50_000) == [5556, 16667, 50000]
    assert rung_sizes(900) == [100, 300, 900]  # a tiny data set gets rungs of N / 9 and up


def test_a_two_hour_cnn_plan_climbs_to_all_images_and_trains_three_finals():
    plan = _plan(2)
    assert [r.train_images for r in plan.rungs] == [5556, 16667, 50000]
    assert [r.epochs for r in plan.rungs] == [3, 4, 5]
    configs = [r.configs for r in plan.rungs]
    assert configs == [configs[0] // 3**r for r in range(3)] and configs[-1] >= 1
    assert (plan.top_k, plan.final_epochs) == (3, FINAL_EPOCHS)
    assert plan.estimated_seconds <= plan.budget_seconds
    assert plan.search_ends_at == T0 + 20 + plan.search_seconds
    assert plan.finals_end_at == T0 + plan.budget_seconds - plan.reserve_seconds


def test_a_slow_host_trains_one_final_model_for_the_epochs_that_fit():
    plan = _plan(2, train=200, predict=800)  # a slow host for the architecture
    assert plan.top_k == 1 and 10 < plan.final_epochs < FINAL_EPOCHS
    assert plan.rungs[-1].train_images < 50_000  # the ladder stops below all images
    assert any("one final model" in note for note in plan.notes)
    assert plan.estimated_seconds == pytest.approx(plan.budget_seconds, rel=0.01)


def test_a_fast_host_caps_the_first_rung_and_lengthens_the_finals():
    plan = _plan(2, train=17_000, predict=50_000)  # the mlp here
    assert plan.rungs[0].configs == MAX_FIRST_RUNG_CONFIGS
    assert FINAL_EPOCHS < plan.final_epochs <= MAX_FINAL_EPOCHS
    assert plan.estimated_seconds < plan.budget_seconds  # it ends early rather than waste


def test_fewer_final_models_leave_their_time_to_the_ladder():
    three, one = _plan(2, train=800), _plan(2, train=800, top_k=1)
    assert (three.top_k, one.top_k) == (2, 1)  # three models of 30 epochs do not fit here
    assert one.final_epochs == three.final_epochs == FINAL_EPOCHS
    assert one.final_seconds < three.final_seconds
    assert [r.configs for r in one.rungs] > [r.configs for r in three.rungs]
    assert one.search_seconds > three.search_seconds


def test_a_budget_without_room_for_one_trial_is_refused():
    with pytest.raises(
        FmsearchError,
        match=r"expected at least 0\.\d+ h \(\d+ s, .*\) on this host, got 0\.0100 h \(36 s\)",
    ):
        _plan(0.01, train=68, predict=400)


def test_the_plan_survives_json_and_describes_itself():
    plan = _plan(0.5)
    assert Plan.from_json(plan.to_json()) == plan
    text = plan.describe(arch="cnn")
    assert "rung 0:  5,556 images x 3 epochs" in text
    assert f"the top {plan.top_k} on all 50,000 images for {plan.final_epochs} epochs" in text


def test_final_epochs_share_the_time_left_among_the_finals():
    plan = _plan(1)
    end = plan.finals_end_at
    assert final_epochs(plan, epoch_seconds=10, finals_left=2, now=end - 206) == 10
    assert final_epochs(plan, epoch_seconds=10, finals_left=1, now=end - 10_000) == MAX_FINAL_EPOCHS
    assert final_epochs(plan, epoch_seconds=10, finals_left=1, now=end + 5) == 1


def test_final_epochs_leave_the_retraining_its_share_of_spare_time():
    plan = _plan(2, retrain_on_all=True)
    full, on_all = plan.epoch_seconds(50_000), plan.epoch_seconds(60_000)
    planned = plan.final_epochs
    # At the planned start of the finals, the planned epochs (give or take the rounding).
    start = plan.finals_end_at - plan.final_seconds
    at_plan = final_epochs(plan, epoch_seconds=full, finals_left=plan.top_k, now=start,
                           retrain_epoch_seconds=on_all)  # fmt: skip
    assert abs(at_plan - planned) <= 1
    # The search ended 10 minutes early: the final gets longer, and its retraining (one epoch
    # on all images per epoch of the final) still ends by the plan's end.
    early = start - 600
    longer = final_epochs(plan, epoch_seconds=full, finals_left=plan.top_k, now=early,
                          retrain_epoch_seconds=on_all)  # fmt: skip
    assert longer > planned
    finals = plan.top_k * (longer * full + TRIAL_OVERHEAD_SECONDS)
    reserve = retrain_reserve(plan, epochs=longer, retrain_epoch_seconds=on_all)
    assert reserve == longer * on_all + TRIAL_OVERHEAD_SECONDS
    assert early + finals + reserve <= plan.retrain_ends_at
    # Given to the finals alone (up to finals_end_at), the spare time would have made a final
    # the kept retraining time cannot train again.
    alone = int(((plan.finals_end_at - early) / plan.top_k - TRIAL_OVERHEAD_SECONDS) // full)
    assert alone * on_all > plan.retrain_seconds
    assert retrain_reserve(_plan(2), epochs=30, retrain_epoch_seconds=on_all) == 0.0


def test_final_on_all_data_keeps_time_for_one_more_training_after_the_finals():
    plain, again = _plan(2), _plan(2, retrain_on_all=True)
    assert plain.retrain_seconds == 0 and again.retrain_seconds > 0
    # One training of the final epochs on 60,000 images (validation included) at least.
    assert again.retrain_seconds >= again.final_epochs * 60_000 / 1500
    assert again.finals_end_at == again.retrain_ends_at - again.retrain_seconds
    assert again.retrain_ends_at == plain.finals_end_at  # the reserve is the same
    assert again.search_seconds + again.final_seconds < plain.search_seconds + plain.final_seconds
    assert again.estimated_seconds <= again.budget_seconds
    assert "retrain" in again.describe(arch="cnn") and "retrain" not in plain.describe(arch="cnn")
    assert Plan.from_json(again.to_json()) == again


def test_distilling_keeps_time_for_one_more_final_where_finals_can_make_an_ensemble():
    plain, distilled = _plan(2), _plan(2, distill=True)
    assert plain.distill_seconds == 0 and distilled.top_k >= 2
    epoch = 50_000 / 1500 + 10_000 / 5000
    student = distilled.final_epochs * epoch + TRIAL_OVERHEAD_SECONDS
    assert distilled.distill_seconds == pytest.approx(student)
    # Inside the finals' time, before the reserve; the ladder gives up what it costs.
    assert distilled.finals_end_at == plain.finals_end_at
    assert distilled.search_seconds < plain.search_seconds
    assert distilled.estimated_seconds <= distilled.budget_seconds
    assert "distill" in distilled.describe(arch="cnn") and "distill" not in plain.describe(
        arch="cnn"
    )
    assert Plan.from_json(distilled.to_json()) == distilled
    # One final makes no ensemble; a retraining with the validation images leaves none to
    # judge a student on.
    assert _plan(2, train=200, predict=800, distill=True).distill_seconds == 0
    assert _plan(2, distill=True, retrain_on_all=True).distill_seconds == 0


def test_final_on_all_data_on_a_slow_host_shortens_the_one_final_to_fit_both():
    plain, again = _plan(2, train=200, predict=800), _plan(2, train=200, predict=800,
                                                           retrain_on_all=True)  # fmt: skip
    assert plain.top_k == again.top_k == 1
    assert again.final_epochs < plain.final_epochs
    assert again.estimated_seconds == pytest.approx(again.budget_seconds, rel=0.01)


def test_a_budget_for_one_trial_but_not_a_final_too_plans_the_search_alone():
    # Room for the reserve, the probe and one first-rung trial, but not a final beside it.
    plan = _plan(0.0142, train=2000, predict=20000, images=900)
    assert plan.top_k == 0 and plan.final_seconds == 0 and plan.rungs[0].configs >= 1
    assert [n for n in plan.notes if "final" in n] == [
        "no final training: the budget holds one search trial, not a final too"
    ]
    assert _plan(0.0153, train=2000, predict=20000, images=900).top_k == 1
    assert plan.estimated_seconds <= plan.budget_seconds


@pytest.mark.parametrize("retrain_on_all", [False, True])
def test_too_little_time_for_a_search_trains_the_published_configuration_long(retrain_on_all):
    """Seven first-rung configurations (30 minutes of one core for a CNN) are too few for the
    ladder's pick to beat the published configuration: the plan trains that one once on the
    lowest rung, then gives it all the rest of the budget (none kept for rungs or a second
    final)."""
    thin = _plan(0.5, train=450, retrain_on_all=retrain_on_all)
    full = _plan(1, retrain_on_all=retrain_on_all)
    assert thin.thin_ladder and not full.thin_ladder
    assert 7 < THIN_LADDER_CONFIGS <= full.rungs[0].configs
    assert [(r.train_images, r.configs) for r in thin.rungs] == [(5556, 1)]
    assert thin.search_seconds == thin.rungs[0].trial_seconds
    assert thin.top_k == 1
    # The final (and its retraining) take all but less than one more epoch of the budget.
    per_epoch = thin.epoch_seconds(50_000) + (thin.epoch_seconds(60_000) if retrain_on_all else 0)
    assert 0 <= thin.budget_seconds - thin.estimated_seconds < per_epoch
    assert thin.notes == (
        "too little time for a search (7 first-rung configurations would fit): the published "
        "configuration, trained long",
    )
    text = thin.describe(arch="cnn")
    assert "the published configuration alone" in text and "successive halving" not in text
    assert "too little time" not in full.describe(arch="cnn")
    assert Plan.from_json(thin.to_json()).thin_ladder
