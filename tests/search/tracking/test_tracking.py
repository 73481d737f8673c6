"""The MLflow bridge against a real SQLite tracking store."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest

from runners.data import CLASS_NAMES
from runners.errors import FmsearchError
from runners.metrics import evaluate_predictions
from search.tracking import Tracker


def test_experiment_is_get_or_create(tracker, tmp_path):
    first = tracker.experiment_id("resnet")
    assert tracker.experiment_id("resnet") == first
    location = tracker._client.get_experiment(first).artifact_location
    assert location == (tmp_path / "art" / "resnet").as_uri()


def test_study_run_is_found_again_on_resume(tracker):
    exp = tracker.experiment_id("s")
    parent = tracker.start_study_run(experiment_id=exp, study_name="s", arch="mlp", params={"a": 1})
    tracker.end_run(parent, status="FINISHED")
    again = tracker.start_study_run(experiment_id=exp, study_name="s", arch="mlp", params={"a": 2})
    assert again == parent
    run = tracker._client.get_run(parent)
    assert run.info.status == "RUNNING"
    assert run.data.params == {"a": "1"}


@pytest.mark.parametrize(
    ("state", "status"), [("COMPLETE", "FINISHED"), ("PRUNED", "KILLED"), ("FAIL", "FAILED")]
)
def test_trial_runs_nest_and_end_with_their_state(tracker, state, status):
    exp = tracker.experiment_id("s")
    parent = tracker.start_study_run(experiment_id=exp, study_name="s", arch="mlp", params={})
    run_id = tracker.start_trial_run(
        experiment_id=exp,
        parent_run_id=parent,
        study_name="s",
        arch="mlp",
        trial_number=4,
        params={"lr": 0.1},
    )
    for epoch in range(3):
        tracker.log_epoch(run_id, epoch, {"val_accuracy": 0.5 + epoch / 10})
    tracker.end_trial_run(run_id, state=state, reason="because")
    run = tracker._client.get_run(run_id)
    assert run.info.run_name == "trial-4"
    assert run.info.status == status
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["fmsearch.trial_number"] == "4"
    assert run.data.tags["fmsearch.trial_state"] == state
    assert run.data.tags["fmsearch.reason"] == "because"
    history = tracker._client.get_metric_history(run_id, "val_accuracy")
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, 0.6), (2, 0.7)]


def test_evaluation_artifacts(tracker, tmp_path, rng):
    exp = tracker.experiment_id("s")
    run_id = tracker.start_run(experiment_id=exp, run_name="r", tags={})
    y = rng.integers(0, 10, 500)
    evaluation = evaluate_predictions(
        y, np.where(rng.random(500) < 0.8, y, 0), class_names=CLASS_NAMES
    )
    tracker.log_evaluation(run_id, evaluation, class_names=CLASS_NAMES, split="val")
    files = {a.path for a in tracker._client.list_artifacts(run_id)}
    assert files == {
        "val_confusion_matrix.png",
        "val_confusion_matrix.json",
        "val_classification_report.json",
    }
    mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(tmp_path / "dl"))
    matrix = json.loads((tmp_path / "dl" / "val_confusion_matrix.json").read_text())
    assert matrix["labels"] == list(CLASS_NAMES)
    assert np.array(matrix["matrix"]).sum() == 500
    assert (tmp_path / "dl" / "val_confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((tmp_path / "dl" / "val_classification_report.json").read_text())
    assert set(CLASS_NAMES) <= set(report)
    metrics = tracker._client.get_run(run_id).data.metrics
    assert metrics["val_accuracy"] == pytest.approx(evaluation.accuracy)
    assert "val_f1_t_shirt_top" in metrics


def test_keras_model_round_trips(tracker, small_split):
    from search.kinds import RUNNERS
    from spaces import mlp
    from tests.search.conftest import GOOD_MLP

    model = mlp.build(GOOD_MLP)
    exp = tracker.experiment_id("s")
    run_id = tracker.start_run(experiment_id=exp, run_name="r", tags={})
    uri = RUNNERS["keras"].log_model(tracker, run_id, model)
    assert tracker.run_tags(run_id)["fmsearch.model_uri"] == uri
    loaded = mlflow.keras.load_model(uri)
    x = small_split.x_val[:8]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    info = mlflow.models.get_model_info(uri)
    assert tuple(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, 28, 28, 1)
    requirements = mlflow.pyfunc.get_model_dependencies(uri)
    with open(requirements) as fh:
        assert "keras==" in fh.read()


def test_unreachable_server_fails_fast_and_clearly(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    tracker = Tracker(tracking_uri="http://alice:pw@127.0.0.1:9")
    with pytest.raises(
        FmsearchError, match=r"tracking URI http://alice:\*\*\*@127.0.0.1:9 does not"
    ):
        tracker.check_connection()


def test_the_registry_lock_lets_one_holder_in_at_a_time(tracker):
    import threading
    import time

    inside, most, errors = [0], [0], []
    guard = threading.Lock()

    def promote():
        try:
            with tracker.registry_lock("fmsearch-x", timeout=60, poll=0.05):
                with guard:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                time.sleep(0.2)
                with guard:
                    inside[0] -= 1
        except Exception as exc:  # a failed thread must fail the test, not vanish
            errors.append(exc)

    threads = [threading.Thread(target=promote) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and most[0] == 1
    # Released: no lock model is left in the registry.
    assert [m.name for m in tracker._client.search_registered_models()] == []


def test_a_held_registry_lock_times_out_with_its_holder(tracker):
    held = r"'fmsearch-x\.lock' still held .* after 0\.3 s"
    with (
        tracker.registry_lock("fmsearch-x", timeout=5),
        pytest.raises(FmsearchError, match=held),
        tracker.registry_lock("fmsearch-x", timeout=0.3, poll=0.05),
    ):
        pass
    with tracker.registry_lock("fmsearch-x", timeout=0.3):  # free again
        pass


def _stale_lock(tracker, holder, expires):
    from search.names import LOCK_EXPIRES_TAG, LOCK_HOLDER_TAG

    tracker._client.create_registered_model(
        "fmsearch-x.lock", tags={LOCK_HOLDER_TAG: holder, LOCK_EXPIRES_TAG: f"{expires:.0f}"}
    )


def test_a_registry_lock_whose_holder_died_here_is_broken_at_once(tracker, caplog):
    import socket
    import subprocess
    import time

    dead = subprocess.Popen(["true"])
    dead.wait()
    _stale_lock(tracker, f"{socket.gethostname()}:{dead.pid}:deadbeef", time.time() + 3600)
    with tracker.registry_lock("fmsearch-x", timeout=5, poll=0.05):
        names = {m.name for m in tracker._client.search_registered_models()}
        # Renamed aside while this holder holds the lock, so that no other breaker that read
        # the dead holder can rename this holder's lock to the same name.
        assert names == {"fmsearch-x.lock", "fmsearch-x.lock.broken-deadbeef"}
    assert tracker._client.search_registered_models() == []
    assert "broke registry lock fmsearch-x.lock" in caplog.text


def test_a_registry_lock_held_elsewhere_waits_for_its_lease(tracker):
    import time

    from mlflow.exceptions import MlflowException

    _stale_lock(tracker, "other-host:1:cafe", time.time() + 3600)
    with (
        pytest.raises(FmsearchError, match="still held"),
        tracker.registry_lock("fmsearch-x", timeout=0.3, poll=0.05),
    ):
        pass
    tracker._client.delete_registered_model("fmsearch-x.lock")
    _stale_lock(tracker, "other-host:1:cafe", time.time() - 1)  # its lease ran out
    # A second breaker that read the same dead holder cannot take the new holder's live lock:
    # the name it would rename it to is taken.
    with (
        tracker.registry_lock("fmsearch-x", timeout=5, poll=0.05),
        pytest.raises(MlflowException, match="already exists"),
    ):
        tracker._client.rename_registered_model("fmsearch-x.lock", "fmsearch-x.lock.broken-cafe")
