"""The CLI over the whole catalogue: every architecture runs a tracked trial end to end, and a
scikit-learn champion serves the same contract as a Keras one."""

from __future__ import annotations

import mlflow
import numpy as np
import optuna
import pytest

from spaces import ARCHITECTURES
from spaces.common import NO_AUGMENTATION

from .test_cli import _store_args
from .test_cli_search_controls import TINY, _trial_runs

# The transfer model at its smallest input (85x85 images take three times as long here) and
# with its whole backbone frozen: no gradients to trace through ResNet50V2's 190 layers.
CHEAPER = {"resnet50v2": {"image_size": 32, "frozen_fraction": 1.0}}


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_runs_a_tracked_trial(cli, stores, arch):
    fixes = [f"--fix={k}={v}" for k, v in CHEAPER.get(arch, {}).items()]
    result = cli(
        "run", "--arch", arch, "--trials", 1, "--enqueue", "--pruner", "none", "--no-promote",
        *fixes, *_store_args(stores), *TINY,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"study {arch}: 1 complete, 0 pruned, 0 failed" in result.output
    (trial,) = optuna.load_study(study_name=arch, storage=stores["storage"]).trials
    space = ARCHITECTURES[arch]
    # One epoch is a short search: the published configuration, without augmentation.
    expected = {**space.DEFAULTS, **(NO_AUGMENTATION if space.KIND == "keras" else {}),
                **CHEAPER.get(arch, {})}  # fmt: skip
    assert trial.params == {k: v for k, v in expected.items() if k in trial.params}
    client, (run,), _ = _trial_runs(stores, arch)
    assert run.info.status == "FINISHED"
    assert run.data.tags["fmsearch.trial_state"] == "COMPLETE"
    assert run.data.tags["fmsearch.flavor"] == space.KIND
    assert run.data.params == {k: str(v) for k, v in trial.params.items()}
    assert run.data.metrics["best_val_accuracy"] == pytest.approx(trial.value)
    assert run.data.metrics["latency_ms"] > 0
    curve = "train_loss" if space.KIND == "keras" else "train_size"
    assert len(client.get_metric_history(run.info.run_id, curve)) == (
        1 if space.KIND == "keras" else 4
    )
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {
        "val_confusion_matrix.png", "val_confusion_matrix.json", "val_classification_report.json",
    } <= artifacts  # fmt: skip
    model = mlflow.models.get_model_info(run.data.tags["fmsearch.model_uri"])
    assert ("keras" if space.KIND == "keras" else "sklearn") in model.flavors


def test_scikit_learn_champion_serves_the_same_contract(cli, stores, fashion):
    result = cli("run", "--arch", "knn", "--trials", 2, *_store_args(stores), *TINY)
    assert result.exit_code == 0, result.output
    assert "fmsearch-knn version 1 from trial" in result.output
    mlflow.set_tracking_uri(stores["tracking"])
    model = mlflow.pyfunc.load_model("models:/fmsearch-knn@champion")
    frame = model.predict(fashion.x_test[:20])  # raw uint8 (N, 28, 28)
    assert list(frame.columns[:2]) == ["class_index", "class_name"] and len(frame) == 20
    np.testing.assert_allclose(frame.iloc[:, 2:].sum(axis=1), 1.0, rtol=1e-6)
    flat = model.predict(fashion.x_test[:20].reshape(20, 784) / 255.0)
    assert (flat["class_index"] == frame["class_index"]).all()
    version = mlflow.MlflowClient().get_model_version_by_alias("fmsearch-knn", "champion")
    assert 0.5 < float(version.tags["test_accuracy"]) <= 1.0
