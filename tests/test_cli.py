"""The command line: every command's help, every bad input, and the end-to-end path."""

from __future__ import annotations

import mlflow
import numpy as np
import optuna
import pytest

from runners.precision import resolve_policy
from spaces import ARCHITECTURES

COMMANDS = ["run", "promote", "ui", "predict", "spaces", "data"]
QUICK = ["--subset", "300", "--val-size", "200", "--max-epochs", "2", "--seed", "0"]
QUICK += ["--pruner", "none", "-q"]


def _store_args(stores):
    return ["--storage", stores["storage"], "--tracking-uri", stores["tracking"]]


def _studies(stores):
    return optuna.get_all_study_summaries(stores["storage"])


def _one_line_error(result, pattern):
    import re

    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("Error: ") and re.search(pattern, lines[-1]), result.output


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help(cli, command):
    result = cli(*([command] if command else []), "--help")
    assert result.exit_code == 0
    assert "Usage: " in result.output


def test_run_s_options_are_the_search_options_by_the_same_names():
    """Each option of a search is declared once: ``fmsearch run`` passes its options on to
    ``api.search`` by name, so the two lists must match (--trials is ``trials``; --enqueue and
    --no-enqueue make ``enqueue``; --verbose is the command's own)."""
    import dataclasses

    from search.api import SearchOptions
    from search.cli.run_command import run

    names = {p.name for p in run.params} - {"n_trials", "no_enqueue", "verbose"}
    assert names | {"trials"} == {f.name for f in dataclasses.fields(SearchOptions)}


def test_unknown_arch_lists_the_valid_ones(cli):
    result = cli("run", "--arch", "vgg")
    assert result.exit_code == 2
    assert "Invalid value for '--arch': expected one of cnn, dnn," in result.output
    assert "got 'vgg'" in result.output
    assert all(name in result.output for name in ARCHITECTURES)


def test_zero_trials(cli):
    result = cli("run", "--arch", "mlp", "--trials", "0")
    assert result.exit_code == 2
    assert "Invalid value for '--trials': 0 is not in the range x>=1" in result.output


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--seed", "-1", "-1 is not in the range 0<=x<=4294967295"),
        ("--timeout", "nan", "expected a finite number, got 'nan'"),
        ("--budget-hours", "nan", "expected a finite number, got 'nan'"),
        ("--budget-hours", "inf", "expected a finite number, got 'inf'"),
        ("--study-name", "s" * 300, "expected at most 128 characters, got 300"),
    ],
)
def test_values_no_search_can_use_are_refused_before_it_starts(cli, option, value, message):
    result = cli("run", "--arch", "mlp", option, value)
    assert result.exit_code == 2
    assert f"Invalid value for '{option}': {message}" in result.output


def test_a_coordinator_without_workers_gives_up_at_its_timeout(cli, stores):
    from .test_cli_search_controls import TINY

    result = cli("run", "--arch", "logreg", "--trials", 2, "--workers", 0, "--timeout", 2,
                 *_store_args(stores), *TINY)  # fmt: skip
    _one_line_error(result, r"study 'logreg' has no completed trial to promote")
    study = optuna.load_study(study_name="logreg", storage=stores["storage"])
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.WAITING] * 2


def test_storage_that_does_not_parse(cli, stores):
    result = cli("run", "--arch", "mlp", "--storage", "nope", "--tracking-uri", stores["tracking"])
    _one_line_error(result, r"--storage 'nope' does not parse: expected a database URL")


def test_storage_that_cannot_connect_hides_the_password(cli, stores):
    result = cli(
        "run", "--arch", "mlp", "--storage", "postgresql://bob:hunter2@127.0.0.1:1/optuna",
        "--tracking-uri", stores["tracking"],
    )  # fmt: skip
    _one_line_error(result, r"cannot connect to storage postgresql://bob:\*\*\*@127.0.0.1:1")
    assert "hunter2" not in result.output


