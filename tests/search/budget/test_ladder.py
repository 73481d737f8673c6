"""The ladder's rules on hand-made trials: promotion (ASHA), pruning per rung, the finals."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from search.budget.ladder import (
    Ladder,
    RungData,
    RungMedianPruner,
    final_candidates,
    first_rung_cap,
    next_promotion,
)
from search.budget.plan import MAX_FIRST_RUNG_CONFIGS, Plan, Rung, make_plan
from search.names import (
    BASELINE_ATTR,
    ENSEMBLE_ATTR,
    EPOCH_SECONDS_ATTR,
    EPOCHS_ATTR,
    PROMOTED_FROM_ATTR,
    REFIT_ATTR,
    RUNG_ATTR,
)


def _add(study, value=None, *, x, rung=0, state=TrialState.COMPLETE, steps=None, **attrs):
    study.add_trial(
        create_trial(
            state=state, value=value if state == TrialState.COMPLETE else None,
            params={"x": x}, distributions={"x": IntDistribution(0, 100)},
            user_attrs={RUNG_ATTR: rung, **attrs}, intermediate_values=steps or {},
        )
    )  # fmt: skip
    return study.trials[-1]


def test_the_best_third_of_a_rung_moves_up_higher_rungs_first():
    study = optuna.create_study(direction="maximize")
    for x, value in enumerate([0.5, 0.9, 0.7, 0.6, 0.8]):
        _add(study, value, x=x)
    trial, rung = next_promotion(study.trials, n_rungs=3, eta=3)
    assert (trial.number, rung) == (1, 1)  # floor(5 / 3) = 1: only the best
    _add(study, x=1, rung=1, state=TrialState.RUNNING, **{PROMOTED_FROM_ATTR: 1})
    assert next_promotion(study.trials, n_rungs=3, eta=3) is None
    _add(study, 0.95, x=6)  # six done: the best two qualify
    assert next_promotion(study.trials, n_rungs=3, eta=3)[0].number == 6
    for x, value in [(20, 0.91), (21, 0.97), (22, 0.93)]:
        _add(study, value, x=x, rung=1)
    trial, rung = next_promotion(study.trials, n_rungs=3, eta=3)
    assert (trial.params["x"], rung) == (21, 2)  # rung 1's best before rung 0's
    assert next_promotion(study.trials, n_rungs=2, eta=3)[0].number == 6  # rung 1 is the top


def test_a_rung_sends_up_no_more_than_its_best_third_in_all():
    """Three done, the best moved up (failed once, run again: one configuration); a better
    fourth and fifth do not move up beside it (5 // 3 = 1 in all) until a sixth opens a
    second place, which goes to the best not yet moved up."""
    study = optuna.create_study(direction="maximize")
    for x, value in enumerate([0.6, 0.5, 0.4]):
        _add(study, value, x=x)
    assert next_promotion(study.trials, n_rungs=2, eta=3)[0].number == 0
    _add(study, x=0, rung=1, state=TrialState.FAIL, **{PROMOTED_FROM_ATTR: 0})
    _add(study, x=0, rung=1, state=TrialState.RUNNING, **{PROMOTED_FROM_ATTR: 0})  # its retry
    _add(study, 0.9, x=4)
    _add(study, 0.8, x=5)
    assert next_promotion(study.trials, n_rungs=2, eta=3) is None
    _add(study, 0.3, x=6)
    assert next_promotion(study.trials, n_rungs=2, eta=3)[0].params["x"] == 4


def test_pruned_trials_count_in_a_rung_s_third_and_rank_below_the_completed():
    """One completed and four pruned: 5 // 3 = 1 place, which the completed one takes
    (counted out, the pruned would leave 1 // 3 = 0); a pruned trial never moves up."""
    study = optuna.create_study(direction="maximize")
    _add(study, 0.6, x=0)
    _add(study, x=1, state=TrialState.PRUNED, steps={0: 0.9})
    assert next_promotion(study.trials, n_rungs=2, eta=3) is None  # 2 // 3 = 0
    for x in range(2, 5):
        _add(study, x=x, state=TrialState.PRUNED, steps={0: 0.9})
    assert next_promotion(study.trials, n_rungs=2, eta=3)[0].params["x"] == 0
    _add(study, x=0, rung=1, state=TrialState.RUNNING, **{PROMOTED_FROM_ATTR: 0})
    _add(study, x=5, state=TrialState.PRUNED, steps={0: 0.9})
    assert next_promotion(study.trials, n_rungs=2, eta=3) is None  # place 2: no completed one
    _add(study, 0.5, x=6)
    assert next_promotion(study.trials, n_rungs=2, eta=3)[0].params["x"] == 6


def test_pruning_compares_a_trial_with_its_own_rung_only():
    study = optuna.create_study(direction="maximize")
    for x in range(4):
        _add(study, 0.6, x=x, steps={0: 0.5, 1: 0.6})
        _add(study, 0.95, x=10 + x, rung=1, steps={0: 0.9, 1: 0.95})
    pruner = RungMedianPruner(n_startup_trials=4, n_warmup_steps=1)

    def running(rung, steps):
        return create_trial(state=TrialState.COMPLETE, value=0.0, intermediate_values=steps,
                            user_attrs={RUNG_ATTR: rung})  # fmt: skip

    assert pruner.prune(study, running(0, {0: 0.55, 1: 0.58}))
    assert not pruner.prune(study, running(0, {0: 0.55, 1: 0.7}))  # above rung 0's median
    assert pruner.prune(study, running(1, {0: 0.8, 1: 0.85}))  # 0.85 would pass on rung 0
    assert not pruner.prune(study, running(1, {0: 0.1}))  # warm-up
    assert not RungMedianPruner(n_startup_trials=5).prune(study, running(0, {0: 0.1, 1: 0.1}))


def test_finals_take_the_highest_rung_first_and_each_configuration_once():
    study = optuna.create_study(direction="maximize")
    _add(study, 0.99, x=1)  # lucky on rung 0
    _add(study, 0.90, x=2, rung=1)
    _add(study, 0.85, x=3, rung=1)
    _add(study, 0.80, x=3, rung=1)  # the same configuration again
    _add(study, 0.70, x=4, rung=1)
    _add(study, 0.999, x=2, **{ENSEMBLE_ATTR: [1, 2]})  # an ensemble is no configuration
    assert [t.params["x"] for t in final_candidates(study, k=3)] == [2, 3, 4]
    _add(study, 0.95, x=2, **{REFIT_ATTR: 1})  # trial 1 (x=2) trained already
    assert [t.params["x"] for t in final_candidates(study, k=3)] == [3, 4]


def test_a_top_rung_configuration_too_slow_for_a_final_gives_way_to_one_of_its_rung():
    study = optuna.create_study(direction="maximize")
    _add(study, 0.99, x=1, rung=1)  # the best, too slow
    _add(study, 0.95, x=2, rung=1)
    _add(study, 0.90, x=3, rung=1)  # too slow too
    _add(study, 0.97, x=4)  # rung 0: never ahead of the top rung
    slow = {1, 3}

    def too_slow(trial):
        return trial.params["x"] in slow

    assert [t.params["x"] for t in final_candidates(study, k=2, too_slow=too_slow)] == [2, 1]
    slow = {1, 2, 3}  # all of the top rung: the order stands
    assert [t.params["x"] for t in final_candidates(study, k=2, too_slow=too_slow)] == [1, 2]
    _add(study, 0.96, x=1, **{REFIT_ATTR: 0})  # x=1's final trained: it stays chosen
    assert final_candidates(study, k=1, too_slow=too_slow) == []


def test_a_thin_ladder_trains_the_baseline_first_even_pruned_low():
    study = optuna.create_study(direction="maximize")
    _add(study, x=7, state=TrialState.PRUNED, **{BASELINE_ATTR: "published"})
    _add(study, 0.9, x=1)
    _add(study, 0.95, x=1, rung=1)
    _add(study, 0.8, x=2)
    assert [t.params["x"] for t in final_candidates(study, k=2)] == [1, 2]
    assert [t.params["x"] for t in final_candidates(study, k=2, baseline_first=True)] == [7, 1]
    _add(study, 0.9, x=7, **{REFIT_ATTR: 0})  # its final trained already
    assert [t.params["x"] for t in final_candidates(study, k=2, baseline_first=True)] == [1]


def test_a_plan_knows_a_thin_ladder():
    assert _plan(ends_in=60, configs=(3, 1)).thin_ladder
    assert not _plan(ends_in=60, configs=(9, 3, 1)).thin_ladder


def _plan(*, ends_in: float, configs=(3, 1)) -> Plan:
    now = time.time()
    rungs = tuple(Rung(100 * 3**r, 1, c, 1.0) for r, c in enumerate(configs))
    return Plan(
        budget_seconds=ends_in + 60, started_at=now, train_images_per_s=1e4,
        eval_images_per_s=1e4, probe_seconds=0.0, train_images=300, val_images=100,
        reduction_factor=3, rungs=rungs, search_seconds=ends_in, top_k=2, final_epochs=2,
        final_seconds=30, reserve_seconds=30, estimated_seconds=ends_in + 60,
    )  # fmt: skip


def test_top_up_adds_one_trial_to_an_empty_pool_until_the_plan_is_spent(storage_url, small_split):
    from search.storage.rdb import create_or_load_study, open_storage

    study = create_or_load_study(
        storage=open_storage(storage_url), study_name="s", arch="mlp",
        sampler=optuna.samplers.RandomSampler(seed=0), pruner=optuna.pruners.NopPruner(),
    )  # fmt: skip
    data = [RungData(small_split, 1), RungData(small_split, 1)]
    ladder = Ladder(plan=_plan(ends_in=600, configs=(2, 0)), rungs=data)
    assert ladder.top_up(study)
    assert not ladder.top_up(study)  # one is waiting
    (waiting,) = study.get_trials(states=(TrialState.WAITING,))
    assert waiting.user_attrs == {RUNG_ATTR: 0}
    study.tell(study.ask(), 0.5)
    assert ladder.top_up(study)  # the second configuration
    study.tell(study.ask(), 0.6)
    assert not ladder.top_up(study)  # two started: rung 0 is full, 2 // 3 = 0 promotions
    late = Ladder(plan=_plan(ends_in=-1), rungs=data)
    assert not late.searching() and not late.top_up(study)
    study.enqueue_trial({}, user_attrs={RUNG_ATTR: 0})  # added just before the deadline
    study.enqueue_trial({})  # not the ladder's
    assert late.retire_waiting(study) == 1
    retired = study.trials[-2]
    assert retired.state == TrialState.FAIL and "time ran out" in retired.user_attrs["fail_reason"]
    assert study.trials[-1].state == TrialState.WAITING
    with pytest.raises(ValueError, match="expected 2 rungs' data, got 1"):
        Ladder(plan=_plan(ends_in=600), rungs=data[:1])


def _timed(number, *, seconds, epoch_seconds=None, epochs=3, state=TrialState.COMPLETE, rung=0,
           **attrs):  # fmt: skip
    """A finished trial that took ``seconds``, its epochs ``epoch_seconds`` each."""
    start = datetime(2026, 12, 7)
    if epoch_seconds is not None:
        attrs |= {EPOCH_SECONDS_ATTR: epoch_seconds, EPOCHS_ATTR: epochs}
    return FrozenTrial(
        number=number, trial_id=number, state=state,
        value=0.8 - number / 100 if state == TrialState.COMPLETE else None,
        datetime_start=start, datetime_complete=start + timedelta(seconds=seconds),
        params={"x": number}, distributions={"x": IntDistribution(0, 100)},
        user_attrs={RUNG_ATTR: rung, **attrs}, system_attrs={}, intermediate_values={},
    )  # fmt: skip


def test_the_first_rung_widens_when_its_trials_run_faster_than_the_probe_said():
    # The two-hour run whose probe read 582 images/s: its trials' epochs took 0.68 of the
    # plan's, a first-rung trial about 35 s (43.7 planned), a pruned one about 15.
    plan = make_plan(budget_seconds=7200, train_images_per_s=582, eval_images_per_s=2483,
                     train_images=50_000, val_images=10_000, started_at=time.time(),
                     probe_seconds=23)  # fmt: skip
    assert [r.configs for r in plan.rungs] == [31, 10, 3]
    epoch = 0.68 * plan.epoch_seconds(plan.rungs[0].train_images)
    done = [_timed(i, seconds=35.0, epoch_seconds=epoch) for i in range(3)]
    pruned = [_timed(i, seconds=15.0, state=TrialState.PRUNED) for i in range(3, 6)]
    assert first_rung_cap(plan, done[:2]) == 31  # too few to judge the host by
    widened = first_rung_cap(plan, done)
    # about 100 s a configuration where the plan costed 139: 4,425 s hold ~44
    assert 40 <= widened <= 46
    assert first_rung_cap(plan, done + pruned) > widened  # pruning's savings count
    # A slower host keeps its plan (the search's end cuts its ladder), a thin ladder its
    # published configuration alone; and no more than the plan's cap on first-rung trials.
    slow = [_timed(i, seconds=80.0, epoch_seconds=2 * epoch) for i in range(3)]
    assert first_rung_cap(plan, slow) == 31
    thin = _plan(ends_in=600, configs=(1, 0))
    assert (
        first_rung_cap(thin, [_timed(i, seconds=0.1, epoch_seconds=0.001) for i in range(3)]) == 1
    )
    quick = _plan(ends_in=600, configs=(9, 3))
    assert (
        first_rung_cap(quick, [_timed(i, seconds=0.1, epoch_seconds=0.001) for i in range(3)])
        == MAX_FIRST_RUNG_CONFIGS
    )


def test_top_up_starts_configurations_past_the_plan_s_count_on_a_fast_host(small_split):
    study = optuna.create_study(direction="maximize")
    plan = _plan(ends_in=600, configs=(9, 3))  # an epoch planned at 0.02 s, a trial at 1 s
    for i in range(9):
        study.add_trial(_timed(i, seconds=0.5, epoch_seconds=0.01, epochs=1))
    for i in range(3):  # rung 0's quota of promotions, spent
        study.add_trial(_timed(9 + i, seconds=0.5, epoch_seconds=0.02, epochs=1, rung=1,
                               **{PROMOTED_FROM_ATTR: i}))  # fmt: skip
    ladder = Ladder(plan=plan, rungs=[RungData(small_split, 1), RungData(small_split, 1)])
    assert ladder.top_up(study)  # a tenth configuration where the plan had nine
    (waiting,) = study.get_trials(states=(TrialState.WAITING,))
    assert waiting.user_attrs == {RUNG_ATTR: 0}
