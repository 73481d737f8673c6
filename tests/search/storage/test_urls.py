from __future__ import annotations

from pathlib import Path

import pytest

from search.storage.urls import default_artifact_root, redact, sqlite_path


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://bob:s3cret@db:5432/optuna", "postgresql://bob:***@db:5432/optuna"),
        ("http://alice:pw@mlflow:5000", "http://alice:***@mlflow:5000"),
        ("mysql+pymysql://root:@127.0.0.1/test", "mysql+pymysql://root:***@127.0.0.1/test"),
        ("postgresql://bob@db/optuna", "postgresql://bob@db/optuna"),
        ("sqlite:///mlruns/optuna.db", "sqlite:///mlruns/optuna.db"),
        # Read as SQLAlchemy reads them: a "/" or a "[" in the password, one in the query.
        ("postgresql://bob:hunter/2@127.0.0.1:1/o", "postgresql://bob:***@127.0.0.1:1/o"),
        ("postgresql://bob:hun[ter2@127.0.0.1:1/o", "postgresql://bob:***@127.0.0.1:1/o"),
        ("postgresql://bob@h/o?password=hunter2&x=1", "postgresql://bob@h/o?password=***&x=1"),
        # A message with a URL in it, as MLflow's own errors quote it.
        (
            "API request to http://bob:hunter2@127.0.0.1:5998/api failed (500); 'http://x:y@h'",
            "API request to http://bob:***@127.0.0.1:5998/api failed (500); 'http://x:***@h'",
        ),
    ],
)
def test_redact_hides_passwords(url, expected):
    assert redact(url) == expected


def test_sqlite_path():
    assert sqlite_path("sqlite:////tmp/x/optuna.db") == Path("/tmp/x/optuna.db")
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("postgresql://db/x") is None


def test_artifacts_sit_beside_the_sqlite_store(tmp_path):
    assert default_artifact_root(f"sqlite:///{tmp_path}/mlflow.db") == tmp_path / "artifacts"
    assert default_artifact_root("http://127.0.0.1:5000") is None
