"""MiniCNN: a light CNN of two conv layers and a dense layer.

Conv (ReLU), 2x2 max pooling, conv with twice the filters, 2x2 max pooling, flatten, dense
(ReLU), dropout.

Hyperparameters:
    filters (categorical, 8 / 16 / 32 / 64): filters of the first conv layer.
    dense_units (int, 32 to 256, log): units of the dense layer.
    dropout (float, 0.0 to 0.5): dropout before the output.
    learning_rate, batch_size, optimizer, lr_schedule, label_smoothing and the augmentation:
        shared, see :mod:`spaces.common`.
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
BACKBONE = None
FILTERS = (8, 16, 32, 64)
DENSE_UNITS = (32, 256)
DEFAULTS = {**COMMON_DEFAULTS, "filters": 32, "dense_units": 128, "dropout": 0.5}


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    """Suggest one MiniCNN configuration."""
    params: dict[str, Any] = {
        "filters": trial.suggest_categorical("filters", FILTERS),
        "dense_units": trial.suggest_int("dense_units", *DENSE_UNITS, log=True),
        "dropout": trial.suggest_float("dropout", *DROPOUT),
    }
    params.update(suggest_keras_common(trial))
    return params


def build(
    params: dict[str, Any], *, input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10
) -> keras.Model:
    """Build the (uncompiled) MiniCNN that ``params`` describes."""
    import keras

    inputs, x = image_input(input_shape)
    for i in range(2):
        x = keras.layers.Conv2D(params["filters"] * 2**i, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(params["dense_units"], activation="relu")(x)
    x = keras.layers.Dropout(params["dropout"])(x)
    return keras.Model(inputs, classifier_head(x, num_classes), name="minicnn")
