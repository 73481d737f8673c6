"""Real (tiny) studies: what lands in Optuna and in MLflow for each trial outcome."""

from __future__ import annotations

import time

import mlflow
import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

import search.engines._base
import search.engines.outages
import search.kinds
from runners.data import Split
from runners.errors import FmsearchError
from search.engines.lifecycle import MAX_CONSECUTIVE_FAILURES
from search.engines.optuna_pool import add_budget, run_worker
from search.names import RUN_ID_ATTR
from search.outcome import refit_candidate
from search.storage.rdb import create_or_load_study, open_storage
from tests.search.conftest import BAD_MLP, GOOD_MLP


def _runs(tracker, study_name, role):
    exp = tracker.experiment_id(study_name)
    runs = tracker.find_runs(exp, role=role, study_name=study_name)
    return sorted(runs, key=lambda r: r.info.start_time)


def _nan_split(split: Split) -> Split:
    x = split.x_train.astype(np.float32)
    x[:, 0, 0, 0] = np.nan
    return Split(x, split.y_train, split.x_val, split.y_val)


def test_completed_trial_record(tiny_study, tracker, small_split):
    study, outcome = tiny_study(enqueue=[GOOD_MLP])
    assert outcome.n_complete == 1 and outcome.best_trial == 0
    trial = study.trials[0]
    (parent,) = _runs(tracker, "tiny", "study")
    (run,) = _runs(tracker, "tiny", "trial")
    assert parent.info.status == "FINISHED"
    assert trial.user_attrs[RUN_ID_ATTR] == run.info.run_id
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert run.data.tags["fmsearch.trial_number"] == "0"
    assert run.info.status == "FINISHED"
    assert run.data.params == {k: str(v) for k, v in GOOD_MLP.items()}
    assert run.data.metrics["best_val_accuracy"] == pytest.approx(trial.value)
    # The logged evaluation is of the returned (best-epoch) weights.
    assert run.data.metrics["val_accuracy"] == pytest.approx(trial.value, abs=1e-6)
    history = tracker._client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == [0, 1]
    artifacts = {a.path for a in tracker._client.list_artifacts(run.info.run_id)}
    assert {"val_confusion_matrix.png", "val_classification_report.json"} <= artifacts
    model = mlflow.keras.load_model(run.data.tags["fmsearch.model_uri"])
    predicted = model.predict(small_split.x_val, verbose=0).argmax(1)
    assert (predicted == small_split.y_val).mean() == pytest.approx(trial.value, abs=1e-6)


def test_pruned_trials_end_killed(tiny_study, tracker):
    # Accuracy never reaches 1.01: the threshold pruner stops every trial after one epoch.
    study, outcome = tiny_study(
        enqueue=[GOOD_MLP, GOOD_MLP],
        max_epochs=4,
        pruner=optuna.pruners.ThresholdPruner(lower=1.01),
    )
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    assert outcome.n_pruned == 2 and outcome.best_trial is None
    for run in _runs(tracker, "tiny", "trial"):
        assert run.info.status == "KILLED"
        assert run.data.tags["fmsearch.trial_state"] == "PRUNED"
        assert run.data.tags["fmsearch.reason"] == "Trial was pruned at epoch 0."
        assert "fmsearch.model_uri" not in run.data.tags
        assert [
            m.step for m in tracker._client.get_metric_history(run.info.run_id, "val_accuracy")
        ] == [0]


def test_failed_trials_are_recorded_and_the_study_goes_on(tiny_study, tracker, small_split):
    study, outcome = tiny_study(enqueue=[GOOD_MLP, GOOD_MLP], split=_nan_split(small_split))
    assert outcome.n_failed == 2
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2
    for run in _runs(tracker, "tiny", "trial"):
        assert run.info.status == "FAILED"
        assert run.data.tags["fmsearch.reason"] == "training loss became nan in epoch 0"
    (parent,) = _runs(tracker, "tiny", "study")
    assert parent.info.status == "FINISHED"


def test_a_failing_set_up_stops_the_study(tiny_study, tracker, small_split):
    with pytest.raises(FmsearchError, match=r"stopped after 5 trials in a row failed; .*nan"):
        tiny_study(enqueue=[GOOD_MLP] * 8, split=_nan_split(small_split), max_epochs=1)
    trials = _runs(tracker, "tiny", "trial")
    assert len(trials) == MAX_CONSECUTIVE_FAILURES
    (parent,) = _runs(tracker, "tiny", "study")
    assert parent.info.status == "FAILED"


