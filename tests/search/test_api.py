"""The Python API as a notebook uses it: a search, its result objects, the study listed, a
second promotion, the report and predictions, all in this process."""

from __future__ import annotations

import pytest

from runners.errors import FmsearchError
from search import api
from search.names import FINAL_ATTR, REFIT_EPOCHS_ATTR


def test_a_search_from_python_returns_what_the_cli_prints(stores, fashion, tmp_path, capsys):
    """The CLI prints these result objects; the API itself only logs."""
    options = api.SearchOptions(
        arch="mlp", trials=2, subset=300, val_size=100, max_epochs=1, seed=0,
        storage=stores["storage"], tracking_uri=stores["tracking"], quiet=True,
    )  # fmt: skip
    result = api.search(options, study_name="notebook")
    assert result.study_name == "notebook" and result.plan is None
    assert result.study.best_trial.number == result.outcome.best_trial
    assert result.outcome.n_complete == 2 and result.outcome.best_trial is not None
    promotion = result.promotion
    assert promotion.alias == "champion" and promotion.trial_number == result.outcome.best_trial
    assert 0.1 < promotion.test_accuracy <= 1
    assert result.searched.n_complete == 2 and result.refit is None
    assert capsys.readouterr().out == ""

    (study, outcome), *others = api.studies(storage=stores["storage"], study_name="notebook")
    assert not others and study.study_name == "notebook" and outcome.n_complete == 2
    again = api.promote(study_name="notebook", storage=stores["storage"],
                        tracking_uri=stores["tracking"])  # fmt: skip
    assert again.already_registered and again.version == promotion.version

    report = api.report(study_name="notebook", storage=stores["storage"],
                        tracking_uri=stores["tracking"], output=tmp_path / "r.html")  # fmt: skip
    assert report.counts["COMPLETE"] == 2 and (tmp_path / "r.html").stat().st_size > 0
    frame = api.predict(model_uri=f"models:/{promotion.model_name}@champion",
                        images=fashion.x_test[:4], tracking_uri=stores["tracking"])  # fmt: skip
    assert len(frame) == 4 and set(frame["class_index"]) <= set(range(10))


def test_options_are_checked_before_anything_is_created(stores, tmp_path):
    with pytest.raises(TypeError):
        api.SearchOptions(arch="mlp", trails=3)
    with pytest.raises(FmsearchError, match="expected --timeout or --budget-hours"):
        api.search(arch="mlp", timeout=10, budget_hours=1, storage=stores["storage"],
                   tracking_uri=stores["tracking"])  # fmt: skip
    assert not (tmp_path / "optuna.db").exists()


def test_a_planned_search_trains_as_many_finals_as_top_k_allows(stores):
    result = api.search(
        arch="mlp", budget_hours=0.012, subset=900, val_size=300, seed=0, top_k=1,
        promote=False, storage=stores["storage"], tracking_uri=stores["tracking"], quiet=True,
    )  # fmt: skip
    assert result.plan.top_k == 1
    finals = [t for t in result.study.trials if t.user_attrs.get(FINAL_ATTR)]
    assert len(finals) == 1 and finals[0].user_attrs[REFIT_EPOCHS_ATTR] > 1