def test_a_tracking_server_that_fails_never_shows_the_password(cli, stores, monkeypatch):
    import http.server
    import threading

    class Failing(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(500, "boom")

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    try:
        url = f"http://bob:hunter2@127.0.0.1:{server.server_port}"
        result = cli("run", "--arch", "mlp", "--storage", stores["storage"], "--tracking-uri", url)
    finally:
        server.shutdown()
    # MLflow's own message quotes the URL it was given: the whole line is redacted.
    _one_line_error(result, rf"tracking URI http://bob:\*\*\*@127.0.0.1:{server.server_port} "
                            r"does not answer: .*500")  # fmt: skip
    assert "hunter2" not in result.output


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://bob:hunter/2@127.0.0.1:1/o",
        "postgresql://bob@127.0.0.1:1/o?password=hunter2",
        "postgresql://bob:hun[ter2@127.0.0.1:1/o",
    ],
)
def test_studies_never_shows_the_password_however_the_url_is_written(cli, url):
    result = cli("studies", "--storage", url)
    _one_line_error(result, r"cannot connect to storage postgresql://bob")
    assert "hunter" not in result.output and "ter2" not in result.output


def test_tracking_uri_that_does_not_answer(cli, stores, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    result = cli("run", "--arch", "mlp", "--storage", stores["storage"], "--tracking-uri",
                 "http://127.0.0.1:9")  # fmt: skip
    _one_line_error(result, r"tracking URI http://127.0.0.1:9 does not answer: .*refused")
    assert _studies(stores) == []


def test_impossible_subset_creates_no_study(cli, stores):
    result = cli("run", "--arch", "mlp", *_store_args(stores), "--subset", "999999")
    _one_line_error(result, r"--subset must be between 1 and 50000, got 999999")
    assert _studies(stores) == []


def test_missing_data_dir(cli, stores, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("run", "--arch", "mlp", *_store_args(stores), "--data-dir", empty)
    _one_line_error(result, r"--data-dir .*empty lacks train-images-idx3-ubyte.gz")
    assert _studies(stores) == []


def test_data_dir_from_the_environment(cli, tmp_path):
    result = cli("data", env={"FMSEARCH_DATA_DIR": str(tmp_path)})
    _one_line_error(result, rf"--data-dir {tmp_path} lacks")


def test_promote_unknown_study(cli, stores):
    cli("run", "--arch", "mlp", *_store_args(stores), "--subset", "999999")  # creates the schema
    result = cli("promote", "--study-name", "ghost", *_store_args(stores))
    _one_line_error(result, r"no study named 'ghost' in this storage")


def test_spaces(cli):
    listing = cli("spaces")
    assert all(name in listing.output for name in ARCHITECTURES)
    resnet = cli("spaces", "resnet")
    assert "n_blocks         int from 1 to 3" in resnet.output
    assert "learning_rate    float from 0.0001 to 0.01, log scale" in resnet.output


def test_data(cli):
    result = cli("data")
    assert result.exit_code == 0
    assert "60000 training and 10000 test images, checksums OK" in result.output


def test_ui_needs_a_local_store(cli, tmp_path):
    result = cli("ui", "--tracking-uri", f"sqlite:///{tmp_path}/none.db")
    _one_line_error(result, r"no MLflow store at .*none.db: run `fmsearch run` first")
    result = cli("ui", "--tracking-uri", "http://127.0.0.1:5000")
    _one_line_error(result, r"is already a tracking server")


def test_run_tracks_promotes_resumes_and_predicts(cli, stores, tmp_path, fashion):
    result = cli("run", "--arch", "mlp", "--trials", 3, *_store_args(stores), *QUICK)
    assert result.exit_code == 0, result.output
    assert "study mlp: 3 complete, 0 pruned, 0 failed; best trial" in result.output
    assert "fmsearch-mlp version 1 from trial " in result.output
    assert "is the champion (first champion: test accuracy 0." in result.output

    study = optuna.load_study(study_name="mlp", storage=stores["storage"])
    client = mlflow.MlflowClient(stores["tracking"])
    experiment = client.get_experiment_by_name("mlp")
    assert experiment.artifact_location == (tmp_path / "artifacts" / "mlp").as_uri()
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags["fmsearch.role"] == "study"]
    children = [r for r in runs if r.data.tags["fmsearch.role"] == "trial"]
    assert parent.data.params["subset"] == "300" and parent.data.params["seed"] == "0"
    assert parent.data.params["precision"] == "auto"
    assert {t.user_attrs["dtype_policy"] for t in study.trials} == {resolve_policy("auto")}
    assert len(children) == 3
    for trial in study.trials:
        (run,) = [r for r in children if r.info.run_id == trial.user_attrs["mlflow_run_id"]]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.run_name == f"trial-{trial.number}"
        assert run.data.params == {k: str(v) for k, v in trial.params.items()}
        assert run.data.metrics["best_val_accuracy"] == pytest.approx(trial.value)
        steps = client.get_metric_history(run.info.run_id, "train_loss")
        assert [m.step for m in steps] == [0, 1]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"val_confusion_matrix.png", "val_confusion_matrix.json"} <= artifacts
        assert run.data.tags["fmsearch.model_uri"].startswith("models:/m-")

    champion = client.get_model_version_by_alias("fmsearch-mlp", "champion")
    assert champion.tags["fmsearch.source_trial"] == str(study.best_trial.number)
    model = mlflow.pyfunc.load_model("models:/fmsearch-mlp@champion")
    frame = model.predict(fashion.x_test[:50])
    assert frame["class_index"].between(0, 9).all() and len(frame) == 50

    again = cli("run", "--arch", "mlp", "--trials", 1, *_store_args(stores), *QUICK)
    assert again.exit_code == 0, again.output
    assert "study mlp: 4 complete" in again.output
    runs = client.search_runs([experiment.experiment_id])
    assert sum(r.data.tags["fmsearch.role"] == "study" for r in runs) == 1
    assert sum(r.data.tags["fmsearch.role"] == "trial" for r in runs) == 4
    resumed = optuna.load_study(study_name="mlp", storage=stores["storage"])
    # The same --seed on resume must not replay the first trial's suggestions.
    assert resumed.trials[3].params != resumed.trials[0].params

    promoted = cli("promote", "--study-name", "mlp", *_store_args(stores), "-q")
    assert promoted.exit_code == 0
    assert "is the champion" in promoted.output or "is the challenger" in promoted.output

    # The run refreshed the study report on the parent run; `report` redraws it on demand.
    reported = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/summary.json", "report/best_trials.csv"} <= reported
    page = tmp_path / "mlp.html"
    result = cli("report", "--study-name", "mlp", "--output", page, *_store_args(stores))
    assert result.exit_code == 0, result.output
    assert "study mlp: 4 complete; 0 epochs saved by pruning" in result.output
    champion = client.get_model_version_by_alias("fmsearch-mlp", "champion")  # may be new
    assert f"test accuracy <b>{float(champion.tags['test_accuracy']):.4f}</b>" in page.read_text()

    board = cli("leaderboard", "--tracking-uri", stores["tracking"], "--csv", tmp_path / "lb.csv")
    assert board.exit_code == 0, board.output
    header, row = board.output.splitlines()[:2]
    assert header.split()[:3] == ["model", "version", "accuracy"]
    assert row.split()[0] == "fmsearch-mlp"
    current = client.get_model_version_by_alias("fmsearch-mlp", "champion")
    assert float(row.split()[2]) == pytest.approx(float(current.tags["test_accuracy"]), abs=1e-4)

    # `predict` on the champion: .npy batches and image files, to the screen and a CSV.
    from PIL import Image

    np.save(tmp_path / "batch.npy", fashion.x_test[:4])
    Image.fromarray(fashion.x_test[4]).save(tmp_path / "img.png")
    out = tmp_path / "predictions.csv"
    result = cli(
        "predict", "--model", "models:/fmsearch-mlp@champion", "--tracking-uri",
        stores["tracking"], tmp_path / "batch.npy", tmp_path / "img.png", "--output", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "\t" in line]
    assert len(lines) == 5 and lines[0].split("\t")[0].endswith("batch.npy[0]")
    import pandas as pd

    frame = pd.read_csv(out)
    assert len(frame) == 5 and "Ankle boot" in frame.columns

    np.save(tmp_path / "wrong.npy", np.zeros((2, 32, 32), dtype=np.uint8))
    bad = cli("predict", "--model", "models:/fmsearch-mlp@champion", "--tracking-uri",
              stores["tracking"], tmp_path / "wrong.npy")  # fmt: skip
    _one_line_error(bad, r"expected images shaped \(N, 28, 28\), .*got \(2, 32, 32\)")
    missing = cli("predict", "--model", "models:/nope@champion", "--tracking-uri",
                  stores["tracking"], tmp_path / "batch.npy")  # fmt: skip
    _one_line_error(missing, r"cannot load model models:/nope@champion")


