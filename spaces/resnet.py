"""Residual network: a conv stem, stages of residual blocks, and a dense head with L2.

A residual block is two 3x3 Conv2D + BatchNorm layers with an identity shortcut (a strided
1x1 projection where a stage halves the resolution and doubles the filters); without ``skip``
the same blocks are a plain CNN of the same depth.

Hyperparameters:
    base_filters (categorical, 16 / 32 / 64): filters of the stem and the first stage.
    n_stages (int, 1 to 3): stages; each after the first halves resolution, doubles filters.
    n_blocks (int, 1 to 3): residual blocks per stage.
    skip (bool): the blocks' shortcut connections (off: a plain CNN, the ablation).
    dense_units (int, 32 to 256, log): units of the dense head.
    use_l2 (bool) with l2 (float, 1e-6 to 1e-2, log): an L2 penalty on every kernel, or
        none.
    dropout (float, 0.0 to 0.5): dropout before and after the dense head.
    learning_rate, batch_size, optimizer, lr_schedule, label_smoothing and the augmentation:
        shared, see :mod:`spaces.common`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spaces.common import (
    COMMON_DEFAULTS,
    batch_norm,
    classifier_head,
    image_input,
    kernel_l2,
    suggest_keras_common,
    suggest_regularization,
)

if TYPE_CHECKING:
    import keras
    import optuna

KIND = "keras"
REQUIRES = None
SHORT_RUN: dict[str, Any] = {}
BACKBONE = None
BASE_FILTERS = (16, 32, 64)
N_STAGES = (1, 3)
N_BLOCKS = (1, 3)
DENSE_UNITS = (32, 256)
# A small ResNet as Fashion-MNIST projects train it (91.5-93%): 3 stages of 2 blocks from 32
# filters, cosine schedule, shifts and flips.
DEFAULTS = {
    **COMMON_DEFAULTS, "base_filters": 32, "n_stages": 3, "n_blocks": 2, "skip": True,
    "dense_units": 128, "use_l2": True, "l2": 1e-4, "dropout": 0.2, "lr_schedule": "cosine",
    "shift": True, "shift_factor": 0.1, "flip": True,
}  # fmt: skip


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    """Suggest one ResNet configuration."""
    params: dict[str, Any] = {
        "base_filters": trial.suggest_categorical("base_filters", BASE_FILTERS),
        "n_stages": trial.suggest_int("n_stages", *N_STAGES),
        "n_blocks": trial.suggest_int("n_blocks", *N_BLOCKS),
        "skip": trial.suggest_categorical("skip", (True, False)),
        "dense_units": trial.suggest_int("dense_units", *DENSE_UNITS, log=True),
    }
    params.update(suggest_regularization(trial))
    params.update(suggest_keras_common(trial))
    return params


def _residual_block(x, filters: int, stride: int, l2, *, skip: bool):
    import keras

    def conv(kernel: int, stride_: int):
        return keras.layers.Conv2D(
            filters, kernel, strides=stride_, padding="same", use_bias=False, kernel_regularizer=l2
        )

    shortcut = x
    if skip and (stride != 1 or x.shape[-1] != filters):
        shortcut = batch_norm()(conv(1, stride)(x))
    y = keras.layers.ReLU()(batch_norm()(conv(3, stride)(x)))
    y = batch_norm()(conv(3, 1)(y))
    if not skip:
        return keras.layers.ReLU()(y)
    return keras.layers.ReLU()(keras.layers.Add()([shortcut, y]))


def build(
    params: dict[str, Any], *, input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10
) -> keras.Model:
    """Build the (uncompiled) ResNet that ``params`` describes."""
    import keras

    l2 = kernel_l2(params)
    inputs, x = image_input(input_shape)
    x = keras.layers.Conv2D(
        params["base_filters"], 3, padding="same", use_bias=False, kernel_regularizer=l2
    )(x)
    x = keras.layers.ReLU()(batch_norm()(x))
    for stage in range(params["n_stages"]):
        filters = params["base_filters"] * 2**stage
        for block in range(params["n_blocks"]):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _residual_block(x, filters, stride, l2, skip=params.get("skip", True))
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(params["dropout"])(x)
    x = keras.layers.Dense(params["dense_units"], activation="relu", kernel_regularizer=l2)(x)
    x = keras.layers.Dropout(params["dropout"])(x)
    return keras.Model(inputs, classifier_head(x, num_classes), name="resnet")
