"""The study report: its numbers, its pictures, and the HTML page."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from search.insight.report import build_report, publish_report
from search.names import SETTINGS_ATTR
from search.storage.rdb import create_or_load_study, open_storage

START = dt.datetime(2026, 11, 1, 12, 0)
LR = FloatDistribution(1e-4, 1e-1, log=True)


def _trial(number, state, epochs, *, value=None, worker="host:1", lr=1e-3):
    start = START + dt.timedelta(minutes=number)
    finished = state != TrialState.RUNNING
    return FrozenTrial(
        number=number,
        trial_id=number,
        state=state,
        value=value,
        values=None,
        datetime_start=start,
        datetime_complete=start + dt.timedelta(seconds=30) if finished else None,
        params={"learning_rate": lr},
        distributions={"learning_rate": LR},
        user_attrs={"worker": worker, **({"epochs": epochs} if value is not None else {})},
        system_attrs={},
        intermediate_values={e: 0.5 + 0.05 * e for e in range(epochs)},
    )


@pytest.fixture
def study(storage_url):
    study = create_or_load_study(
        storage=open_storage(storage_url),
        study_name="rep",
        arch="mlp",
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.NopPruner(),
    )
    study.set_user_attr(SETTINGS_ATTR, {"max_epochs": 5})
    for trial in [
        _trial(0, TrialState.COMPLETE, 5, value=0.80, lr=1e-3),
        _trial(1, TrialState.PRUNED, 2, lr=3e-2),
        _trial(2, TrialState.PRUNED, 1, worker="host:2", lr=5e-2),
        _trial(3, TrialState.COMPLETE, 5, value=0.85, worker="host:2", lr=2e-3),
        _trial(4, TrialState.FAIL, 0, lr=9e-2),
    ]:
        study.add_trial(trial)
    return study


def test_report_counts_and_the_epochs_pruning_saved(study):
    report = build_report(study, champion=None)
    assert report.counts == {"COMPLETE": 2, "PRUNED": 2, "FAIL": 1}
    assert report.epochs_saved == (5 - 2) + (5 - 1)
    assert report.epochs_trained == 5 + 2 + 1 + 5
    assert [row["trial"] for row in report.best] == [3, 0]
    assert report.best[0]["val_accuracy"] == 0.85 and report.best[0]["learning_rate"] == 2e-3
    assert set(report.figures) == {
        "optimization_history",
        "param_importances",
        "parallel_coordinate",
        "intermediate_values",
        "timeline_per_worker",
    }
    timeline = report.figures["timeline_per_worker"].axes[0]
    assert [t.get_text() for t in timeline.get_yticklabels()] == ["host:1", "host:2"]
    assert len(timeline.patches) == 5  # one bar per trial


def test_report_page_is_self_contained(study):
    page = build_report(
        study, champion={"model_name": "m", "version": "2", "trial": 3, "test_accuracy": 0.8412}
    ).html()
    assert page.startswith("<!DOCTYPE html>")
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 5
    assert not re.search(r'src="(?!data:)', page)  # nothing fetched from elsewhere
    assert "test accuracy <b>0.8412</b>" in page
    assert "7 epochs saved by pruning" in page


def test_report_with_one_trial_says_what_it_left_out(storage_url):
    study = create_or_load_study(
        storage=open_storage(storage_url),
        study_name="one",
        arch="mlp",
        sampler=optuna.samplers.RandomSampler(),
        pruner=optuna.pruners.NopPruner(),
    )
    study.add_trial(_trial(0, TrialState.COMPLETE, 2, value=0.7))
    report = build_report(study)
    assert report.skipped["param_importances"] == "needs 2 completed trials, got 1"
    assert "param_importances" not in report.figures


def test_published_report_lands_on_the_parent_run(study, tracker, tmp_path):
    experiment = tracker.experiment_id("rep")
    parent = tracker.start_study_run(
        experiment_id=experiment, study_name="rep", arch="mlp", params={}
    )
    publish_report(study=study, tracker=tracker, model_name="none", html_path=tmp_path / "r.html")
    paths = {p.rsplit("/", 1)[-1] for p in tracker.artifact_paths(parent, "report")}
    assert {"report.html", "best_trials.csv", "summary.json", "timeline_per_worker.png"} <= paths
    local = tracker._client.download_artifacts(parent, "report/summary.json", str(tmp_path))
    summary = json.loads(Path(local).read_text())
    assert summary["epochs_saved_by_pruning"] == 7 and summary["champion"] is None
    assert (tmp_path / "r.html").read_text().count("data:image/png") == 5
