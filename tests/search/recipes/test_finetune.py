"""Fine-tuning a registered champion: a whole grid, every trial from the champion's weights."""

from __future__ import annotations

import itertools

import mlflow
import optuna
import pytest
from optuna.distributions import CategoricalDistribution

from runners.errors import FmsearchError
from search import api
from search.names import ARCH_ATTR, SOURCE_TRIAL_TAG, STUDY_TAG
from search.recipes.finetune import spec_for
from search.trials.choices import describe_space
from search.trials.spaces import check_grid
from spaces import ARCHITECTURES

DATA = {"subset": 300, "val_size": 100, "seed": 0, "quiet": True}
# Two of each as in the default grid, but one batch size: half the trials.
GRID = {"learning_rate": (1e-5, 5e-6), "batch_size": (64,), "patience": (2, 3)}


def test_finetune_runs_the_whole_grid_from_the_champion_s_weights(stores):
    searched = api.search(arch="mlp", trials=1, max_epochs=3, storage=stores["storage"],
                          tracking_uri=stores["tracking"], **DATA)  # fmt: skip
    champion_value = searched.study.best_value
    assert champion_value > 0.5

    result = api.finetune(model_uri="models:/fmsearch-mlp@champion", grid=GRID, max_epochs=1,
                          storage=stores["storage"], tracking_uri=stores["tracking"],
                          **DATA)  # fmt: skip
    assert result.study_name == "mlp-finetune"
    trials = result.study.trials
    assert sorted((t.params["learning_rate"], t.params["batch_size"], t.params["patience"])
                  for t in trials) == sorted(itertools.product(*GRID.values()))  # fmt: skip
    for trial in trials:
        assert trial.state.name == "COMPLETE"
        # One epoch at 1e-5 barely moves the champion's weights: the trial validates where
        # the champion did (a model trained from scratch so slowly stays near chance).
        assert trial.value == pytest.approx(champion_value, abs=0.03)
        assert isinstance(trial.distributions["learning_rate"], CategoricalDistribution)
    # The fine-tuning rates are the fine-tuning study's; the mlp space is as it was.
    assert describe_space(ARCHITECTURES["mlp"])["learning_rate"].low == 1e-4
    assert result.promotion.model_name == "fmsearch-mlp"
    assert result.promotion.alias in ("champion", "challenger")


def test_finetune_refuses_what_it_cannot_fine_tune(stores, tracker):
    with pytest.raises(FmsearchError, match=r"expected a registered model as models:/NAME@"):
        api.finetune(model_uri="runs:/abc/model", storage=stores["storage"],
                     tracking_uri=stores["tracking"])  # fmt: skip
    with pytest.raises(FmsearchError, match=r"expected a registered version at models:/nope@"):
        api.finetune(model_uri="models:/nope@champion", storage=stores["storage"],
                     tracking_uri=stores["tracking"])  # fmt: skip
    # A scikit-learn champion has no weights to continue from.
    optuna.create_study(study_name="logreg", storage=stores["storage"]).set_user_attr(
        ARCH_ATTR, "logreg"
    )
    client = mlflow.MlflowClient(stores["tracking"])
    client.create_registered_model("fmsearch-logreg")
    version = client.create_model_version(
        "fmsearch-logreg", "file:///nowhere", tags={STUDY_TAG: "logreg", SOURCE_TRIAL_TAG: "0"}
    )
    client.set_registered_model_alias("fmsearch-logreg", "champion", version.version)
    with pytest.raises(FmsearchError, match=r"expected a model of one Keras architecture, got "
                       r"--arch logreg \(models:/fmsearch-logreg@champion\)"):  # fmt: skip
        spec_for("models:/fmsearch-logreg@champion", tracker=tracker, storage=stores["storage"],
                 grid={})  # fmt: skip
    with pytest.raises(FmsearchError, match=r"expected names among learning_rate, .*'dropout'"):
        check_grid({"dropout": (0.1,)})
    with pytest.raises(FmsearchError, match=r"learning_rate: expected positive values, got"):
        check_grid({"learning_rate": ()})


def test_a_transfer_model_starts_from_local_weights_and_trains_a_step(small_split, tmp_path):
    """Weights saved locally go into the backbone; frozen layers stay as loaded, the rest
    train."""
    import numpy as np

    from runners.data import Split
    from runners.training import fit_trial
    from search.trials.spaces import PretrainedSpace
    from spaces import resnet50v2
    from tests.runners.test_training import Recorder

    params = {**resnet50v2.DEFAULTS, "image_size": 32, "frozen_fraction": 0.5}
    source = resnet50v2.build(params).get_layer(resnet50v2.BACKBONE)
    weights = tmp_path / "backbone.weights.h5"
    source.save_weights(weights)

    def kernels(backbone):  # the first and the last convolution's
        convs = [layer for layer in backbone.layers if type(layer).__name__ == "Conv2D"]
        return convs[0].kernel, convs[-1].kernel

    model = PretrainedSpace(resnet50v2, str(weights)).build(params)
    backbone = model.get_layer(resnet50v2.BACKBONE)
    first, last = kernels(backbone)
    for loaded, saved in zip((first, last), kernels(source), strict=True):
        np.testing.assert_array_equal(loaded.numpy(), saved.numpy())
    fresh = resnet50v2.build(params).get_layer(resnet50v2.BACKBONE)
    assert not np.array_equal(kernels(fresh)[0].numpy(), first.numpy())
    trainable = [layer.trainable for layer in backbone.layers]
    assert trainable.index(True) == round(0.5 * len(trainable)) and all(
        trainable[trainable.index(True) :]
    )

    tiny = Split(small_split.x_train[:32], small_split.y_train[:32], small_split.x_val[:16],
                 small_split.y_val[:16])  # fmt: skip
    before = [first.numpy().copy(), last.numpy().copy()]
    result = fit_trial(model, {**params, "batch_size": 16}, tiny, max_epochs=1,
                       reporter=Recorder())  # fmt: skip
    assert result.epochs == 1 and np.isfinite(result.history["train_loss"][0])
    np.testing.assert_array_equal(first.numpy(), before[0])  # frozen
    assert not np.array_equal(last.numpy(), before[1])  # trained


def test_pretrained_weights_come_from_the_option_the_keras_cache_or_nowhere(tmp_path, monkeypatch):
    from pathlib import Path

    from search.trials.spaces import pretrained_weights
    from spaces import mlp, resnet50v2

    monkeypatch.setattr(Path, "home", lambda: tmp_path)
    given = tmp_path / "mine.weights.h5"
    given.write_bytes(b"")
    with pytest.raises(FmsearchError, match=r"--weights: expected an architecture with a "
                       r"pretrained backbone \(resnet50v2\), got --arch mlp"):  # fmt: skip
        pretrained_weights(mlp, given=given, arch="mlp")
    assert pretrained_weights(mlp, given=None, arch="mlp") is None
    with pytest.raises(FmsearchError, match=r"--weights: expected a weights file, got"):
        pretrained_weights(resnet50v2, given=tmp_path / "none.h5", arch="resnet50v2")
    assert pretrained_weights(resnet50v2, given=given, arch="resnet50v2") == str(given)
    assert pretrained_weights(resnet50v2, given=None, arch="resnet50v2") is None  # scratch
    cached = tmp_path / ".keras" / "models" / resnet50v2.IMAGENET_WEIGHTS
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert pretrained_weights(resnet50v2, given=None, arch="resnet50v2") == str(cached)
