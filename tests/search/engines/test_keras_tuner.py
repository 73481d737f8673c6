"""The Keras Tuner engine: the same space in Keras Tuner's terms, and real tiny searches whose
trials land in the study and in MLflow as Optuna's do."""

from __future__ import annotations

import keras_tuner as kt
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState

from runners.errors import FmsearchError
from search.engines.keras_tuner import hyperparameters, run_keras_tuner
from search.storage.rdb import create_or_load_study, open_storage
from search.trials.choices import describe_space
from spaces import ARCHITECTURES

KERAS = sorted(name for name, space in ARCHITECTURES.items() if space.KIND == "keras")


@pytest.mark.parametrize("arch", KERAS)
def test_every_keras_space_maps_onto_keras_tuner(arch):
    space = ARCHITECTURES[arch]
    distributions = describe_space(space)
    hp = hyperparameters(distributions, fixed={"optimizer": "sgd"})
    assert {p.name for p in hp.space} == set(distributions)
    for p in hp.space:
        dist = distributions[p.name]
        if p.name == "optimizer":
            assert isinstance(p, kt.engine.hyperparameters.Fixed) and p.value == "sgd"
        elif isinstance(dist, CategoricalDistribution) and set(dist.choices) == {False, True}:
            assert isinstance(p, kt.engine.hyperparameters.Boolean)
        elif isinstance(dist, CategoricalDistribution):
            assert list(p.values) == list(dist.choices)
        else:
            assert (p.min_value, p.max_value) == (dist.low, dist.high)
            assert p.sampling == ("log" if dist.log else "linear")
            assert isinstance(p, kt.engine.hyperparameters.Int) == isinstance(dist, IntDistribution)
    # Whatever Keras Tuner draws is a valid trial of the fmsearch space.
    for seed in range(3):
        values = {p.name: p.random_sample(seed) for p in hp.space}
        params = space.suggest(optuna.trial.FixedTrial(values))
        assert all(params[k] == values[k] and type(params[k]) is type(values[k])
                   for k in params if k in values)  # fmt: skip


@pytest.fixture
def kt_study(storage_url):
    def make(name):
        return create_or_load_study(
            storage=open_storage(storage_url),
            study_name=name,
            arch="mlp",
            sampler=optuna.samplers.RandomSampler(seed=0),
            pruner=optuna.pruners.NopPruner(),
        )

    return make


def _search(study, tracker, split, tmp_path, **kwargs):
    return run_keras_tuner(
        study=study, arch="mlp", split=split, tracker=tracker, directory=tmp_path / "kt",
        seed=0, fixed={"batch_size": 64, "mix": "none"}, **kwargs,
    )  # fmt: skip


def test_hyperband_trials_are_tracked_continue_and_resume(kt_study, tracker, small_split, tmp_path):
    study = kt_study("kt-hb")
    outcome = _search(study, tracker, small_split, tmp_path, tuner="hyperband", max_epochs=3,
                      n_trials=4)  # fmt: skip
    trials = study.trials
    assert outcome.n_complete == len(trials) == 4
    assert all(t.params["batch_size"] == 64 and t.params["mix"] == "none" for t in trials)
    assert all(type(t.params["flip"]) is bool for t in trials)
    assert len({t.user_attrs["keras_tuner_trial"] for t in trials}) == 4
    experiment = tracker.experiment_id("kt-hb")
    (parent,) = tracker.find_runs(experiment, role="study", study_name="kt-hb")
    assert parent.data.params["engine"] == "keras-tuner"
    assert parent.data.params["tuner"] == "hyperband"
    runs = tracker.find_runs(experiment, role="trial", study_name="kt-hb")
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    assert sorted(r.info.run_id for r in runs) == sorted(t.user_attrs["mlflow_run_id"]
                                                         for t in trials)  # fmt: skip
    # Hyperband's first bracket trains 3 configurations 1 epoch, then continues the best one
    # from its saved weights: its epochs are numbered on from where the first left off.
    steps = {
        r.info.run_id: [m.step for m in tracker._client.get_metric_history(r.info.run_id,
                                                                            "train_loss")]
        for r in runs
    }  # fmt: skip
    assert sorted(map(tuple, steps.values()))[:3] == [(0,), (0,), (0,)]
    assert any(s and s[0] >= 1 for s in steps.values())
    assert (tmp_path / "kt" / "kt-hb" / "oracle.json").exists()
    # The same search again resumes Keras Tuner's state and adds trials.
    outcome = _search(study, tracker, small_split, tmp_path, tuner="hyperband", max_epochs=3,
                      n_trials=2)  # fmt: skip
    assert outcome.n_complete == len(study.trials) == 6


def test_bayesian_runs_the_trials_asked_for(kt_study, tracker, small_split, tmp_path):
    # The random tuner runs in tests/test_cli_search_controls.py, through the CLI.
    study = kt_study("kt-bayesian")
    outcome = _search(study, tracker, small_split, tmp_path, tuner="bayesian", max_epochs=1,
                      n_trials=3)  # fmt: skip
    assert outcome.n_complete == 3 and outcome.best_value == max(t.value for t in study.trials)
    assert len({t.params["learning_rate"] for t in study.trials}) == 3
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_seed_0_draws_the_same_configurations_again(kt_study, tracker, small_split, tmp_path):
    # Keras Tuner reads seed 0 as no seed; the same seeded search must draw the same trials.
    drawn = []
    for name in ("kt-seed-a", "kt-seed-b"):
        study = kt_study(name)
        _search(study, tracker, small_split, tmp_path / name, tuner="random", max_epochs=1,
                n_trials=2)  # fmt: skip
        drawn.append([t.params for t in study.trials])
    assert drawn[0] == drawn[1] and drawn[0][0] != drawn[0][1]


def test_scikit_learn_architectures_are_refused(kt_study, tracker, small_split, tmp_path):
    with pytest.raises(FmsearchError, match="expected a Keras architecture, got knn"):
        run_keras_tuner(
            study=kt_study("kt-knn"), tuner="random", arch="knn", split=small_split,
            tracker=tracker, max_epochs=1, n_trials=1, directory=tmp_path,
        )  # fmt: skip


def test_an_optuna_pool_is_not_mixed_in(kt_study, tracker, small_split, tmp_path):
    study = kt_study("kt-pool")
    study.enqueue_trial({})
    with pytest.raises(FmsearchError, match=r"expected no waiting trials .* got 1"):
        _search(study, tracker, small_split, tmp_path, tuner="random", max_epochs=1, n_trials=1)
