"""Leaderboard, EDA and explanations against a real registry and a real trained model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
from PIL import Image
from sklearn.metrics import precision_recall_fscore_support

from runners.errors import FmsearchError
from search.engines.optuna_pool import run_study
from search.insight.eda import run_eda
from search.insight.explain import explain
from search.insight.leaderboard import build_leaderboard, publish_leaderboard
from search.promotion.promote import promote_winner
from search.storage.rdb import create_or_load_study, open_storage
from search.tracking import Tracker
from tests.search.conftest import GOOD_MLP

NAME = "fmsearch-mlp"
TEST = slice(0, 2000)  # a slice of the real test set keeps these tests quick


@pytest.fixture(scope="module")
def registry(tmp_path_factory, fashion, small_split):
    """One trained, promoted model for the module's tests (training it is the slow part)."""
    folder = tmp_path_factory.mktemp("registry")
    tracker = Tracker(tracking_uri=f"sqlite:///{folder}/mlflow.db", artifact_root=folder / "art")
    study = create_or_load_study(
        storage=open_storage(f"sqlite:///{folder}/optuna.db"),
        study_name="mlp",
        arch="mlp",
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.NopPruner(),
    )
    study.enqueue_trial(GOOD_MLP)
    run_study(study=study, arch="mlp", split=small_split, tracker=tracker, n_trials=1, max_epochs=2)
    promote_winner(
        study=study,
        tracker=tracker,
        test_images=fashion.x_test[TEST],
        test_labels=fashion.y_test[TEST],
        model_name=NAME,
    )
    return tracker


@pytest.fixture
def champion(registry):
    # The registry URI is a process global that other tests' trackers change.
    Tracker(tracking_uri=registry.tracking_uri)
    return f"models:/{NAME}@champion"


def _png(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_leaderboard_recomputes_from_the_registered_model(champion, registry, fashion, tmp_path):
    tracker = registry
    images, labels = fashion.x_test[TEST], fashion.y_test[TEST]
    (entry,) = build_leaderboard(tracker=tracker, test_images=images, test_labels=labels)
    predicted = mlflow.pyfunc.load_model(champion).predict(images)["class_index"].to_numpy()
    assert entry.accuracy == pytest.approx((predicted == labels).mean())
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predicted, average="macro", zero_division=0
    )
    assert (entry.macro_precision, entry.macro_recall, entry.macro_f1) == pytest.approx(
        (precision, recall, f1)
    )
    assert entry.n_params == 128 * 784 + 128 + 64 * 128 + 64 + 10 * 64 + 10
    assert entry.train_seconds > 0 and entry.latency_ms > 0

    run_id = publish_leaderboard(
        entries=[entry], tracker=tracker, csv_path=tmp_path / "lb.csv", n_images=len(labels)
    )
    with open(tmp_path / "lb.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["model_name"] == NAME and float(row["accuracy"]) == pytest.approx(entry.accuracy)
    assert {"test_accuracy.png", "lb.csv"} <= set(tracker.artifact_paths(run_id))
    local = tracker._client.download_artifacts(run_id, "test_accuracy.png", str(tmp_path))
    assert _png(Path(local))[0] > 400


def test_leaderboard_without_a_champion(tracker, fashion):
    with pytest.raises(FmsearchError, match="no registered fmsearch model has a champion"):
        build_leaderboard(tracker=tracker, test_images=fashion.x_test, test_labels=fashion.y_test)
    with pytest.raises(FmsearchError, match="model 'nope' has no champion"):
        build_leaderboard(
            tracker=tracker, test_images=fashion.x_test, test_labels=fashion.y_test,
            model_names=["nope"],
        )  # fmt: skip


def test_explain_one_image_and_the_embedding(champion, registry, fashion, tmp_path):
    tracker = registry
    images, labels = fashion.x_test[TEST], fashion.y_test[TEST]
    result = explain(
        tracker=tracker, model_uri=champion, images=images, labels=labels, index=7,
        output_dir=tmp_path / "out", lime_samples=100, embedding="umap", embedding_images=300,
    )  # fmt: skip
    assert [p.name for p in result.files] == ["explain_7.png", "embedding_umap.png"]
    assert all(_png(p)[0] > 400 for p in result.files)
    frame = mlflow.pyfunc.load_model(champion).predict(images[7:8])
    assert result.predicted_class == frame["class_name"][0]
    assert result.confidence == pytest.approx(frame[result.predicted_class][0])
    logged = tracker._client.download_artifacts(result.run_id, "prediction.json", str(tmp_path))
    assert json.loads(Path(logged).read_text())["true"] == result.true_class
    import importlib.util

    real = importlib.util.find_spec
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(importlib.util, "find_spec", lambda n: None if n == "umap" else real(n))
        with pytest.raises(FmsearchError, match=r"--embedding umap: expected the umap-learn "):
            explain(tracker=tracker, model_uri=champion, images=images, labels=labels, index=7,
                    output_dir=tmp_path, embedding="umap")  # fmt: skip
    with pytest.raises(FmsearchError, match=r"--index must be in 0\.\.1999, got 2000"):
        explain(tracker=tracker, model_uri=champion, images=images, labels=labels, index=2000,
                output_dir=tmp_path)  # fmt: skip


def test_eda_counts_every_split(fashion, small_split, tracker, tmp_path):
    run_id, counts = run_eda(data=fashion, split=small_split, tracker=tracker)
    assert sum(counts["train"].values()) == len(small_split.y_train)
    assert sum(counts["validation"].values()) == len(small_split.y_val)
    assert counts["test"] == dict.fromkeys(counts["test"], 1000)
    paths = set(tracker.artifact_paths(run_id))
    assert paths == {"class_distribution.png", "samples_per_class.png", "class_counts.json"}
    local = tracker._client.download_artifacts(run_id, "samples_per_class.png", str(tmp_path))
    assert _png(Path(local))[1] > 600  # ten rows of samples


def test_occlusion_finds_the_region_the_model_looks_at():
    from runners.explain import occlusion_saliency

    def predict_proba(batch: np.ndarray) -> np.ndarray:
        score = batch[:, :8, :8].mean(axis=(1, 2)) / 255.0  # only the top-left corner matters
        return np.stack([score, 1 - score], axis=1)

    image = np.full((28, 28), 200, dtype=np.uint8)
    saliency = occlusion_saliency(predict_proba, image, target=0)
    assert saliency[:8, :8].mean() > 0.05
    assert np.allclose(saliency[12:, 12:], 0)