def test_resume_adds_trials_under_the_same_parent(tiny_study, tracker):
    tiny_study(enqueue=[GOOD_MLP])
    study, outcome = tiny_study(n_trials=2, max_epochs=1)
    assert len(study.trials) == 3 and outcome.n_complete == 3
    (parent,) = _runs(tracker, "tiny", "study")
    trials = _runs(tracker, "tiny", "trial")
    assert [r.data.tags["fmsearch.trial_number"] for r in trials] == ["0", "1", "2"]
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent.info.run_id}
    best = tracker._client.get_metric_history(parent.info.run_id, "best_val_accuracy")
    assert [m.step for m in best] == [0, 1, 2]


def test_timeout_stops_starting_trials(tiny_study, monkeypatch):
    # Set-up slower than the timeout (TensorFlow's device discovery on a loaded machine) must
    # not use up the budget: the clock starts when trials can.
    keras = search.kinds.RUNNERS["keras"]
    resolve = keras.resolve_policy
    monkeypatch.setattr(
        keras, "resolve_policy", lambda precision: time.sleep(0.5) or resolve(precision)
    )
    study, outcome = tiny_study(n_trials=20, max_epochs=1, timeout=0.2)
    assert outcome.n_complete == 1
    # The unstarted rest of the budget stays in the pool, for a resume or another worker.
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(study.trials) == 20 and len(waiting) == 19 and outcome.n_waiting == 19


def test_mixed_precision_trial_keeps_a_float32_head_and_its_accuracy(tiny_study, tracker):
    """bfloat16 builds the trial's model in mixed precision, probabilities still float32, and
    the same seeded trial reaches about the accuracy it reaches in float32."""
    values = {}
    for precision in ("float32", "bfloat16"):
        study, outcome = tiny_study(name=precision, enqueue=[GOOD_MLP], precision=precision)
        trial = study.trials[0]
        assert outcome.n_complete == 1
        assert trial.user_attrs["dtype_policy"] == {"float32": "float32"}.get(
            precision, "mixed_bfloat16"
        )
        values[precision] = trial.value
        (run,) = _runs(tracker, precision, "trial")
        model = mlflow.keras.load_model(run.data.tags["fmsearch.model_uri"])
        head = model.get_layer("probs")
        assert head.compute_dtype == "float32"
        hidden = [layer for layer in model.layers if layer.weights and layer is not head]
        expected = "bfloat16" if precision == "bfloat16" else "float32"
        assert {layer.compute_dtype for layer in hidden} == {expected}
    # 300 validation images, 2 epochs: a seeded trial in bfloat16 lands near its float32 twin.
    assert values["bfloat16"] == pytest.approx(values["float32"], abs=0.05)


def test_a_hard_timeout_ends_the_running_trial_with_its_best_epoch(tiny_study, tracker):
    study, outcome = tiny_study(
        enqueue=[GOOD_MLP], max_epochs=50, timeout=1.0, hard_timeout=True, patience=None
    )
    (trial,) = study.trials
    assert outcome.n_complete == 1 and trial.user_attrs["out_of_time"] is True
    epochs = len(trial.intermediate_values)
    assert 1 <= epochs < 50
    assert trial.value == max(trial.intermediate_values.values())
    (run,) = _runs(tracker, "tiny", "trial")
    assert len(tracker.metric_histories(run.info.run_id, ("train_loss",))["train_loss"]) == epochs


def _doubled(split: Split) -> Split:
    return Split(
        np.concatenate([split.x_train] * 2),
        np.concatenate([split.y_train] * 2),
        split.x_val,
        split.y_val,
    )


def _strict(storage_url: str) -> optuna.Study:
    """The tiny study again, with a pruner that stops any reporting trial after one epoch."""
    return create_or_load_study(
        storage=open_storage(storage_url),
        study_name="tiny",
        arch="mlp",
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.ThresholdPruner(lower=1.01),
    )


def test_a_refit_trains_on_all_images_for_its_own_epochs_unpruned(
    tiny_study, tracker, small_split, storage_url
):
    study, _ = tiny_study(enqueue=[GOOD_MLP, BAD_MLP], max_epochs=1)
    refit = refit_candidate(study, epochs=3)
    assert refit.of == max(study.trials, key=lambda t: t.value).number
    assert refit.params == study.trials[refit.of].params
    add_budget(study, 2)  # trials a time budget left in the pool: the refit takes the first
    doubled = _doubled(small_split)
    strict = _strict(storage_url)
    run_worker(study=strict, arch="mlp", split=small_split, refit_split=doubled, refit=refit,
               tracker=tracker, max_epochs=1, seed=0)  # fmt: skip
    assert [t.state for t in strict.trials[2:]] == [TrialState.COMPLETE, TrialState.WAITING]
    trial = strict.trials[2]
    assert trial.user_attrs["refit_of"] == refit.of and trial.params == refit.params
    assert trial.user_attrs["epochs"] == 3
    assert [t.user_attrs["train_images"] for t in strict.trials[:3]] == [600, 600, 1200]
    assert isinstance(strict.sampler, optuna.samplers.RandomSampler)  # restored
    run = tracker._client.get_run(trial.user_attrs[RUN_ID_ATTR])
    assert run.info.run_name == f"trial-2-refit-of-{refit.of}"
    assert run.data.tags["fmsearch.refit_of"] == str(refit.of)
    assert run.data.metrics["train_images"] == 1200
    history = tracker._client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == [0, 1, 2]
    assert refit_candidate(strict, epochs=3) is None  # refit once, or the best is the refit