def test_cli_reads_stores_from_the_environment(cli, stores):
    env = {"FMSEARCH_STORAGE": stores["storage"], "MLFLOW_TRACKING_URI": stores["tracking"]}
    result = cli("run", "--arch", "mlp", "--trials", 1, "--no-promote", *QUICK, env=env)
    assert result.exit_code == 0, result.output
    assert [s.study_name for s in _studies(stores)] == ["mlp"]
    assert mlflow.MlflowClient(stores["tracking"]).get_experiment_by_name("mlp") is not None


def test_study_name_must_be_a_plain_name(cli, stores):
    result = cli("run", "--arch", "mlp", *_store_args(stores), "--study-name", "it's mine")
    assert result.exit_code == 2
    assert "Invalid value for '--study-name': expected letters, digits" in result.output
    assert _studies(stores) == []


def test_eda(cli, stores):
    result = cli("eda", "--tracking-uri", stores["tracking"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["class", "train", "validation", "test"]
    assert lines[1].split() == ["T-shirt/top", "5000", "1000", "1000"]


def test_lr_find_writes_a_space_file_that_run_accepts(cli, stores, tmp_path):
    from search.trials.choices import describe_space
    from search.trials.overrides import load_space_file
    from spaces import mlp

    space_file = tmp_path / "lr.yaml"
    result = cli("lr-find", "--arch", "mlp", "--steps", 40, "--subset", 2000,
                 "--write-space-file", space_file, "--output-dir", tmp_path,
                 "--tracking-uri", stores["tracking"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "lr_find_mlp.png").read_bytes()[:4] == b"\x89PNG"
    narrowed = load_space_file(space_file, describe_space(mlp))["learning_rate"]
    assert 1e-4 <= narrowed.low < narrowed.high <= 1e-2
    refused = cli("lr-find", "--arch", "forest", "--tracking-uri", stores["tracking"])
    _one_line_error(refused, r"--arch must be a Keras architecture")


@pytest.mark.parametrize("keras", [False, True])
def test_a_search_loads_all_its_modules_before_it_starts(keras):
    """`run` and `worker` import every fmsearch module up front (a long search must not load
    newer files later), and a scikit-learn search still does without TensorFlow."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    code = (
        "import json, sys; from search.api import preload; "
        f"names = preload(keras={keras}); "
        "print(json.dumps([names, sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('search', 'runners', 'tensorflow'))]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    names, loaded = json.loads(out.strip().splitlines()[-1])
    # Every module and subpackage (search.cli) at any depth, by its dotted name.
    files = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
             for d in ("search", "runners") for p in (root / d).rglob("*.py")}  # fmt: skip
    files -= {"search", "runners"}
    tensorflow = {"runners.augment", "runners.lr_find", "runners.throughput", "runners.training"}
    expected = files - {"search.__main__"} - (set() if keras else tensorflow)
    assert {"search.run.orchestrator", "search.engines.optuna_pool"} <= expected
    assert set(names) == expected and expected <= set(loaded)
    assert {"search.cli.search_commands", "search.cli.options"} <= set(loaded)
    assert ("tensorflow" in loaded) is keras


def test_native_start_up_output_is_logged_at_debug_not_printed(capfd, caplog):
    import logging
    import os

    from search.api import start_up_output_logged

    with caplog.at_level(logging.DEBUG, logger="search.run.start"), start_up_output_logged():
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on.\n")
    assert "oneDNN" not in capfd.readouterr().err
    assert "oneDNN custom operations" in caplog.text
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"
