"""Promotion against a real registry: test-set judging, champion and challenger."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import optuna
import pytest

from runners.errors import FmsearchError
from search.promotion.aliases import CHALLENGER, CHAMPION
from search.promotion.promote import default_model_name, promote_winner
from tests.search.conftest import BAD_MLP, GOOD_MLP

NAME = "fmsearch-test"


def _promote(study, tracker, fashion):
    return promote_winner(
        study=study,
        tracker=tracker,
        test_images=fashion.x_test,
        test_labels=fashion.y_test,
        model_name=NAME,
    )


def test_champion_and_challenger(tiny_study, tracker, fashion):
    bad, _ = tiny_study(name="bad", enqueue=[BAD_MLP], max_epochs=1)
    first = _promote(bad, tracker, fashion)
    assert (first.version, first.alias) == ("1", CHAMPION)
    assert first.decision.startswith("first champion")

    good, _ = tiny_study(name="good", enqueue=[GOOD_MLP], max_epochs=3)
    second = _promote(good, tracker, fashion)
    assert second.test_accuracy > first.test_accuracy
    assert (second.version, second.alias) == ("2", CHAMPION)
    assert f"beats version 1 ({first.test_accuracy:.4f})" in second.decision

    worse, _ = tiny_study(name="worse", enqueue=[BAD_MLP], max_epochs=1)
    third = _promote(worse, tracker, fashion)
    assert (third.version, third.alias) == ("3", CHALLENGER)
    assert "does not beat champion version 2" in third.decision

    client = tracker._client
    assert str(client.get_model_version_by_alias(NAME, CHAMPION).version) == "2"
    assert str(client.get_model_version_by_alias(NAME, CHALLENGER).version) == "3"
    version = client.get_model_version(NAME, "3")
    assert version.tags["fmsearch.decision"] == third.decision
    promotion_run = client.get_run(version.tags["promotion_run_id"])
    assert promotion_run.data.tags["fmsearch.decision"] == third.decision

    # A champion aliased by hand, as one registered elsewhere would be, has no test accuracy
    # to compare (compared as nan, it could never be beaten): it is judged on the test set now.
    client.delete_model_version_tag(NAME, "2", "test_accuracy")
    again = _promote(worse, tracker, fashion)
    assert again.alias == CHALLENGER
    judged = float(client.get_model_version(NAME, "2").tags["test_accuracy"])
    assert judged == pytest.approx(second.test_accuracy, abs=1e-6)
    assert f"does not beat champion version 2 ({judged:.4f})" in again.decision
    # A foreign model that does not serve fmsearch's contract cannot be judged: it is replaced.
    from sklearn.dummy import DummyClassifier

    mlflow.set_tracking_uri(tracker.tracking_uri)
    flat = fashion.x_train[:50].reshape(50, -1)
    with mlflow.start_run(experiment_id=tracker.experiment_id("foreign")):
        dummy = DummyClassifier().fit(flat, fashion.y_train[:50])
        # Requirements given: inferring them costs about 10 s.
        info = mlflow.sklearn.log_model(dummy, name="m", pip_requirements=["scikit-learn"])
    foreign = mlflow.register_model(info.model_uri, NAME)
    client.set_registered_model_alias(NAME, CHAMPION, foreign.version)
    replaced = _promote(worse, tracker, fashion)
    assert (replaced.version, replaced.alias) == ("3", CHAMPION)
    assert f"version {foreign.version} had none to compare and could not be judged" in (
        replaced.decision
    )


def test_version_carries_its_test_record(tiny_study, tracker, fashion):
    study, _ = tiny_study(enqueue=[GOOD_MLP], max_epochs=2)
    promotion = _promote(study, tracker, fashion)
    version = tracker._client.get_model_version(NAME, promotion.version)
    trial = study.best_trial
    assert version.tags["fmsearch.source_trial"] == str(trial.number)
    assert version.tags["fmsearch.source_run_id"] == trial.user_attrs["mlflow_run_id"]
    confusion = np.array(__import__("json").loads(version.tags["test_confusion_matrix"]))
    assert confusion.sum() == 10_000
    assert np.trace(confusion) / 10_000 == pytest.approx(promotion.test_accuracy, abs=1e-6)
    assert float(version.tags["test_macro_f1"]) == pytest.approx(promotion.test_macro_f1)
    assert "fmsearch.baseline" not in version.tags  # no baseline in this study
    run = tracker._client.get_run(version.tags["promotion_run_id"])
    assert run.data.metrics["test_accuracy"] == pytest.approx(promotion.test_accuracy)
    assert (
        run.data.tags["mlflow.parentRunId"]
        == tracker.run_tags(trial.user_attrs["mlflow_run_id"])["mlflow.parentRunId"]
    )

    # The champion loads by alias and takes raw uint8 images; its accuracy is the recorded one.
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    frame = model.predict(fashion.x_test)
    assert (frame["class_index"].to_numpy() == fashion.y_test).mean() == pytest.approx(
        promotion.test_accuracy
    )
    np.testing.assert_allclose(frame.iloc[:, 2:].sum(axis=1), 1.0, rtol=1e-5)


def test_promotion_draws_the_candidate_s_pictures(tiny_study, tracker, fashion, tmp_path):
    from PIL import Image

    study, _ = tiny_study(enqueue=[GOOD_MLP], max_epochs=2)
    promotion = _promote(study, tracker, fashion)
    run_id = tracker._client.get_model_version(NAME, promotion.version).tags["promotion_run_id"]
    names = {p.rsplit("/", 1)[-1] for p in tracker.artifact_paths(run_id, "pictures")}
    assert names == {
        f"{n}.png"
        for n in (
            "training_curves",
            "confusion_matrix",
            "confusion_matrix_normalized",
            "most_confused_pairs",
            "misclassified",
            "sample_predictions",
        )
    }
    local = tracker._client.download_artifacts(run_id, "pictures", str(tmp_path))
    for name in names:
        with Image.open(f"{local}/{name}") as image:
            assert image.format == "PNG" and image.width > 400


def test_promoting_twice_registers_once(tiny_study, tracker, fashion):
    study, _ = tiny_study(enqueue=[GOOD_MLP], max_epochs=1)
    first = _promote(study, tracker, fashion)
    again = _promote(study, tracker, fashion)
    assert again.already_registered and not first.already_registered
    assert again.version == first.version and again.decision == first.decision
    assert len(tracker._client.search_model_versions(f"name = '{NAME}'")) == 1


def test_nothing_to_promote(tiny_study, tracker, fashion):
    study, _ = tiny_study(
        enqueue=[GOOD_MLP], pruner=optuna.pruners.ThresholdPruner(lower=1.01), max_epochs=2
    )
    with pytest.raises(FmsearchError, match=r"study 'tiny' has no completed trial to promote"):
        _promote(study, tracker, fashion)


def test_default_model_name(tiny_study):
    study, _ = tiny_study(enqueue=[GOOD_MLP], max_epochs=1)
    assert default_model_name(study) == "fmsearch-mlp"


@pytest.mark.slow
def test_promotions_at_once_leave_one_champion_the_better(tiny_study, storage_url, tmp_path):
    """Two `fmsearch promote` processes race on one registered model, from studies in two
    different storages: aliases are last-writer-wins, so only a lock that lives in the
    registry (not in either storage) makes the better model the champion."""
    import subprocess

    from mlflow import MlflowClient

    from tests.services import ENV, FMSEARCH

    storages = {"good": storage_url, "bad": f"sqlite:///{tmp_path}/other-optuna.db"}
    tiny_study(name="bad", enqueue=[BAD_MLP], max_epochs=1, storage=storages["bad"])
    tiny_study(name="good", enqueue=[GOOD_MLP], max_epochs=3)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    processes = [
        subprocess.Popen(
            [
                *FMSEARCH,
                "promote",
                "--study-name",
                name,
                "--storage",
                storages[name],
                "--tracking-uri",
                uri,
                "--register-as",
                NAME,
            ],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in ("good", "bad")
    ]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = client.search_model_versions(f"name = '{NAME}'")
    assert len(versions) == 2
    accuracy = {v.tags["fmsearch.study"]: float(v.tags["test_accuracy"]) for v in versions}
    assert accuracy["good"] > accuracy["bad"]
    champion = client.get_model_version_by_alias(NAME, CHAMPION)
    assert champion.tags["fmsearch.study"] == "good"
    # The loser is the challenger, or a champion that was overtaken (and lost the alias).
    assert [v.aliases for v in versions if v.version != champion.version] in ([[CHALLENGER]], [[]])
    assert all(v.tags.get("fmsearch.decision") for v in versions)


def test_a_stand_in_replaces_the_trial_it_retrains_and_never_competes():
    from search.names import STANDS_IN_ATTR
    from search.promotion.promote import select_candidate

    study = optuna.create_study(direction="maximize")
    x = optuna.distributions.FloatDistribution(0, 1)

    def add(value, **attrs):
        trial = optuna.trial.create_trial(
            value=value, params={"x": value}, distributions={"x": x}, user_attrs=attrs
        )
        study.add_trial(trial)

    add(0.80)
    add(0.90)
    assert select_candidate(study).number == 1
    add(0.99, **{STANDS_IN_ATTR: 0})  # retrained on more images: its value is not its own
    assert select_candidate(study).number == 1
    add(0.90, **{STANDS_IN_ATTR: 1})
    add(0.90, **{STANDS_IN_ATTR: 1})
    assert select_candidate(study).number == 4  # the latest stand-in of the best trial


def test_calibration_fits_a_temperature_on_validation_and_records_before_and_after(
    tiny_study, tracker, fashion, small_split
):
    """A 3-epoch MLP is over-confident on 300 validation images; the served model then
    scales by the fitted temperature, and the test set's calibration is recorded with and
    without it, with a reliability diagram."""
    from runners.calibration import expected_calibration_error, temperature_scaled

    study, _ = tiny_study(enqueue=[GOOD_MLP], max_epochs=3)
    promotion = promote_winner(
        study=study, tracker=tracker, test_images=fashion.x_test[:2000],
        test_labels=fashion.y_test[:2000], model_name=NAME,
        val_images=small_split.x_val, val_labels=small_split.y_val,
    )  # fmt: skip
    client = tracker._client
    version = client.get_model_version(NAME, promotion.version)
    run = client.get_run(version.tags["promotion_run_id"])
    metrics = run.data.metrics
    assert {"test_ece", "test_ece_uncalibrated", "test_loss", "val_ece_before",
            "val_ece_after", "temperature"} <= set(metrics)  # fmt: skip
    assert float(version.tags["test_ece"]) == pytest.approx(metrics["test_ece"], abs=1e-6)
    assert "test_reliability.png" in {a.path for a in client.list_artifacts(run.info.run_id)}
    applied = metrics["val_ece_after"] < metrics["val_ece_before"]
    assert version.tags["calibration"].startswith("temperature " if applied else "none: ")
    served = mlflow.pyfunc.load_model(f"models:/{NAME}/{promotion.version}")
    probabilities = served.predict(fashion.x_test[:2000]).iloc[:, 2:].to_numpy()
    assert expected_calibration_error(probabilities, fashion.y_test[:2000]) == pytest.approx(
        metrics["test_ece"], abs=1e-6
    )
    if applied:  # the served probabilities carry the temperature
        unscaled = temperature_scaled(probabilities, 1 / metrics["temperature"])
        assert expected_calibration_error(unscaled, fashion.y_test[:2000]) == pytest.approx(
            metrics["test_ece_uncalibrated"], abs=1e-6
        )


def test_a_temperature_that_does_not_lower_validation_error_is_not_applied():
    import pandas as pd

    from runners.data import CLASS_NAMES
    from search.promotion.calibration import calibrate as _calibrate

    labels = np.arange(100) % 10

    class Perfect:  # sure and right: nothing to mend
        def predict(self, images):
            return pd.DataFrame(np.eye(10)[labels], columns=list(CLASS_NAMES))

    calibration = _calibrate(Perfect(), np.zeros((100, 28, 28)), labels)
    assert calibration.val_ece_before == pytest.approx(0.0, abs=1e-9)
    assert not calibration.applied

    class Overconfident:  # sure of everything, right half the time
        def predict(self, images):
            wrong = np.eye(10)[(labels + (np.arange(100) % 2)) % 10]
            return pd.DataFrame(0.98 * wrong + 0.002, columns=list(CLASS_NAMES))

    calibration = _calibrate(Overconfident(), np.zeros((100, 28, 28)), labels)
    assert calibration.applied and calibration.temperature > 1
    assert calibration.val_ece_after < calibration.val_ece_before


def test_the_baseline_is_judged_beside_the_champion_and_the_report_shows_both(
    tiny_study, tracker, fashion, tmp_path
):
    """The study's first configuration (the published one, or a recipe) is judged on the same
    test images; the report sets it beside the champion."""
    from runners.metrics import scores_from_confusion
    from search.insight.report import publish_report

    study, _ = tiny_study(enqueue=[BAD_MLP, GOOD_MLP], max_epochs=2, baseline="published")
    promotion = _promote(study, tracker, fashion)
    assert promotion.trial_number == 1  # the good one; the bad one is the baseline
    version = tracker._client.get_model_version(NAME, promotion.version)
    baseline = json.loads(version.tags["fmsearch.baseline"])
    assert (baseline["trial"], baseline["label"]) == (0, "published")
    scores = scores_from_confusion(np.array(baseline["confusion"]))
    run = tracker._client.get_run(version.tags["promotion_run_id"])
    assert run.data.metrics["baseline_test_accuracy"] == pytest.approx(scores["accuracy"])
    assert run.data.metrics["baseline_test_macro_f1"] == pytest.approx(scores["macro_f1"])
    assert scores["accuracy"] < promotion.test_accuracy

    report = publish_report(study=study, tracker=tracker, model_name=NAME,
                            html_path=tmp_path / "report.html")  # fmt: skip
    page = (tmp_path / "report.html").read_text()
    assert "Baseline vs tuned" in page and "baseline: trial 0 (published)" in page
    assert page.count('<figure class="confusion">') == 2 and "F1 Shirt" in page
    assert report.summary()["champion"]["baseline"]["trial"] == 0
