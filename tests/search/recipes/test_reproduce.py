"""``fmsearch reproduce`` and ``--enqueue RECIPE``: a source recipe trained exactly as
published, and registered under its own name."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import optuna

from spaces.recipes import recipe
from tests.test_cli import _store_args

TINY = ["--subset", "300", "--val-size", "200", "--seed", "0", "-q"]


def test_reproduce_trains_the_recipe_and_sets_published_beside_obtained(cli, stores):
    result = cli("reproduce", "tinyvgg-25ep", "--epochs", 2, "--study-name", "repro",
                 *_store_args(stores), *TINY)  # fmt: skip
    assert result.exit_code == 0, result.output
    out = result.output
    assert "recipe tinyvgg-25ep (tinyvgg, source: tinyvgg), study repro:" in out
    assert "test accuracy     90.02%" in out and "test loss          0.372" in out
    assert "epochs trained: 2 of 2;" in out and "time-boxed" not in out

    (trial,) = optuna.load_study(study_name="repro", storage=stores["storage"]).trials
    assert trial.params == dict(recipe("tinyvgg-25ep").params)  # exactly, augmentation too
    client = mlflow.MlflowClient(stores["tracking"])
    version = client.get_model_version_by_alias("fmsearch-tinyvgg-25ep", "champion")
    assert client.search_registered_models(filter_string="name = 'fmsearch-tinyvgg'") == []
    parent = client.get_run(version.tags["promotion_run_id"]).data.tags["mlflow.parentRunId"]
    assert client.get_run(parent).data.tags["fmsearch.recipe"] == "tinyvgg-25ep"
    record = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=parent, artifact_path="reproduction.json", tracking_uri=stores["tracking"]
    )).read_text())  # fmt: skip
    assert record["published_accuracy"] == 0.9002 and record["epochs"] == 2
    assert abs(record["test_accuracy"] - float(version.tags["test_accuracy"])) < 1e-6
    assert record["test_loss"] > 0 and record["time_boxed"] is False
    again = cli("reproduce", "tinyvgg-25ep", "--study-name", "repro", *_store_args(stores), *TINY)
    assert again.exit_code != 0 and "expected a new study" in again.output


def test_enqueue_recipe_starts_the_study_from_it_exactly(cli, stores):
    """A short search switches augmentation off, but not a recipe's."""
    result = cli("run", "--arch", "vggbn", "--enqueue", "vggbn-bn94", "--trials", 1,
                 "--max-epochs", 1, "--fix", "width=0.25", "--no-promote",
                 *_store_args(stores), *TINY)  # fmt: skip
    assert result.exit_code == 0, result.output
    (trial,) = optuna.load_study(study_name="vggbn", storage=stores["storage"]).trials
    assert trial.params == {**recipe("vggbn-bn94").params, "width": 0.25}
    assert trial.params["shear"] and trial.params["rotation"]
    assert trial.user_attrs["baseline"] == "vggbn-bn94"  # judged beside the champion