def test_a_retried_refit_keeps_its_images_and_epochs_in_any_worker(
    tiny_study, tracker, small_split, storage_url
):
    """A refit whose worker died comes back to the pool as a trial with the refit's attributes;
    whichever worker pops it trains it as the refit it is."""
    tiny_study(enqueue=[GOOD_MLP], max_epochs=1)
    strict = _strict(storage_url)
    strict.enqueue_trial(GOOD_MLP, user_attrs={"refit_of": 0, "refit_epochs": 2})
    run_worker(study=strict, arch="mlp", split=small_split, refit_split=_doubled(small_split),
               tracker=tracker, max_epochs=1, seed=0)  # fmt: skip
    retried = strict.trials[1]
    assert retried.state == TrialState.COMPLETE
    assert (retried.user_attrs["train_images"], retried.user_attrs["epochs"]) == (1200, 2)


def test_a_storage_outage_mid_trial_ends_its_run_and_the_trial_runs_again(
    tracker, small_split, storage_url, monkeypatch
):
    """The database goes away mid-trial (RELIABILITY.md: a PostgreSQL restart; found by the
    scale-out restart test): the worker waits for it, heartbeats fail the lost trial, it runs
    again, and its MLflow run ends FAILED instead of staying RUNNING."""
    import sqlalchemy.exc

    study = create_or_load_study(
        storage=open_storage(storage_url, heartbeat_interval=1),
        study_name="tiny",
        arch="mlp",
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.NopPruner(),
    )
    study.enqueue_trial(GOOD_MLP)
    # The database goes away right after trial 0's MLflow run is created (before Optuna
    # could note the run's id) and comes back once Optuna has failed to record the trial.
    down = []
    start_run = type(tracker).start_trial_run
    attr, tell = (
        optuna.storages.RDBStorage.set_trial_user_attr,
        optuna.storages.RDBStorage.set_trial_state_values,
    )

    def start_then_drop(self, **kwargs):
        run_id = start_run(self, **kwargs)
        if kwargs["trial_number"] == 0:
            down.append("run created")
        return run_id

    def refuse(what, call, *args, **kwargs):
        if down == ["run created"]:
            if what == "tell":
                down.append("tell")
            raise sqlalchemy.exc.OperationalError("UPDATE", {}, ConnectionError("restarting"))
        return call(*args, **kwargs)

    monkeypatch.setattr(type(tracker), "start_trial_run", start_then_drop)
    monkeypatch.setattr(optuna.storages.RDBStorage, "set_trial_user_attr",
                        lambda *a, **k: refuse("attr", attr, *a, **k))  # fmt: skip
    monkeypatch.setattr(optuna.storages.RDBStorage, "set_trial_state_values",
                        lambda *a, **k: refuse("tell", tell, *a, **k))  # fmt: skip
    monkeypatch.setattr(search.engines.outages, "STORAGE_RETRY_SECONDS", 0.1)
    run_worker(study=study, arch="mlp", split=small_split, tracker=tracker, max_epochs=1, seed=0)
    lost, again = study.trials
    assert down == ["run created", "tell"] and lost.state == TrialState.FAIL
    assert again.state == TrialState.COMPLETE and again.system_attrs["failed_trial"] == 0
    runs = {r.data.tags["fmsearch.trial_number"]: r for r in _runs(tracker, "tiny", "trial")}
    assert runs["0"].info.status == "FAILED"
    assert "storage out of reach mid-trial" in runs["0"].data.tags["fmsearch.reason"]
    assert runs["1"].info.status == "FINISHED"


