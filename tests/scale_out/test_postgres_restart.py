"""PostgreSQL restarted under two workers: the study goes on."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from tests.scale_out.common import count, counted, study_of, wait_until
from tests.services import FMSEARCH, postgres_database, restart_postgres, start

pytestmark = pytest.mark.slow


def test_postgres_restart_during_a_study(tmp_path):
    with postgres_database(exclusive=True) as url:
        run = start(
            [*FMSEARCH, "run", "--arch", "mlp", "--trials", "6", "--workers", "2",
             "--heartbeat-interval", "2", "--subset", "3000", "--val-size", "500",
             "--max-epochs", "3", "--pruner", "none", "--seed", "0", "--storage", url,
             "--no-promote"],
            cwd=tmp_path, log=tmp_path / "run.log",
        )  # fmt: skip
        wait_until(lambda: count(url, "mlp", (TrialState.COMPLETE,)),
              seconds=300, what="complete trial", processes=[run])  # fmt: skip
        restart_postgres()
        assert run.wait(timeout=600) == 0, (tmp_path / "run.log").read_text()
        study = study_of(url, "mlp")
        assert len(counted(study)) == 6
        assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
        # At most the trials in flight (one per worker) were lost.
        assert len(study.get_trials(states=(TrialState.COMPLETE,))) >= 4
