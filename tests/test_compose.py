"""docker-compose.yml parses, keeps secrets in .env, and its services run real fmsearch
commands with options fmsearch accepts (no Docker engine here: the same commands run as
local processes in tests/scale_out/)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from search.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _substitute(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation: ``${NAME}``, ``${NAME:-default}``, ``${NAME:?message}``."""

    def value(match: re.Match) -> str:
        name, kind, word = match.groups()
        if name in env:
            return env[name]
        if kind == "?":
            raise AssertionError(f"compose refuses to start without {name}: {word}")
        return word or ""

    return re.sub(r"\$\{(\w+)(?::([-?])([^}]*))?\}", value, text)


def test_services_and_health_checks():
    services = _compose()["services"]
    assert set(services) == {"postgres", "mlflow", "study", "worker"}
    for name in ("postgres", "mlflow"):
        assert services[name]["healthcheck"]["test"]
    for name in ("study", "worker"):
        assert services[name]["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert "fashion-mnist:/root/.keras/datasets" in services["worker"]["volumes"]
    assert services["mlflow"]["ports"] == ["127.0.0.1:${MLFLOW_PORT:-5000}:5000"]


def test_no_secret_in_the_compose_file():
    text = (ROOT / "docker-compose.yml").read_text()
    assert "change-me" not in text
    assert re.search(r"PASSWORD:\s+[^$\s]", text) is None  # a key: only ${POSTGRES_PASSWORD}
    assert "POSTGRES_PASSWORD" in _env_example()
    # Required: without it compose refuses to start, rather than run with an empty password.
    env = {k: v for k, v in _env_example().items() if k != "POSTGRES_PASSWORD"}
    with pytest.raises(AssertionError, match="without POSTGRES_PASSWORD"):
        _substitute(text, env)
    # No URL carries a password (libpq reads PGPASSWORD), so no command line shows one.
    assert re.search(r"://[^\s/@]*:[^\s/@]*@", text) is None
    services = _compose()["services"]
    assert "POSTGRES_PASSWORD" in services["worker"]["environment"]["PGPASSWORD"]
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_each_service_runs_a_command_fmsearch_accepts():
    env = _env_example()
    services = _compose()["services"]
    expected = {"mlflow": "server", "study": "run", "worker": "worker"}
    for service, subcommand in expected.items():
        argv = shlex.split(_substitute(services[service]["command"], env))
        assert argv[:2] == ["fmsearch", subcommand]
        command = main.get_command(None, subcommand)
        context = command.make_context(subcommand, argv[2:], resilient_parsing=False)
        assert context.params  # parsed: every option exists and every value is valid
    study_args = shlex.split(_substitute(services["study"]["command"], env))
    assert "--workers" in study_args and study_args[study_args.index("--workers") + 1] == "0"


def test_the_tracking_server_answers_the_name_workers_use_and_keeps_its_password_off_ps():
    services = _compose()["services"]
    worker_uri = services["worker"]["environment"]["MLFLOW_TRACKING_URI"]
    assert worker_uri == "http://mlflow:5000"
    argv = shlex.split(_substitute(services["mlflow"]["command"], _env_example()))
    assert argv[argv.index("--allowed-hosts") + 1].split(",")[0] == "mlflow"
    assert "PASSWORD" not in services["mlflow"]["command"]
    assert "POSTGRES_PASSWORD" in services["mlflow"]["environment"]["PGPASSWORD"]
