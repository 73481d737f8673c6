"""The product as a user runs it: real `fmsearch` processes on the embedded default stores,
the MLflow UI over them, and the champion served over HTTP by `mlflow models serve`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
ENV = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "TF_CPP_MIN_LOG_LEVEL": "2"}
# `mlflow models serve` starts `uvicorn` from PATH, as in an activated virtual environment.
ENV["PATH"] = f"{BIN}{os.pathsep}{ENV.get('PATH', '')}"
for key in ("MLFLOW_TRACKING_URI", "FMSEARCH_STORAGE", "FMSEARCH_DATA_DIR"):
    ENV.pop(key, None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, *, data: bytes | None = None, timeout: float = 10):
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, response.read()


def _wait_for(url: str, process: subprocess.Popen, *, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args} exited with {process.returncode}")
        try:
            _get(url, timeout=2)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {seconds} s")


def _start(args: list[str], cwd: Path, log: Path, env=ENV) -> subprocess.Popen:
    return subprocess.Popen(
        args, cwd=cwd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A directory where a real `fmsearch run` searched cnn on the embedded defaults."""
    cwd = tmp_path_factory.mktemp("user")
    result = subprocess.run(
        [BIN / "fmsearch", "run", "--arch", "cnn", "--trials", "2", "--subset", "400",
         "--val-size", "200", "--max-epochs", "1", "--pruner", "none", "--seed", "1"],
        cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "study cnn: 2 complete, 0 pruned, 0 failed" in result.stdout
    assert "fmsearch-cnn version 1 from trial" in result.stdout
    assert "Traceback" not in result.stderr
    return cwd


def test_embedded_defaults_live_under_mlruns(workdir):
    assert (workdir / "mlruns" / "optuna.db").is_file()
    assert (workdir / "mlruns" / "mlflow.db").is_file()
    pngs = list((workdir / "mlruns" / "artifacts" / "cnn").rglob("val_confusion_matrix.png"))
    assert len(pngs) == 2


def test_predict_in_a_real_process(workdir, fashion):
    np.save(workdir / "four.npy", fashion.x_test[:4])
    result = subprocess.run(
        [BIN / "fmsearch", "predict", "--model", "models:/fmsearch-cnn@champion", "four.npy"],
        cwd=workdir, env=ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert len(rows) == 4 and all(0 <= int(r[1]) <= 9 for r in rows)


def test_ui_shows_the_study(workdir, tmp_path):
    port = _free_port()
    ui = _start([str(BIN / "fmsearch"), "ui", "--port", str(port)], workdir, tmp_path / "ui.log")
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{base}/health", ui)
        _, body = _get(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=cnn")
        experiment = json.loads(body)["experiment"]
        search = json.dumps({"experiment_ids": [experiment["experiment_id"]]}).encode()
        _, body = _get(f"{base}/api/2.0/mlflow/runs/search", data=search)
        runs = json.loads(body)["runs"]
        roles = sorted(
            tag["value"] for r in runs for tag in r["data"]["tags"] if tag["key"] == "fmsearch.role"
        )
        assert roles == ["promotion", "study", "trial", "trial"]
        trial = next(
            r for r in runs
            if {"key": "fmsearch.role", "value": "trial"} in r["data"]["tags"]
        )  # fmt: skip
        run_id = trial["info"]["run_id"]
        status, png = _get(f"{base}/get-artifact?path=val_confusion_matrix.png&run_uuid={run_id}")
        assert status == 200 and png[:4] == b"\x89PNG"
    finally:
        _stop(ui)


def test_champion_serves_over_http(workdir, tmp_path, fashion):
    from search.tracking import Tracker

    port = _free_port()
    env = {**ENV, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlruns/mlflow.db"}
    server = _start(
        [str(BIN / "mlflow"), "models", "serve", "-m", "models:/fmsearch-cnn@champion",
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        workdir, tmp_path / "serve.log", env=env,
    )  # fmt: skip
    try:
        _wait_for(f"http://127.0.0.1:{port}/ping", server, seconds=180)
        images = fashion.x_test[:5]
        _, body = _get(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": images.tolist()}).encode(),
        )
        served = json.loads(body)["predictions"]
        tracker = Tracker(tracking_uri=env["MLFLOW_TRACKING_URI"])
        local = tracker.load_served_model("models:/fmsearch-cnn@champion").predict(images)
        assert [p["class_index"] for p in served] == local["class_index"].tolist()
        assert served[0]["Ankle boot"] == pytest.approx(local["Ankle boot"][0], rel=1e-5)

        frame = {"dataframe_split": {"columns": list(range(784)),
                                     "data": images.reshape(5, -1).tolist()}}  # fmt: skip
        _, body = _get(f"http://127.0.0.1:{port}/invocations", data=json.dumps(frame).encode())
        assert [p["class_index"] for p in json.loads(body)["predictions"]] == [
            p["class_index"] for p in served
        ]
    finally:
        _stop(server)
