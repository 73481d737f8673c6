"""The CLI over the whole catalogue: every architecture end to end, and the search controls
(--fix, --space-file, --enqueue, --objective, promotion limits)."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import optuna
import pytest

from spaces import ARCHITECTURES

from .test_cli import _one_line_error, _store_args

TINY = ["--subset", "300", "--val-size", "200", "--max-epochs", "1", "--seed", "0", "-q"]


def _trial_runs(stores, name):
    client = mlflow.MlflowClient(stores["tracking"])
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id])
    return client, [r for r in runs if r.data.tags["fmsearch.role"] == "trial"], runs


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_runs_a_tracked_trial(cli, stores, arch):
    result = cli(
        "run", "--arch", arch, "--trials", 1, "--enqueue", "--pruner", "none", "--no-promote",
        *_store_args(stores), *TINY,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"study {arch}: 1 complete, 0 pruned, 0 failed" in result.output
    (trial,) = optuna.load_study(study_name=arch, storage=stores["storage"]).trials
    space = ARCHITECTURES[arch]
    assert trial.params == {k: v for k, v in space.DEFAULTS.items() if k in trial.params}
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
    result = cli("run", "--arch", "logreg", "--trials", 2, *_store_args(stores), *TINY)
    assert result.exit_code == 0, result.output
    assert "fmsearch-logreg version 1 from trial" in result.output
    mlflow.set_tracking_uri(stores["tracking"])
    model = mlflow.pyfunc.load_model("models:/fmsearch-logreg@champion")
    frame = model.predict(fashion.x_test[:20])  # raw uint8 (N, 28, 28)
    assert list(frame.columns[:2]) == ["class_index", "class_name"] and len(frame) == 20
    np.testing.assert_allclose(frame.iloc[:, 2:].sum(axis=1), 1.0, rtol=1e-6)
    flat = model.predict(fashion.x_test[:20].reshape(20, 784) / 255.0)
    assert (flat["class_index"] == frame["class_index"]).all()
    version = mlflow.MlflowClient().get_model_version_by_alias("fmsearch-logreg", "champion")
    assert 0.5 < float(version.tags["test_accuracy"]) <= 1.0


def test_fix_pins_what_trials_sample(cli, stores):
    result = cli(
        "run", "--arch", "mlp", "--trials", 2, "--sampler", "random", "--no-promote",
        "--fix", "optimizer=sgd", "--fix", "batch_size=64", "--fix", "flip=true",
        "--fix", "n_units_l0=100", *_store_args(stores), *TINY,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    trials = optuna.load_study(study_name="mlp", storage=stores["storage"]).trials
    for trial in trials:
        assert trial.params["optimizer"] == "sgd" and trial.params["batch_size"] == 64
        assert trial.params["flip"] is True and trial.params["n_units_l0"] == 100
    assert len({t.params["learning_rate"] for t in trials}) == 2  # the rest still varies
    _, _, all_runs = _trial_runs(stores, "mlp")
    (parent,) = [r for r in all_runs if r.data.tags["fmsearch.role"] == "study"]
    assert "optimizer=sgd" in parent.data.params["fixed"]


def test_space_file_narrows_ranges_and_choices(cli, stores, tmp_path):
    spec = tmp_path / "narrow.yaml"
    spec.write_text(
        "learning_rate: {low: 0.001, high: 0.002}\n"
        "optimizer: [adamw]\n"
        "mix: [none, cutmix]\n"
        "n_units_l1: {high: 40}\n"
    )
    result = cli(
        "run", "--arch", "mlp", "--trials", 2, "--sampler", "random", "--no-promote",
        "--space-file", spec, *_store_args(stores), *TINY,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for trial in optuna.load_study(study_name="mlp", storage=stores["storage"]).trials:
        assert 0.001 <= trial.params["learning_rate"] <= 0.002
        assert trial.params["optimizer"] == "adamw"
        assert trial.params["mix"] in ("none", "cutmix")
        assert 32 <= trial.params["n_units_l1"] <= 40
        assert trial.distributions["learning_rate"].high == 0.002


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--fix", "lr=0.1"], r"--fix: expected one of the space's hyperparameters "
                              r"\(n_units_l0, n_units_l1, l2, .*learning_rate.*\), got 'lr'"),
        (["--fix", "learning_rate=1"], r"--fix learning_rate: expected a value in "
                                       r"\[0.0001, 0.01\], got 1.0"),
        (["--fix", "optimizer=lbfgs"], r"--fix optimizer: expected one of adam, adamw, sgd, "
                                       r"rmsprop, got 'lbfgs'"),
        (["--fix", "optimizer"], r"--fix: expected name=value, got 'optimizer'"),
        (["--fix", "n_units_l0=1.5"], r"--fix n_units_l0: expected an integer, got '1.5'"),
        (["--timeout", "60", "--budget-hours", "2"],
         r"expected --timeout or --budget-hours, got both \(--timeout 60, --budget-hours 2\)"),
        (["--engine", "keras-tuner", "--workers", "2"],
         r"--engine keras-tuner: expected --workers 1 .*, got --workers 2"),
        (["--engine", "keras-tuner", "--arch", "knn"],
         r"--engine keras-tuner: expected a Keras architecture, got --arch knn"),
        (["--engine", "keras-tuner", "--objective", "accuracy,params"],
         r"--engine keras-tuner: expected --objective accuracy .*got --objective accuracy,params"),
        (["--objective", "accuracy,params", "--arch", "knn"],
         r"--objective accuracy,params: expected a Keras architecture .* got --arch knn"),
    ],
)  # fmt: skip
def test_bad_search_controls_are_refused_before_any_study(cli, stores, args, pattern):
    arch = [] if "--arch" in args else ["--arch", "mlp"]
    result = cli("run", *arch, *args, *_store_args(stores), *TINY)
    _one_line_error(result, pattern)
    assert optuna.get_all_study_summaries(stores["storage"]) == []


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("lr: {low: 0.1}\n", r"narrow.yaml: expected one of the space's hyperparameters"),
        ("learning_rate: {low: 0.00001}\n", r"learning_rate: expected a value in \[0.0001"),
        ("optimizer: [adam, lion]\n", r"optimizer: expected one of adam, .*got 'lion'"),
        ("learning_rate: [0.1]\n", r"learning_rate: expected \{low: ..., high: ...\}"),
        ("- learning_rate\n", r"expected a mapping of hyperparameter names, got list"),
    ],
)
def test_bad_space_files_are_refused(cli, stores, tmp_path, text, pattern):
    spec = tmp_path / "narrow.yaml"
    spec.write_text(text)
    result = cli("run", "--arch", "mlp", "--space-file", spec, *_store_args(stores), *TINY)
    _one_line_error(result, pattern)


def test_multi_objective_study_logs_a_pareto_front_and_promotes_within_limits(cli, stores):
    result = cli(
        "run", "--arch", "mlp", "--trials", 4, "--objective", "accuracy,params",
        "--sampler", "random", "--no-promote", *_store_args(stores), *TINY,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="mlp", storage=stores["storage"])
    assert len(study.directions) == 2
    complete = [t for t in study.trials if t.values]
    assert all(t.values[1] == t.user_attrs["n_params"] for t in complete)

    client, _, runs = _trial_runs(stores, "mlp")
    (parent,) = [r for r in runs if r.data.tags["fmsearch.role"] == "study"]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto_front.json", "pareto_front.png"} <= artifacts
    front = json.loads(mlflow.artifacts.load_text(f"{parent.info.artifact_uri}/pareto_front.json"))[
        "front"
    ]
    assert sorted(row["trial"] for row in front) == sorted(t.number for t in study.best_trials)

    limit = sorted(t.user_attrs["n_params"] for t in complete)[1]
    expected = max(
        (t for t in complete if t.user_attrs["n_params"] <= limit), key=lambda t: t.values[0]
    )
    promoted = cli("promote", "--study-name", "mlp", "--max-params", limit, *_store_args(stores))
    assert promoted.exit_code == 0, promoted.output
    assert f"from trial {expected.number} is the champion" in promoted.output

    impossible = cli("promote", "--study-name", "mlp", "--max-params", 10, *_store_args(stores))
    _one_line_error(impossible, r"no completed trial of 'mlp' has n_params <= 10; the smallest")

    other = cli("run", "--arch", "mlp", "--trials", 1, *_store_args(stores), *TINY)
    _one_line_error(other, r"study 'mlp' optimises --objective accuracy,params, got accuracy")


def test_missing_optional_extra_is_a_clear_error(cli, stores, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "xgboost" else real(name, *a)
    )
    result = cli("run", "--arch", "xgboost", *_store_args(stores), *TINY)
    _one_line_error(result, r"--arch xgboost needs xgboost: pip install 'fmsearch\[xgboost\]'")


def test_keras_tuner_engine_tracks_and_promotes_like_optuna(cli, stores, tmp_path):
    result = cli(
        "run", "--arch", "mlp", "--engine", "keras-tuner", "--tuner", "random", "--trials", 2,
        *_store_args(stores), *TINY,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "study mlp-kt-random: 2 complete, 0 pruned, 0 failed" in result.output
    assert "fmsearch-mlp version 1 from trial" in result.output
    study = optuna.load_study(study_name="mlp-kt-random", storage=stores["storage"])
    assert all("keras_tuner_trial" in t.user_attrs for t in study.trials)
    _, runs, all_runs = _trial_runs(stores, "mlp-kt-random")
    (parent,) = [r for r in all_runs if r.data.tags["fmsearch.role"] == "study"]
    assert (parent.data.params["engine"], parent.data.params["tuner"]) == ("keras-tuner", "random")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert (tmp_path / "keras-tuner" / "mlp-kt-random" / "oracle.json").exists()


def test_budget_hours_ends_the_running_trial_and_still_promotes(cli, stores):
    # A 2 s budget: the first trial runs out of time in its first epochs, none starts later.
    result = cli(
        "run", "--arch", "mlp", "--trials", 3, "--budget-hours", 2 / 3600, "--patience", 0,
        *_store_args(stores), *TINY, "--max-epochs", 50,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="mlp", storage=stores["storage"])
    (done,) = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done.user_attrs["out_of_time"] is True
    assert len(done.intermediate_values) < 50
    assert "fmsearch-mlp version 1 from trial 0 is the champion" in result.output
    _, _, runs = _trial_runs(stores, "mlp")
    (parent,) = [r for r in runs if r.data.tags["fmsearch.role"] == "study"]
    assert float(parent.data.params["budget_hours"]) == pytest.approx(2 / 3600)
