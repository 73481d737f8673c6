"""`fmsearch server` as other hosts reach it: by name, and without its store's password on
any command line."""

from __future__ import annotations

import http.client

import pytest

from tests.scale_out.common import command_lines
from tests.services import FMSEARCH, free_port, postgres_database, start, stop, wait_for

pytestmark = pytest.mark.slow


def _status(port: int, host_header: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/api/2.0/mlflow/experiments/search?max_results=1",
                           headers={"Host": host_header})  # fmt: skip
        return connection.getresponse().status
    finally:
        connection.close()


def test_server_answers_the_names_it_is_given_and_hides_its_store_password(tmp_path):
    port = free_port()
    with postgres_database(password="hunter2-secret") as url:
        process = start(
            [*FMSEARCH, "server", "--port", str(port), "--backend-store-uri", url,
             "--artifacts-destination", (tmp_path / "artifacts").as_uri(), "--workers", "1",
             "--allowed-hosts", "mlflow,tracking-host:5000"],
            cwd=tmp_path, log=tmp_path / "server.log",
        )  # fmt: skip
        try:
            wait_for(f"http://127.0.0.1:{port}/health", process)
            # Workers reach it as mlflow:5000 in docker-compose.yml, as tracking-host in the docs.
            assert _status(port, f"mlflow:{port}") == 200
            assert _status(port, "mlflow") == 200
            assert _status(port, "tracking-host:5000") == 200
            # What MLflow answers without the option still answers; other names do not.
            assert _status(port, f"127.0.0.1:{port}") == 200
            assert _status(port, "10.0.0.5:5000") == 200
            assert _status(port, f"elsewhere:{port}") == 403
            servers = [c for c in command_lines() if f"--port {port}" in c or "uvicorn" in c]
            assert servers and not any("hunter2-secret" in c for c in command_lines())
        finally:
            stop(process)
    assert "hunter2-secret" not in (tmp_path / "server.log").read_text(errors="replace")
