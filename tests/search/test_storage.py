from __future__ import annotations

import optuna
import pytest

from runners.errors import FmsearchError
from search.storage import create_or_load_study, load_study, open_storage


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
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
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