def test_runs_a_tracking_outage_left_running_are_ended_when_the_store_is_back(
    tiny_study, tracker, monkeypatch
):
    """Trial 0's end never reaches the store (every attempt refused); trial 1's create is
    refused after the store made the run, so it is sent again and makes a second run. Neither
    stays RUNNING once the worker ends: trial 0's run ends as its trial did, the spare run of
    trial 1 ends FAILED and names the trial's record."""
    from search.tracking import TrialLog

    monkeypatch.setattr(TrialLog.__init__, "__kwdefaults__",
                        {**TrialLog.__init__.__kwdefaults__, "close_wait": 0.0})  # fmt: skip
    end, start = type(tracker).end_trial_run, type(tracker).start_trial_run
    refused = {"end": 0, "start": 0}

    def end_refused_for_trial_0(self, run_id, **kwargs):
        number = self.run_tags(run_id)["fmsearch.trial_number"]
        if number == "0" and kwargs["state"] == "COMPLETE" and refused["end"] < 3:
            refused["end"] += 1
            raise ConnectionError("tracking server down")
        return end(self, run_id, **kwargs)

    def start_lost_for_trial_1(self, **kwargs):
        run_id = start(self, **kwargs)
        if kwargs["trial_number"] == 1 and not refused["start"]:
            refused["start"] += 1
            raise ConnectionError("response lost")
        return run_id

    monkeypatch.setattr(type(tracker), "end_trial_run", end_refused_for_trial_0)
    monkeypatch.setattr(type(tracker), "start_trial_run", start_lost_for_trial_1)
    study, _ = tiny_study(enqueue=[GOOD_MLP, BAD_MLP], max_epochs=1)
    assert refused == {"end": 3, "start": 1}
    assert "end of run" in study.trials[0].user_attrs["mlflow_unlogged"]
    runs = _runs(tracker, "tiny", "trial")
    assert [r.info.status for r in runs if r.info.status == "RUNNING"] == []
    by_trial = {}
    for run in runs:
        by_trial.setdefault(run.data.tags["fmsearch.trial_number"], []).append(run)
    (first,) = by_trial["0"]
    assert first.info.status == "FINISHED"
    assert "ended once the store was back" in first.data.tags["fmsearch.reason"]
    kept = study.trials[1].user_attrs[RUN_ID_ATTR]
    statuses = {r.info.run_id: r.info.status for r in by_trial["1"]}
    assert len(statuses) == 2 and statuses.pop(kept) == "FINISHED"
    ((spare, status),) = statuses.items()
    assert status == "FAILED"
    assert kept in tracker.run_tags(spare)["fmsearch.reason"]


def test_a_worker_survives_a_trial_failed_under_it(storage_url, caplog):
    """Its trial reaped as stale while it was paused, the worker's tell used to end it."""
    from search.engines.optuna_pool import add_budget, optimize

    storage = open_storage(storage_url)
    study = create_or_load_study(storage=storage, study_name="s", arch="logreg",
                                 sampler=optuna.samplers.RandomSampler(),
                                 pruner=optuna.pruners.NopPruner())  # fmt: skip
    add_budget(study, 2)

    def objective(trial: optuna.Trial) -> float:
        if trial.number == 0:  # what the reaper of another process does meanwhile
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        return 0.5

    assert optimize(study, objective, n_trials=1) is False
    assert "failed as stale while it ran" in caplog.text
    # The worker goes on with the pool.
    assert optimize(study, objective, n_trials=1) is True
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MiB filesystem (tmpfs; mounting needs root, as the multi-host tests do)."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_a_worker_instead_of_looping(small_disk, monkeypatch):
    """On a full disk reads succeed and writes fail: a worker that probed with a read went
    back to fail at once, forever."""
    from search.engines.outages import await_storage

    monkeypatch.setattr(search.engines.outages, "STORAGE_OUTAGE_SECONDS", 1)
    monkeypatch.setattr(search.engines.outages, "STORAGE_RETRY_SECONDS", 0.1)
    url = f"sqlite:///{small_disk}/optuna.db"
    study = create_or_load_study(storage=open_storage(url), study_name="s", arch="logreg",
                                 sampler=optuna.samplers.RandomSampler(),
                                 pruner=optuna.pruners.NopPruner())  # fmt: skip
    filler = small_disk / "filler"
    with filler.open("wb", buffering=0) as f, pytest.raises(OSError):  # until the disk is full
        while True:
            f.write(b"\0" * 4096)
    with pytest.raises(Exception) as full:
        for i in range(200):  # fills what the database had left
            study.set_user_attr(f"pad{i}", "x" * 4096)
    assert "database or disk is full" in str(full.value.__cause__)
    study.get_trials()  # reads still succeed
    with pytest.raises(FmsearchError, match=r"out of reach for 1 s.*database or disk is full"):
        await_storage(study, full.value)
    filler.unlink()  # space again: the worker goes on
    await_storage(study, full.value)
