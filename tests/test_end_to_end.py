"""The product as a user runs it: real `fmsearch` processes on the embedded default stores,
the MLflow UI over them, and the champion served over HTTP by `mlflow models serve`."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import numpy as np
import pytest

from tests.services import BIN, ENV
from tests.services import free_port as _free_port
from tests.services import get as _get
from tests.services import start as _start
from tests.services import wait_for as _wait_for

pytestmark = pytest.mark.slow
# What TensorFlow's C++ start-up and MLflow's warnings look like on a terminal.
NOISE = ("absl", "oneDNN", "cuda", "I0000", "E0000", "WARNING mlflow")


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
    """A directory where a real `fmsearch run` searched mlp on the embedded defaults."""
    cwd = tmp_path_factory.mktemp("user")
    result = subprocess.run(
        [BIN / "fmsearch", "run", "--arch", "mlp", "--trials", "2", "--subset", "400",
         "--val-size", "200", "--max-epochs", "1", "--pruner", "none", "--seed", "1"],
        cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "study mlp: 2 complete, 0 pruned, 0 failed" in result.stdout
    assert "fmsearch-mlp version 1 from trial" in result.stdout
    assert "Traceback" not in result.stderr
    # 800 training images in all: less than measuring them would train, so no estimate.
    assert "estimate:" not in result.stdout + result.stderr
    (cwd / "run.stderr").write_text(result.stderr)
    return cwd


def test_the_terminal_shows_fmsearch_s_own_lines_only(workdir):
    """TensorFlow's C++ start-up lines (absl, oneDNN, CUDA) and MLflow's warnings stay off a
    user's terminal (`-v` shows them)."""
    stderr = (workdir / "run.stderr").read_text()
    for noise in NOISE:
        assert noise not in stderr, stderr
    assert "trial 1 complete" in stderr


@pytest.fixture(scope="module")
def ui(workdir):
    """`fmsearch ui` over the search's stores, answering: its base URL."""
    port = _free_port()
    process = _start([str(BIN / "fmsearch"), "ui", "--port", str(port)], workdir,
                     workdir / "ui.log")  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{base}/health", process)
        yield base
    finally:
        _stop(process)


def test_embedded_defaults_live_under_mlruns(workdir):
    assert (workdir / "mlruns" / "optuna.db").is_file()
    assert (workdir / "mlruns" / "mlflow.db").is_file()
    pngs = list((workdir / "mlruns" / "artifacts" / "mlp").rglob("val_confusion_matrix.png"))
    assert len(pngs) == 2


def test_predict_in_a_real_process(workdir, fashion):
    np.save(workdir / "four.npy", fashion.x_test[:4])
    result = subprocess.run(
        [BIN / "fmsearch", "predict", "--model", "models:/fmsearch-mlp@champion", "four.npy"],
        cwd=workdir, env=ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert len(rows) == 4 and all(0 <= int(r[1]) <= 9 for r in rows)
    for noise in NOISE:  # loading a Keras model starts TensorFlow: its lines stay logged
        assert noise not in result.stderr, result.stderr


def test_ui_shows_the_study(ui):
    base = ui
    _, body = _get(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=mlp")
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


def _browser():
    """Debian's chromium, headless, through its chromedriver (`make test` installs both)."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        if os.environ.get("CI"):
            raise AssertionError("expected chromium and chromedriver (apt install chromium-driver)")
        pytest.skip("chromium or chromedriver missing: apt install chromium-driver")
    options = Options()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1600,1000"):  # fmt: skip
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(driver), options=options)


def test_ui_in_a_real_browser(ui, tmp_path):
    """Chromium finds the study's trial runs and the champion's confusion matrix in the UI."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base = ui
    browser = None
    try:
        _, body = _get(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=mlp")
        experiment = json.loads(body)["experiment"]["experiment_id"]
        _, body = _get(
            f"{base}/api/2.0/mlflow/registered-models/alias?name=fmsearch-mlp&alias=champion"
        )
        promotion = json.loads(body)["model_version"]["run_id"]
        browser = _browser()
        # React re-renders rows while the wait reads them: a stale row is looked up again.
        wait = WebDriverWait(browser, 120, ignored_exceptions=(StaleElementReferenceException,))

        def expanders(b):
            # The header's visibility button renders before the runs' rows do.
            return [
                e for e in b.find_elements(By.XPATH, "//div[@role='row']//button")
                if e.get_attribute("data-testid") != "experiment-view-runs-visibility-column-header"
            ]  # fmt: skip

        browser.get(f"{base}/#/experiments/{experiment}/runs")
        wait.until(lambda b: "mlp" in b.page_source and expanders(b))
        expanders(browser)[0].click()  # the study's parent run opens onto its nested runs
        wait.until(lambda b: "trial-0" in b.page_source and "trial-1" in b.page_source)
        assert "promotion-trial-" in browser.page_source
        browser.save_screenshot(str(tmp_path / "runs.png"))

        artifact = "pictures/confusion_matrix.png"
        browser.get(f"{base}/#/experiments/{experiment}/runs/{promotion}/artifacts/{artifact}")

        def shown(b) -> bool:
            images = b.find_elements(By.TAG_NAME, "img")
            return artifact in b.page_source and any(
                (i.get_attribute("src") or "").startswith("blob:")
                and b.execute_script("return arguments[0].naturalWidth", i) > 400
                for i in images
            )

        wait.until(shown)
        assert browser.save_screenshot(str(tmp_path / "champion_confusion_matrix.png"))
        with open(tmp_path / "champion_confusion_matrix.png", "rb") as handle:
            assert handle.read(4) == b"\x89PNG"
    finally:
        if browser is not None:
            browser.quit()


def test_champion_serves_over_http(workdir, tmp_path, fashion):
    from search.tracking import Tracker

    port = _free_port()
    env = {**ENV, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlruns/mlflow.db"}
    server = _start(
        [str(BIN / "mlflow"), "models", "serve", "-m", "models:/fmsearch-mlp@champion",
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
        local = tracker.load_served_model("models:/fmsearch-mlp@champion").predict(images)
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
