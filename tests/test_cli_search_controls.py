"""The CLI's search controls: --fix, --space-file, --enqueue, --objective, the engines,
--budget-hours, promotion limits."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import mlflow
import optuna
import pytest

from search.budget.plan import Plan
from search.names import (
    ARCH_ATTR,
    ENSEMBLE_ATTR,
    FINAL_ATTR,
    KT_TRIAL_ATTR,
    PLAN_ATTR,
    RUNG_ATTR,
)

from .test_cli import _one_line_error, _store_args

TINY = ["--subset", "300", "--val-size", "200", "--max-epochs", "1", "--seed", "0", "-q"]


def _trial_runs(stores, name):
    client = mlflow.MlflowClient(stores["tracking"])
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id])
    return client, [r for r in runs if r.data.tags["fmsearch.role"] == "trial"], runs


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


def test_grid_sampler_runs_every_combination_of_the_space_file_s_choices_once(
    cli, stores, tmp_path
):
    spec = tmp_path / "grid.yaml"
    spec.write_text("batch_size: [64, 128]\noptimizer: [adam, sgd]\nlearning_rate: {high: 0.002}\n")
    args = ["run", "--arch", "mlp", "--sampler", "grid", "--space-file", spec, "--no-promote",
            *_store_args(stores), *TINY, "--pruner", "none", "--patience", 0]  # fmt: skip
    result = cli(*args)
    assert result.exit_code == 0, result.output
    trials = optuna.load_study(study_name="mlp", storage=stores["storage"]).trials
    points = {(t.params["batch_size"], t.params["optimizer"]) for t in trials}
    assert len(trials) == 4 and points == {(64, "adam"), (64, "sgd"), (128, "adam"),
                                           (128, "sgd")}  # fmt: skip
    assert all(t.params["learning_rate"] <= 0.002 for t in trials)  # drawn in its range
    # Exhaustive once: the same grid again runs nothing more.
    again = cli(*args)
    assert again.exit_code == 0, again.output
    assert len(optuna.load_study(study_name="mlp", storage=stores["storage"]).trials) == 4
    wrong = cli(*args, "--trials", 3)
    _one_line_error(wrong, r"--sampler grid runs every point of its grid: expected --trials 4")
    ranges = tmp_path / "ranges.yaml"
    ranges.write_text("learning_rate: {high: 0.002}\n")
    refused = cli("run", "--arch", "mlp", "--sampler", "grid", "--space-file", ranges,
                  *_store_args(stores), *TINY)  # fmt: skip
    _one_line_error(refused, r"--sampler grid: expected a --space-file listing choices")


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--fix", "lr=0.1"], r"--fix: expected one of the space's hyperparameters "
                              r"\(n_units_l0, n_units_l1, use_l2, l2, .*learning_rate.*\), "
                              r"got 'lr'"),
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
         r"--engine keras-tuner: expected one Keras architecture, got --arch knn"),
        (["--engine", "keras-tuner", "--objective", "accuracy,params"],
         r"--engine keras-tuner: expected --objective accuracy .*got --objective accuracy,params"),
        (["--objective", "accuracy,params", "--refit-epochs", "2"],
         r"--refit-epochs: expected --objective accuracy .*got --objective accuracy,params"),
        (["--objective", "accuracy,params", "--arch", "knn"],
         r"--objective accuracy,params: expected a Keras architecture .* got --arch knn"),
        (["--final-on-all-data"],
         r"--final-on-all-data: expected a planned search .*got no --budget-hours"),
        (["--final-on-all-data", "--budget-hours", "1", "--trials", "3"],
         r"--final-on-all-data: expected a planned search .*got a search that is not planned"),
        (["--top-k", "1"], r"--top-k: expected a planned search .*got no --budget-hours"),
        (["--engine", "keras-tuner", "--objective", "macro_f1"],
         r"--engine keras-tuner: expected --objective accuracy .*got --objective macro_f1"),
        (["--enqueue", "nope"], r"--enqueue: expected one of mlp-2hidden, .*, got 'nope'"),
        (["--enqueue", "vggbn-bn94"],
         r"--enqueue vggbn-bn94: expected --arch vggbn \(the recipe's\), got --arch mlp"),
    ],
)  # fmt: skip
def test_bad_search_controls_are_refused_before_any_study(cli, stores, args, pattern):
    arch = [] if "--arch" in args else ["--arch", "mlp"]
    result = cli("run", *arch, *args, *_store_args(stores), *TINY)
    _one_line_error(result, pattern)
    assert optuna.get_all_study_summaries(stores["storage"]) == []


def test_deterministic_without_a_seed_is_refused(cli, stores):
    unseeded = ["--subset", "300", "--val-size", "200", "--max-epochs", "1", "-q"]
    result = cli("run", "--arch", "mlp", "--deterministic", *_store_args(stores), *unseeded)
    _one_line_error(result, r"--deterministic repeats seeded trials: expected --seed N too")
    assert optuna.get_all_study_summaries(stores["storage"]) == []


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("lr: {low: 0.1}\n", r"narrow.yaml: expected one of the space's hyperparameters"),
        ("learning_rate: {low: 0.00001}\n", r"learning_rate: expected a value in \[0.0001"),
        ("optimizer: [adam, lion]\n", r"optimizer: expected one of adam, .*got 'lion'"),
        ("learning_rate: [0.1]\n", r"learning_rate: expected \{low: ..., high: ...\}"),
        ("- learning_rate\n", r"expected a mapping of hyperparameter names, got list"),
        (b"lr: 1\n\xff\n", r"expected UTF-8 YAML, got byte 0xff at offset 6"),
    ],
)
def test_bad_space_files_are_refused(cli, stores, tmp_path, text, pattern):
    spec = tmp_path / "narrow.yaml"
    spec.write_bytes(text if isinstance(text, bytes) else text.encode())
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


def test_a_worst_class_objective_is_what_trials_report_and_promotion_records(cli, stores):
    result = cli("run", "--arch", "mlp", "--trials", 2, "--objective", "worst_class_f1",
                 "--sampler", "random", *_store_args(stores), *TINY)  # fmt: skip
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="mlp", storage=stores["storage"])
    client, trial_runs, runs = _trial_runs(stores, "mlp")
    by_run = {r.info.run_id: r for r in trial_runs}
    for trial in study.trials:
        run = by_run[trial.user_attrs["mlflow_run_id"]]
        worst = [m.value for m in client.get_metric_history(run.info.run_id,
                                                            "val_worst_class_f1")]  # fmt: skip
        assert trial.value == pytest.approx(max(worst))
        assert trial.value < run.data.metrics["val_accuracy"]
    (promotion,) = [r for r in runs if r.data.tags["fmsearch.role"] == "promotion"]
    metrics = promotion.data.metrics
    per_class = [v for k, v in metrics.items() if k.startswith("test_f1_")]
    assert len(per_class) == 10 and metrics["test_worst_class_f1"] == min(per_class)
    assert metrics["test_loss"] > 0


def test_missing_optional_extra_is_a_clear_error(cli, stores, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "xgboost" else real(name, *a)
    )
    result = cli("run", "--arch", "xgboost", *_store_args(stores), *TINY)
    _one_line_error(result, r"--arch xgboost needs xgboost: pip install 'fmsearch\[xgboost\]'")


def test_keras_tuner_engine_tracks_refits_and_promotes_like_optuna(cli, stores, tmp_path):
    result = cli(
        "run", "--arch", "mlp", "--engine", "keras-tuner", "--tuner", "random", "--trials", 2,
        "--refit-epochs", 1, *_store_args(stores), *TINY,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "study mlp-kt-random: 2 complete, 0 pruned, 0 failed" in result.output
    assert "fmsearch-mlp version 1 from trial" in result.output
    study = optuna.load_study(study_name="mlp-kt-random", storage=stores["storage"])
    *searched, refit = study.trials
    assert all(KT_TRIAL_ATTR in t.user_attrs for t in searched)
    assert refit.user_attrs["refit_of"] in (0, 1) and refit.user_attrs["train_images"] == 59_800
    _, runs, all_runs = _trial_runs(stores, "mlp-kt-random")
    (parent,) = [r for r in all_runs if r.data.tags["fmsearch.role"] == "study"]
    assert (parent.data.params["engine"], parent.data.params["tuner"]) == ("keras-tuner", "random")
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
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


def test_refit_trains_the_best_configuration_on_all_images_and_is_promoted(cli, stores):
    args = ["run", "--arch", "mlp", "--refit-epochs", 1, *_store_args(stores), *TINY]
    result = cli(*args, "--trials", 2)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="mlp", storage=stores["storage"])
    *searched, refit = study.trials
    best = max((t for t in searched if t.value is not None), key=lambda t: t.value)
    assert refit.user_attrs["refit_of"] == best.number and refit.params == best.params
    assert [t.user_attrs["train_images"] for t in study.trials] == [300, 300, 59_800]
    assert f"refit trial {refit.number}: val_accuracy {refit.value:.4f}" in result.output
    client, runs, _ = _trial_runs(stores, "mlp")
    (run,) = [r for r in runs if "fmsearch.refit_of" in r.data.tags]
    assert run.info.run_name == f"trial-{refit.number}-refit-of-{best.number}"
    # Trained on 200 times the images, the refit is the most accurate, and the champion.
    assert refit.value > best.value
    champion = client.get_model_version_by_alias("fmsearch-mlp", "champion")
    assert champion.tags["fmsearch.source_trial"] == str(refit.number)
    # A resumed study refits only a new best trial; here the best is the refit.
    again = cli(*args, "--trials", 3)
    assert again.exit_code == 0, again.output
    study = optuna.load_study(study_name="mlp", storage=stores["storage"])
    assert sum("refit_of" in t.user_attrs for t in study.trials) == 1


def test_a_short_search_starts_from_the_published_configurations_without_augmentation(cli, stores):
    from spaces import mlp
    from spaces.common import NO_AUGMENTATION, short_run_start

    result = cli("run", "--arch", "mlp", "--trials", 3, "--no-promote", "--sampler", "random",
                 *_store_args(stores), *TINY)  # fmt: skip
    assert result.exit_code == 0, result.output
    first, second, third = optuna.load_study(study_name="mlp", storage=stores["storage"]).trials
    assert first.params == {**mlp.DEFAULTS, **NO_AUGMENTATION}
    assert first.user_attrs["baseline"] == "published" and "baseline" not in second.user_attrs
    assert second.params == {**short_run_start(mlp), **NO_AUGMENTATION}
    assert second.params["lr_schedule"] == "cosine" and second.params["n_units_l0"] == 512
    assert {k: third.params[k] for k in NO_AUGMENTATION} == NO_AUGMENTATION
    _, _, runs = _trial_runs(stores, "mlp")
    (parent,) = [r for r in runs if r.data.tags["fmsearch.role"] == "study"]
    assert "mix=none" in parent.data.params["fixed"]


def test_arch_auto_searches_the_families_in_one_study_and_reports_each(cli, stores, tmp_path):
    result = cli("run", "--arch", "auto", "--trials", 2, *_store_args(stores), *TINY)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="auto", storage=stores["storage"])
    assert [t.params["arch"] for t in study.trials] == ["mlp", "dnn"]  # their starts
    assert "mlp.n_units_l0" in study.trials[0].params
    assert "fmsearch-auto version 1 from trial" in result.output
    client, _, runs = _trial_runs(stores, "auto")
    (parent,) = [r for r in runs if r.data.tags["fmsearch.role"] == "study"]
    path = client.download_artifacts(parent.info.run_id, "report/summary.json", str(tmp_path))
    families = json.loads(Path(path).read_text())["families"]
    assert sorted(row["family"] for row in families) == ["dnn", "mlp"]
    assert all(row["complete"] == 1 for row in families)


def test_a_budgeted_search_over_several_runs_the_one_it_chose_and_names_its_champion(
    cli, stores, caplog
):
    """--arch A,B --budget-hours: each family measured, one chosen and printed with what each
    promised; then exactly that family's printed plan runs, and the line the command prints
    names the trial it promoted."""
    caplog.set_level(logging.INFO, logger="search")
    result = cli("run", "--arch", "mlp,dnn", "--budget-hours", 0.03, "--subset", 900,
                 "--val-size", 300, "--seed", 0, *_store_args(stores))  # fmt: skip
    assert result.exit_code == 0, result.output
    logged = caplog.text
    assert "--arch mlp,dnn: mlp, alone" in logged and "<- chosen" in logged
    assert "plan for mlp in" in logged
    study = optuna.load_study(study_name="mlp-dnn", storage=stores["storage"])
    assert study.user_attrs[ARCH_ATTR] == "mlp"
    trials = [t for t in study.trials if ENSEMBLE_ATTR not in t.user_attrs]
    assert trials and all("n_units_l0" in t.params and "arch" not in t.params for t in trials)
    plan = Plan.from_json(study.user_attrs[PLAN_ATTR])
    finals = [t for t in trials if t.user_attrs.get(FINAL_ATTR)]
    # The plan's finals, fewer where a loaded machine ran late (the log says which).
    assert 1 <= len(finals) <= plan.top_k
    ladder = [t for t in trials if not t.user_attrs.get(FINAL_ATTR)]
    assert {t.user_attrs[RUNG_ATTR] for t in ladder} <= set(range(len(plan.rungs)))
    promoted = re.search(
        r"fmsearch-mlp-dnn version 1 from trial (\d+) is the champion", result.output
    )
    assert promoted, result.output
    assert f"best trial {promoted.group(1)}: val_accuracy" in result.output
    _, _, runs = _trial_runs(stores, "mlp-dnn")
    (parent,) = [r for r in runs if r.data.tags["fmsearch.role"] == "study"]
    assert parent.data.params["requested_arch"] == "mlp,dnn"
    assert parent.data.params["expected_accuracy"].startswith("mlp 0.")


@pytest.mark.slow
def test_a_deterministic_seeded_run_repeats_its_trials_exactly(tmp_path):
    """One seeded command in two fresh directories (two processes, as a user repeats a run):
    with --deterministic, every trial's parameters and every epoch's validation accuracy
    repeat exactly, random augmentation (CutMix, rotation, shift) included."""
    import subprocess

    from tests.services import ENV, FMSEARCH

    command = [
        *FMSEARCH, "run", "--arch", "cnn", "--trials", "2", "--subset", "300", "--val-size",
        "200", "--max-epochs", "2", "--seed", "7", "--deterministic", "--pruner", "none",
        "--fix", "mix=cutmix", "--fix", "rotation=true", "--fix", "shift=true",
        "--threads", "1", "--no-promote", "-q",
    ]  # fmt: skip
    places = [tmp_path / "first", tmp_path / "again"]
    processes = []
    for place in places:
        place.mkdir()
        processes.append(
            subprocess.Popen(
                command, cwd=place, env=ENV, text=True, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    runs = [
        [
            (t.params, t.intermediate_values)
            for t in optuna.load_study(
                study_name="cnn", storage=f"sqlite:///{place}/mlruns/optuna.db"
            ).trials
        ]
        for place in places
    ]
    assert len(runs[0]) == 2 and all(len(values) == 2 for _, values in runs[0])
    assert runs[0] == runs[1]
