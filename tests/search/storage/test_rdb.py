from __future__ import annotations

import optuna
import pytest

from runners.errors import FmsearchError
from search.engines.optuna_pool import add_budget
from search.storage.rdb import PoolEmpty, create_or_load_study, load_study, open_storage


def _study(storage, arch="mlp", name="s"):
    return create_or_load_study(
        storage=storage,
        study_name=name,
        arch=arch,
        sampler=optuna.samplers.RandomSampler(),
        pruner=optuna.pruners.NopPruner(),
    )


def test_sqlite_storage_creates_its_directory(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/deep/dir/optuna.db")
    assert (tmp_path / "deep/dir/optuna.db").is_file()
    assert optuna.get_all_study_summaries(storage) == []


def test_unparsable_url():
    with pytest.raises(FmsearchError, match=r"does not parse: expected a database URL"):
        open_storage("not a url")


def test_unreachable_database_hides_the_password():
    with pytest.raises(
        FmsearchError, match=r"cannot connect to storage postgresql://u:\*\*\*@"
    ) as e:
        open_storage("postgresql://u:hunter2@127.0.0.1:1/optuna")
    assert "hunter2" not in str(e.value)


def test_missing_driver():
    with pytest.raises(
        FmsearchError, match=r"driver for 'mssql\+pymssql' \(module pymssql\) is not installed"
    ):
        open_storage("mssql+pymssql://u@127.0.0.1:1/optuna")


def test_study_resumes_with_its_trials(storage_url):
    storage = open_storage(storage_url)
    study = _study(storage)
    add_budget(study, 2)
    with pytest.raises(PoolEmpty):
        study.optimize(lambda t: t.suggest_float("x", 0, 1))
    again = _study(open_storage(storage_url))
    assert len(again.trials) == 2
    assert again.direction == optuna.study.StudyDirection.MAXIMIZE


def test_study_of_another_arch_is_refused(storage_url):
    storage = open_storage(storage_url)
    _study(storage, arch="mlp")
    with pytest.raises(FmsearchError, match=r"searches --arch mlp, got --arch cnn"):
        _study(storage, arch="cnn")


def test_load_missing_study_lists_what_exists(storage_url):
    storage = open_storage(storage_url)
    _study(storage, name="alpha")
    with pytest.raises(FmsearchError, match=r"no study named 'beta' .* holds: alpha"):
        load_study(storage=storage, study_name="beta")


def _open_at_once(url: str, barrier) -> str:
    barrier.wait()
    try:
        open_storage(url)
    except FmsearchError as exc:
        return str(exc)
    return "ok"


def _open_fresh_database_from_processes(urls) -> list[str]:
    """Four processes open each fresh database at the same moment."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    outcomes = []
    with context.Manager() as manager, context.Pool(4) as pool:
        for url in urls:
            barrier = manager.Barrier(4)
            outcomes += pool.starmap(_open_at_once, [(url, barrier)] * 4)
    return outcomes


def test_workers_creating_a_new_sqlite_schema_at_once(tmp_path):
    # Optuna alone: a duplicate alembic row or "table already exists" in most rounds.
    urls = [f"sqlite:///{tmp_path}/{n}/optuna.db" for n in range(4)]
    assert _open_fresh_database_from_processes(urls) == ["ok"] * 16


@pytest.mark.slow
def test_workers_creating_a_new_postgres_schema_at_once():
    from tests.services import postgres_database

    with postgres_database() as first, postgres_database() as second:
        assert _open_fresh_database_from_processes([first, second]) == ["ok"] * 8


def test_trials_come_only_from_the_pool(storage_url):
    study = _study(open_storage(storage_url))
    with pytest.raises(PoolEmpty):
        study.ask()
    assert add_budget(study, 3) == 3
    assert add_budget(study, 3) == 0  # waiting trials count toward a new budget
    study.ask()
    assert add_budget(study, 3) == 1
    assert len(study.trials) == 4


def test_a_trial_that_never_beat_is_reaped(storage_url):
    """A worker killed between popping a trial and its first heartbeat."""
    import sqlalchemy

    from search.engines.outages import reap_stale_trials

    storage = open_storage(storage_url, heartbeat_interval=1)
    study = _study(storage)
    add_budget(study, 2)
    orphan, fresh = study.ask(), study.ask()  # ask() records no heartbeat
    with storage.engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(
                "UPDATE trials SET datetime_start = datetime(datetime_start, '-1 hour') "
                "WHERE number = :n"
            ),
            {"n": orphan.number},
        )
    reap_stale_trials(study)
    states = {t.number: t.state for t in study.get_trials()}
    assert states[orphan.number] == optuna.trial.TrialState.FAIL
    assert states[fresh.number] == optuna.trial.TrialState.RUNNING  # inside its grace period
    (retry,) = [t for t in study.get_trials() if t.system_attrs.get("failed_trial") == 0]
    assert retry.state == optuna.trial.TrialState.WAITING


def test_a_trial_is_judged_stale_by_its_own_worker_s_heartbeat(storage_url):
    """A coordinator beating every second must not fail a worker's trial that beats every 10 s
    (it did after 6 s: Optuna judges every trial by the looking process's grace)."""
    import sqlalchemy

    from search.engines.outages import reap_stale_trials

    worker = open_storage(storage_url, heartbeat_interval=10)
    study = _study(worker)
    add_budget(study, 2)
    quiet, lost = study.ask(), study.ask()
    for trial in (quiet, lost):
        worker.record_heartbeat(trial._trial_id)

    def beat_ago(trial, seconds: int) -> None:
        with worker.engine.begin() as connection:
            connection.execute(
                sqlalchemy.text(
                    "UPDATE trial_heartbeats SET heartbeat = datetime('now', :ago) "
                    "WHERE trial_id = :id"
                ),
                {"ago": f"-{seconds} seconds", "id": trial._trial_id},
            )

    beat_ago(quiet, 20)  # two of its worker's beats: alive
    beat_ago(lost, 70)  # seven: its worker is gone
    coordinator = load_study(
        storage=open_storage(storage_url, heartbeat_interval=1), study_name="s"
    )
    reap_stale_trials(coordinator)
    states = {t.number: t.state for t in coordinator.get_trials()}
    assert states[quiet.number] == optuna.trial.TrialState.RUNNING
    assert states[lost.number] == optuna.trial.TrialState.FAIL


@pytest.mark.parametrize("n_threads", [6])
def test_each_waiting_trial_is_popped_once_on_sqlite(storage_url, n_threads):
    """Without BEGIN IMMEDIATE, two connections both read a trial as WAITING and both run it."""
    import threading

    study = _study(open_storage(storage_url))
    add_budget(study, 60)
    popped: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        worker_study = optuna.load_study(study_name="s", storage=open_storage(storage_url))
        try:
            while True:
                trial = worker_study.ask()
                popped.append(trial.number)
                worker_study.tell(trial, 1.0)
        except PoolEmpty:
            pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(popped) == list(range(60))


def test_heartbeat_thread_survives_a_failed_write(storage_url, monkeypatch):
    """Optuna's heartbeat thread exits on its first failed write; fmsearch's keeps beating."""
    import time

    from optuna.storages import RDBStorage
    from optuna.storages._heartbeat import HeartbeatThread

    storage = open_storage(storage_url, heartbeat_interval=1)
    study = _study(storage)
    add_budget(study, 1)
    trial = study.ask()
    beats: list[str] = []
    real = RDBStorage.record_heartbeat

    def flaky(self, trial_id):
        beats.append("fail" if not beats else "ok")
        if len(beats) == 1:
            raise optuna.exceptions.StorageInternalError("database is locked")
        real(self, trial_id)

    monkeypatch.setattr(RDBStorage, "record_heartbeat", flaky)
    thread = HeartbeatThread(trial._trial_id, storage)
    thread.start()
    time.sleep(2.5)
    thread.join()
    assert beats[:2] == ["fail", "ok"]
    assert storage._get_stale_trial_ids(study._study_id) == []


def test_outages_are_told_from_bugs():
    from search.storage.rdb import is_outage

    def masked() -> None:
        # Optuna's optimize(): a failed tell() commit, hidden by an error in a finally block.
        try:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit")
        finally:
            raise UnboundLocalError("cannot access local variable 'updated_state'")

    with pytest.raises(UnboundLocalError) as masked_error:
        masked()
    assert is_outage(masked_error.value)
    assert not is_outage(UnboundLocalError("a bug of ours"))
    assert not is_outage(ValueError("bad value"))
