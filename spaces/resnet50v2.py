"""Transfer learning: Keras Applications' ResNet50V2 on the images upscaled to 3 channels.

The 28x28 grey images are resized to ``image_size`` pixels a side and repeated to three
channels, scaled to -1..1 as ResNet50V2 expects, then through the backbone (global average
pooled) into a new dense head. The backbone's weights are ImageNet's where the search has them
(``fmsearch run --weights FILE``, or the Keras cache's file :data:`IMAGENET_WEIGHTS`; the
search loads them into the layer :data:`BACKBONE`), random otherwise: ``build`` itself always
builds from scratch.

Hyperparameters:
    image_size (categorical, 32 / 48 / 64 / 85): side of the upscaled images (85: the
        source's; 32 is ResNet50V2's smallest).
    frozen_fraction (float, 0.0 to 1.0): share of the backbone's layers, from the input up,
        that do not train (1.0: only the head learns).
    dense_units (int, 64 to 512, log): units of the head's dense layer.
    dropout (float, 0.0 to 0.5): dropout before the head's dense layer.
    learning_rate (the fine-tuning rate of what trains), batch_size, optimizer, lr_schedule,
        label_smoothing and the augmentation: shared, see :mod:`spaces.common`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spaces.common import (
    COMMON_DEFAULTS,
    DROPOUT,
    classifier_head,
    image_input,
    suggest_keras_common,
)

if TYPE_CHECKING:
    import keras
    import optuna

KIND = "keras"
REQUIRES = None
SHORT_RUN: dict[str, Any] = {}
# The backbone layer's name: where pretrained weights are loaded.
BACKBONE = "resnet50v2"
# Keras' own name for ResNet50V2's ImageNet weights without the top (~/.keras/models/).
IMAGENET_WEIGHTS = "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGE_SIZES = (32, 48, 64, 85)
FROZEN_FRACTION = (0.0, 1.0)
DENSE_UNITS = (64, 512)
# The source's transfer: 85x85x3 upscaled images, ImageNet weights. Its other settings are
# fmsearch's: the lower three quarters of the backbone frozen, a dense 256 head with dropout
# 0.3, Adam at 1e-4 (the low end of the shared range, a fine-tuning rate), batches of 64.
DEFAULTS = {
    **COMMON_DEFAULTS, "image_size": 85, "frozen_fraction": 0.75, "dense_units": 256,
    "dropout": 0.3, "learning_rate": 1e-4, "batch_size": 64,
}  # fmt: skip


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    """Suggest one transfer configuration."""
    params: dict[str, Any] = {
        "image_size": trial.suggest_categorical("image_size", IMAGE_SIZES),
        "frozen_fraction": trial.suggest_float("frozen_fraction", *FROZEN_FRACTION),
        "dense_units": trial.suggest_int("dense_units", *DENSE_UNITS, log=True),
        "dropout": trial.suggest_float("dropout", *DROPOUT),
    }
    params.update(suggest_keras_common(trial))
    return params


def build(
    params: dict[str, Any], *, input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10
) -> keras.Model:
    """Build the (uncompiled) transfer model ``params`` describe, its backbone random."""
    import keras

    size = params["image_size"]
    inputs, x = image_input(input_shape)  # scaled to 0..1
    x = keras.layers.Resizing(size, size, name="upscale")(x)
    if input_shape[-1] == 1:
        x = keras.layers.Concatenate(name="rgb")([x, x, x])
    x = keras.layers.Rescaling(2.0, offset=-1.0, name="to_pm1")(x)  # ResNet50V2's -1..1
    backbone = keras.applications.ResNet50V2(
        include_top=False, weights=None, input_shape=(size, size, 3), pooling="avg",
        name=BACKBONE,
    )  # fmt: skip
    for layer in backbone.layers[: round(params["frozen_fraction"] * len(backbone.layers))]:
        layer.trainable = False
    x = keras.layers.Dropout(params["dropout"])(backbone(x))
    x = keras.layers.Dense(params["dense_units"], activation="relu")(x)
    return keras.Model(inputs, classifier_head(x, num_classes), name="resnet50v2_transfer")
