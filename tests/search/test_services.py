"""The API behind the commands that look things up or serve: data, spaces, recipes, and the
servers (the MLflow UI started for real and asked for the store's experiments)."""

from __future__ import annotations

import json

import pytest
from optuna.distributions import FloatDistribution

from runners.errors import FmsearchError
from search import api
from spaces import ARCHITECTURES
from tests.services import free_port, get, wait_for


def test_data_is_the_verified_data_set():
    data = api.data()
    assert (len(data.y_train), len(data.y_test)) == (60_000, 10_000)
    assert data.x_train.shape[1:] == (28, 28)


def test_spaces_list_every_architecture_and_what_one_searches():
    assert set(api.spaces()) == set(ARCHITECTURES)
    assert api.spaces()["mlp"] == ARCHITECTURES["mlp"].__doc__.strip().splitlines()[0]
    rate = api.space(arch="mlp")["learning_rate"]
    assert isinstance(rate, FloatDistribution) and rate.log
    with pytest.raises(FmsearchError, match=r"expected one of .*mlp.*, got 'vgg'"):
        api.space(arch="vgg")


def test_recipes_are_the_published_configurations_by_name():
    found = api.recipes()
    assert found["vggbn-bn94"].arch == "vggbn"
    assert all(r.arch in ARCHITECTURES for r in found.values())


def test_a_tracking_server_keeps_its_store_s_password_off_its_command_line(tmp_path):
    url = "postgresql://fmsearch:s3cret@db:5432/mlflow"
    service = api.server(backend_store_uri=url, artifacts_destination=tmp_path.as_uri(),
                         port=5001, allowed_hosts="mlflow")  # fmt: skip
    assert "s3cret" not in " ".join(service.argv) and "s3cret" not in service.describe()
    assert service.env == {"MLFLOW_BACKEND_STORE_URI": url}
    hosts = service.argv[service.argv.index("--allowed-hosts") + 1].split(",")
    assert {"mlflow", "mlflow:*", "localhost:*"} <= set(hosts)
    assert service.url == "http://127.0.0.1:5001"


def test_the_ui_refuses_a_server_or_a_store_that_is_not_there(tmp_path):
    with pytest.raises(FmsearchError, match="is already a tracking server"):
        api.ui(tracking_uri="http://127.0.0.1:5000")
    with pytest.raises(FmsearchError, match=r"no MLflow store at .*none\.db"):
        api.ui(tracking_uri=f"sqlite:///{tmp_path}/none.db")


def test_the_ui_started_from_the_api_serves_the_store(tracker):
    tracker.experiment_id("served-study")
    port = free_port()
    process = api.ui(tracking_uri=tracker.tracking_uri, port=port).start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{url}/health", process)
        status, body = get(f"{url}/ajax-api/2.0/mlflow/experiments/search",
                           data=json.dumps({"max_results": 10}).encode())  # fmt: skip
        assert status == 200
        names = {e["name"] for e in json.loads(body)["experiments"]}
        assert "served-study" in names
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_the_dashboard_says_how_to_install_it_or_serves_the_storage(tmp_path):
    import shutil
    import sys
    from pathlib import Path

    storage = f"sqlite:///{tmp_path}/optuna.db"
    installed = (Path(sys.executable).with_name("optuna-dashboard").exists()
                 or shutil.which("optuna-dashboard"))  # fmt: skip
    if installed:
        assert api.dashboard(storage=storage, port=8081).argv[1:3] == [storage, "--host"]
    else:
        with pytest.raises(FmsearchError, match=r"pip install 'fmsearch\[dashboard\]'"):
            api.dashboard(storage=storage)
