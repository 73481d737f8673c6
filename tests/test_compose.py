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


# The Kubernetes manifests: the same services, rendered here as kustomize would (resources,
# plus the ConfigMap and Secret it generates), then checked against the API's schemas.
KUBERNETES = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30"


def _read_env(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _kubernetes_objects() -> list[dict]:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    objects = [
        doc
        for resource in kustomization["resources"]
        for doc in yaml.safe_load_all((KUBERNETES / resource).read_text())
    ]
    (settings,) = kustomization["configMapGenerator"]
    (secret,) = kustomization["secretGenerator"]
    objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": settings["name"]},
                    "data": _read_env(KUBERNETES / settings["envs"][0])})  # fmt: skip
    objects.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret["name"]},
                    "stringData": _read_env(KUBERNETES / "secret.env.example")})  # fmt: skip
    return objects


def _containers(objects: list[dict]) -> dict[str, dict]:
    return {
        c["name"]: c
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet", "Job")
        for c in o["spec"]["template"]["spec"]["containers"]
    }


def test_kubernetes_manifests_are_valid_against_the_api_schema():
    import kubernetes_validate

    objects = _kubernetes_objects()
    kinds = {"StatefulSet", "Deployment", "Service", "Job", "ConfigMap", "Secret",
             "PersistentVolumeClaim"}  # fmt: skip
    assert {o["kind"] for o in objects} >= kinds
    for o in objects:
        kubernetes_validate.validate(o, KUBERNETES_VERSION, strict=True)
    # Each resource a component patches exists in the base.
    by_kind_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    for component in ("gpu", "external-database"):
        spec = yaml.safe_load(
            (KUBERNETES / "components" / component / "kustomization.yaml").read_text()
        )
        for patch in spec["patches"]:
            target = patch.get("target") or yaml.safe_load(patch["patch"])
            name = target.get("name") or target["metadata"]["name"]
            assert (target["kind"], name) in by_kind_name, (component, target)
    worker = by_kind_name[("Job", "fmsearch-worker")]["spec"]
    assert worker["completionMode"] == "Indexed" and worker["parallelism"] == worker["completions"]


def test_kubernetes_runs_the_commands_compose_runs_without_a_password_in_sight():
    objects = _kubernetes_objects()
    containers = _containers(objects)
    settings = next(o["data"] for o in objects if o["kind"] == "ConfigMap"
                    and o["metadata"]["name"] == "fmsearch-settings")  # fmt: skip
    compose = _compose()["services"]
    # Kubernetes expands $(NAME) from the container's environment; the index is 0 here.
    env = {**settings, "JOB_COMPLETION_INDEX": "0"}

    def expand(match: re.Match) -> str:
        return env[match.group(1)]

    for service, name in {"mlflow": "mlflow", "study": "study", "worker": "worker"}.items():
        argv = [re.sub(r"\$\((\w+)\)", expand, a) for a in containers[name]["command"]]
        compose_argv = shlex.split(_substitute(compose[service]["command"], _env_example()))
        assert argv[:2] == compose_argv[:2]  # the same fmsearch subcommand
        command = main.get_command(None, argv[1])
        context = command.make_context(argv[1], argv[2:], resilient_parsing=False)
        assert context.params
        # The password reaches libpq from the Secret, never a URL or a command line.
        (password,) = [e for e in containers[name]["env"] if e["name"] == "PGPASSWORD"]
        assert password["valueFrom"]["secretKeyRef"]["key"] == "POSTGRES_PASSWORD"
    assert "--workers=0" in containers["study"]["command"]
    text = "".join(p.read_text() for p in KUBERNETES.rglob("*.yaml")) + str(settings)
    assert re.search(r"://[^\s/@]*:[^\s/@]*@", text) is None
    assert "deploy/kubernetes/secret.env" in (ROOT / ".gitignore").read_text().split()
