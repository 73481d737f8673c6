"""What the scale-out tests share: reading a study that worker processes are writing, and
waiting on it. The faults of RELIABILITY.md are injected for real in this package (SIGKILL, a
database restart, a tracking server that goes away), one module per test so that pytest-xdist
spreads them over its workers."""

from __future__ import annotations

import contextlib
import functools
import time
from pathlib import Path

import optuna
from mlflow import MlflowClient
from optuna.trial import TrialState

from search.storage.rdb import open_storage

TINY = ["--subset", "300", "--val-size", "200", "--max-epochs", "2", "--seed", "0"]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@functools.cache
def storage_of(url: str):
    # One storage (one connection pool) per database: a new one per poll would exhaust
    # PostgreSQL's connection slots. fmsearch's, because polling a database that a worker is
    # creating races Optuna's schema creation.
    return open_storage(url)


def study_of(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage_of(url))


def counted(study: optuna.Study) -> list:
    """Finished trials, a re-run trial counted once (as its re-run)."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    return [t for t in trials if t.state in FINISHED and t.number not in retried]


def wait_until(condition, *, seconds: float, what: str, processes=()) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        for p in processes:
            if p.poll() is not None:
                raise AssertionError(f"{p.args} exited with {p.returncode} before {what}")
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {seconds} s")


def trial_runs(client: MlflowClient, study_name: str) -> list:
    experiment = client.get_experiment_by_name(study_name)
    return client.search_runs(
        [experiment.experiment_id], filter_string="tags.`fmsearch.role` = 'trial'"
    )


def count(url: str, name: str, states) -> int:
    """Trials of ``states`` in the study, 0 while it does not exist yet."""
    try:
        return len(study_of(url, name).get_trials(deepcopy=False, states=states))
    except KeyError:
        return 0


def has_study(url: str, name: str) -> bool:
    return count(url, name, (TrialState.WAITING,)) > 0


def command_lines() -> list[str]:
    """What `ps` shows any user of this machine: every process's command line."""
    lines = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            lines.append(path.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return lines


def damage(study: optuna.Study, client: MlflowClient, *, asked: int) -> dict[str, int]:
    """What a fault cost a study that was asked for ``asked`` trials, as docs/faults.md's fault
    table counts it (all 0 when fmsearch held up):

    - lost: asked-for trials that never finished (a retry that finished counts for its
      original);
    - duplicated: trials that finished twice, the original and its retry, or that have more
      than one finished MLflow run;
    - running: Optuna trials left WAITING or RUNNING, and MLflow trial runs left RUNNING.
    """
    trials = study.get_trials(deepcopy=False)
    retried_from = [t.system_attrs.get("failed_trial") for t in trials if t.state in FINISHED]
    twice = sum(
        1 for n in retried_from
        if n is not None and study.trials[n].state in (TrialState.COMPLETE, TrialState.PRUNED)
    )  # fmt: skip
    runs = trial_runs(client, study.study_name)
    numbers = [
        r.data.tags.get("fmsearch.trial_number") for r in runs if r.info.status == "FINISHED"
    ]
    twice += len(numbers) - len(set(numbers))
    left = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING)))
    left += sum(1 for r in runs if r.info.status == "RUNNING")
    return {"lost": max(asked - len(counted(study)), 0), "duplicated": twice, "running": left}
