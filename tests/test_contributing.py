"""docs/contributing.md's walk-throughs, done as the guide says: a toy architecture, a toy
engine and a toy sampler, each registered from here and run through a real search."""

from __future__ import annotations

import types

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from search.engines._base import Engine
from spaces import ARCHITECTURES, checked
from tests.search.conftest import GOOD_MLP

TINY = {"subset": 300, "val_size": 200, "max_epochs": 1, "seed": 0, "quiet": True}


def _toy_space() -> types.ModuleType:
    """A space module as docs/contributing.md writes one: the Architecture contract."""
    from spaces.common import (
        COMMON_DEFAULTS,
        classifier_head,
        image_input,
        suggest_keras_common,
    )

    toy = types.ModuleType("toy")
    toy.KIND = "keras"
    toy.DEFAULTS = {**COMMON_DEFAULTS, "units": 32}
    toy.REQUIRES, toy.SHORT_RUN, toy.BACKBONE = None, {}, None

    def suggest(trial):
        return {"units": trial.suggest_int("units", 8, 64, log=True), **suggest_keras_common(trial)}

    def build(params, *, input_shape=(28, 28, 1), num_classes=10):
        import keras

        inputs, x = image_input(input_shape)
        x = keras.layers.Dense(params["units"], activation="relu")(keras.layers.Flatten()(x))
        return keras.Model(inputs, classifier_head(x, num_classes), name="toy")

    toy.suggest, toy.build = suggest, build
    return toy


@pytest.mark.slow
def test_an_architecture_added_to_the_registry_is_searched_and_promoted(stores, monkeypatch):
    from search import api

    monkeypatch.setitem(ARCHITECTURES, "toy", checked("toy", _toy_space()))
    result = api.search(arch="toy", trials=2, storage=stores["storage"],
                        tracking_uri=stores["tracking"], **TINY)  # fmt: skip
    trials = result.study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 2
    # It started from its DEFAULTS, the published configuration of a new space.
    assert trials[0].params["units"] == 32
    assert result.promotion.model_name == "fmsearch-toy"
    assert 0.0 <= result.promotion.test_accuracy <= 1.0


class TwoRates(Engine):
    """A toy engine: the good configuration at two learning rates, one after the other."""

    fills_pool = False

    def run(self, session):
        for rate in (1e-3, 3e-3):
            session.study.enqueue_trial({**GOOD_MLP, "learning_rate": rate})
            session.study.optimize(session.objective, n_trials=1, callbacks=session.callbacks)


def test_an_engine_runs_its_trials_through_the_shared_lifecycle(
    storage_url, tracker, small_split, monkeypatch
):
    """An Engine registered in ENGINES decides what runs; run_engine gives it the objective,
    the parent run and the failure guard."""
    from search.engines import ENGINES, engine_class
    from search.engines.lifecycle import run_engine
    from search.storage.rdb import create_or_load_study, open_storage

    monkeypatch.setitem(ENGINES, "two-rates", "tests.test_contributing:TwoRates")
    engine = engine_class("two-rates")()
    study = create_or_load_study(storage=open_storage(storage_url), study_name="toy-engine",
                                 arch="mlp", sampler=optuna.samplers.RandomSampler(seed=0),
                                 pruner=optuna.pruners.NopPruner())  # fmt: skip
    outcome = run_engine(engine, study=study, arch="mlp", split=small_split,
                         tracker=tracker, max_epochs=1, seed=0)  # fmt: skip
    assert outcome.n_complete == 2
    rates = [t.params["learning_rate"] for t in study.trials]
    assert rates == [1e-3, 3e-3]
    # Each trial is a nested MLflow run under the study's one parent run, which ended.
    client = mlflow.MlflowClient(tracker.tracking_uri)
    parent = tracker.study_run_id("toy-engine")
    runs = [client.get_run(t.user_attrs["mlflow_run_id"]) for t in study.trials]
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent}
    assert client.get_run(parent).info.status == "FINISHED"


def test_a_registered_engine_runs_from_a_search(stores, monkeypatch):
    """``engine=NAME`` (``fmsearch run --engine NAME``) reaches a registered engine through the
    search's one path: its trials, promotion and the parent run's record of the engine."""
    from search import api
    from search.engines import ENGINES
    from search.tracking import Tracker

    monkeypatch.setitem(ENGINES, "two-rates", "tests.test_contributing:TwoRates")
    result = api.search(arch="mlp", engine="two-rates", trials=2, storage=stores["storage"],
                        tracking_uri=stores["tracking"], **TINY)  # fmt: skip
    assert [t.params["learning_rate"] for t in result.study.trials] == [1e-3, 3e-3]
    assert result.promotion.model_name == "fmsearch-mlp"
    parent = Tracker(tracking_uri=stores["tracking"]).study_run_id("mlp")
    params = mlflow.MlflowClient(stores["tracking"]).get_run(parent).data.params
    assert params["engine"] == "two-rates"


def test_a_sampler_added_to_the_registry_picks_the_search_s_trials(stores, monkeypatch):
    from search import api
    from search.trials.choices import SAMPLERS

    asked = []

    class Counting(optuna.samplers.RandomSampler):
        def sample_independent(self, study, trial, name, distribution):
            asked.append(name)
            return super().sample_independent(study, trial, name, distribution)

    monkeypatch.setitem(SAMPLERS, "counting", lambda seed: Counting(seed=seed))
    result = api.search(arch="knn", sampler="counting", trials=2, enqueue=False,
                        pruner="none", promote=False, storage=stores["storage"],
                        tracking_uri=stores["tracking"], **TINY)  # fmt: skip
    assert result.outcome.n_complete == 2
    assert "n_neighbors" in asked
