"""fmsearch across hosts, reached by name as docker-compose names them: ``postgres`` (a
PostgreSQL cluster with password authentication), ``mlflow`` (``fmsearch server`` as compose
starts it), ``study`` (the coordinator) and two worker hosts, each a network namespace. Mid-study
one worker host dies (every process SIGKILLed) and the database host's link goes down for 15 s:
the study still ends with the trials asked for, nothing lost or run twice, nothing left running,
one parent run and a champion."""

from __future__ import annotations

import os
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from tests.netns import network, start_postgres
from tests.scale_out.common import counted, damage, study_of, trial_runs, wait_until
from tests.services import ENV, FMSEARCH

pytestmark = pytest.mark.slow

PASSWORD = "n3t/ns@pass:word"
TRIALS = 6
# Short enough that the dead host's trial is failed and run again within the test; each
# trial is judged by its own worker's interval (fmsearch records it on the trial).
HEARTBEAT = ["--heartbeat-interval", "2"]
# Longer than that interval's grace (6 beats, 12 s): worker-2's trial goes stale for real.
CUT_SECONDS = 15


def _wait_for_http(url: str, *, seconds: float, processes) -> None:
    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            return False

    wait_until(answers, seconds=seconds, what=url, processes=processes)


def test_a_study_across_hosts_outlives_a_dead_worker_host_and_a_database_cut_off(tmp_path):
    hosts = ["postgres", "mlflow", "study", "worker-1", "worker-2"]
    root = tmp_path  # each host's working directory and log, kept for a failure's reader
    began = time.monotonic()

    def phase(what: str) -> None:  # when each step was reached, in seconds (phases.log)
        with open(root / "phases.log", "a") as fh:
            fh.write(f"{time.monotonic() - began:6.1f} s  {what}\n")

    # Not under tmp_path: the database server runs as user postgres, who cannot enter it.
    with tempfile.TemporaryDirectory() as tmp, network(hosts) as net:
        os.chmod(tmp, 0o755)
        start_postgres(net, "postgres", Path(tmp) / "pg", password=PASSWORD)
        # What compose gives every fmsearch service: URLs by host name, the password only in
        # libpq's environment variable.
        env = {
            **ENV,
            "PGPASSWORD": PASSWORD,
            "FMSEARCH_STORAGE": "postgresql+psycopg://postgres@postgres:5432/optuna",
            "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        }
        for host in hosts[1:]:
            (root / host).mkdir()

        def start(host: str, args: list[str]):
            return net.start(host, [*FMSEARCH, *args], log=root / host / "log",
                             cwd=root / host, env=env)  # fmt: skip

        server = start("mlflow", [
            "server", "--host", "0.0.0.0", "--port", "5000", "--workers", "1",
            "--allowed-hosts", "mlflow",
            "--backend-store-uri", "postgresql+psycopg://postgres@postgres:5432/mlflow",
            "--artifacts-destination", str(root / "mlflow" / "artifacts"),
        ])  # fmt: skip
        _wait_for_http(f"http://{net.address['mlflow']}:5000/health", seconds=300,
                       processes=[server])  # fmt: skip
        phase("database and tracking server up")
        coordinator = start("study", [
            "run", "--arch", "mlp", "--study-name", "multi", "--trials", str(TRIALS),
            "--workers", "0", "--subset", "2000", "--val-size", "500", "--max-epochs", "3",
            "--pruner", "none", "--seed", "0", *HEARTBEAT,
        ])  # fmt: skip
        worker = ["worker", "--study-name", "multi", "--wait", "300", "--threads", "1", *HEARTBEAT]
        workers = {host: start(host, worker) for host in ("worker-1", "worker-2")}
        # Read from here by address: this process is on the bridge, not in a namespace.
        storage = (
            f"postgresql+psycopg://postgres:{urllib.parse.quote(PASSWORD, safe='')}"
            f"@{net.address['postgres']}:5432/optuna"
        )

        def mid_trial_on(host: str) -> int | None:
            pids = set(net.pids(host))
            try:
                running = study_of(storage, "multi").get_trials(states=(TrialState.RUNNING,))
            except KeyError:  # the coordinator has not created the study yet
                return None
            for t in running:
                pid = int(t.user_attrs.get("worker", ":0").rsplit(":", 1)[1])
                if pid in pids and t.intermediate_values:
                    return t.number
            return None

        wait_until(lambda: mid_trial_on("worker-1") is not None, seconds=600,
                   what="a trial mid-way on worker-1", processes=[coordinator])  # fmt: skip
        phase("worker-1 mid-trial")
        killed = mid_trial_on("worker-1")
        assert net.kill("worker-1") >= 1  # the host dies: every process on it
        assert workers["worker-1"].wait(timeout=60) != 0
        # Then the database host is cut off while worker-2 trains.
        wait_until(lambda: mid_trial_on("worker-2") is not None, seconds=300,
                   what="a trial mid-way on worker-2", processes=[coordinator])  # fmt: skip
        phase("worker-2 mid-trial: database cut off")
        net.link("postgres", up=False)
        time.sleep(CUT_SECONDS)
        net.link("postgres", up=True)
        phase("database back")
        assert coordinator.wait(timeout=900) == 0, (root / "study" / "log").read_text()
        phase("study promoted its champion")
        assert workers["worker-2"].wait(timeout=120) == 0, (root / "worker-2" / "log").read_text()

        study = study_of(storage, "multi")
        assert len(counted(study)) == TRIALS
        assert study.trials[killed].state == TrialState.FAIL
        assert [t for t in study.trials if t.system_attrs.get("failed_trial") == killed]
        client = MlflowClient(f"http://{net.address['mlflow']}:5000")
        assert damage(study, client, asked=TRIALS) == {"lost": 0, "duplicated": 0, "running": 0}
        experiment = client.get_experiment_by_name("multi")
        parents = client.search_runs(
            [experiment.experiment_id], filter_string="tags.`fmsearch.role` = 'study'"
        )
        assert len(parents) == 1
        runs = trial_runs(client, "multi")
        assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}
        champion = client.get_model_version_by_alias("fmsearch-mlp", "champion")
        assert float(champion.tags["test_accuracy"]) > 0.3
        logs = "".join((root / h / "log").read_text(errors="replace") for h in hosts[1:])
        assert PASSWORD not in logs
        # 36,000 training images in all: measured and estimated before the first trial.
        assert "estimate: 6 trials of up to 3 epochs on 2,000 images take up to" in logs
