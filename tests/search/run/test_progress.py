from __future__ import annotations

import io
import logging

import optuna

from search.run.progress import ProgressBar
from tests.search.conftest import GOOD_MLP


def test_bar_shows_best_and_counts(caplog):
    out = io.StringIO()
    bar = ProgressBar(total=4, disable=False, file=out)
    study = optuna.create_study(direction="maximize")

    def objective(trial):
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 1:
            raise optuna.TrialPruned("pruned at epoch 2")
        if trial.number == 2:
            trial.set_user_attr("fail_reason", "training loss became nan in epoch 0")
            raise ValueError("boom")
        return 0.9 if trial.number == 0 else 0.5 + x / 10

    with caplog.at_level(logging.INFO, logger="search.run.progress"):
        study.optimize(objective, n_trials=4, callbacks=[bar], catch=(ValueError,))
    bar.close()
    text = out.getvalue()
    assert "4/4" in text
    assert "best=0.9000" in text and "pruned=1" in text and "failed=1" in text
    messages = [r.getMessage() for r in caplog.records if r.name == "search.run.progress"]
    assert messages[0].startswith("trial 0 complete: val_accuracy 0.9000")
    assert messages[2] == "trial 2 failed: training loss became nan in epoch 0 (best 0.9000)"


def test_bar_shows_the_running_trial_s_epochs_and_stays_out_of_logs(caplog):
    out = io.StringIO()
    bar = ProgressBar(total=2, disable=False, file=out)
    with caplog.at_level(logging.DEBUG, logger="search.run.progress"):
        bar.epoch(3, 1, {"val_accuracy": 0.8125, "train_loss": 0.4})
    assert "trial 3 epoch 2 val 0.8125" in out.getvalue()
    assert not caplog.records
    hidden = io.StringIO()
    quiet = ProgressBar(total=2, disable=True, file=hidden)
    quiet.epoch(0, 0, {"val_accuracy": 0.5})
    quiet.close()
    assert hidden.getvalue() == ""


def test_epochs_reach_the_progress_callback(tiny_study):
    seen = []
    tiny_study(enqueue=[GOOD_MLP], max_epochs=2, on_epoch=lambda *a: seen.append(a))
    assert [(trial, epoch) for trial, epoch, _ in seen] == [(0, 0), (0, 1)]
    assert all("val_accuracy" in metrics for _, _, metrics in seen)
