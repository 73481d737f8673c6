"""Convolutional network: three conv layers and two dropout layers.

Conv (ReLU), 2x2 max pooling, conv, 2x2 max pooling, dropout, conv, flatten, dense (ReLU),
dropout. The filters double from one conv layer to the next.

Hyperparameters:
    filters (categorical, 16 / 32 / 64): filters of the first conv layer.
    kernel_size (categorical, 3 / 5): convolution kernel size.
    dense_units (int, 64 to 512, log): units of the dense layer before the output.
    use_l2 (bool) with l2 (float, 1e-6 to 1e-2, log): an L2 penalty on every kernel, or
        none.
    dropout (float, 0.0 to 0.5): rate of both dropout layers.
    learning_rate, batch_size, optimizer, lr_schedule, label_smoothing and the augmentation:
        shared, see :mod:`spaces.common`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spaces.common import (
    COMMON_DEFAULTS,
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
FILTERS = (16, 32, 64)
KERNEL_SIZES = (3, 5)
DENSE_UNITS = (64, 512)
# The common Fashion-MNIST Keras CNN (32-64-128 filters, dense 128, dropout 0.3): 90-91%.
DEFAULTS = {
    **COMMON_DEFAULTS, "filters": 32, "kernel_size": 3, "dense_units": 128, "use_l2": False,
    "dropout": 0.3,
}  # fmt: skip


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    """Suggest one CNN configuration."""
    params: dict[str, Any] = {
        "filters": trial.suggest_categorical("filters", FILTERS),
        "kernel_size": trial.suggest_categorical("kernel_size", KERNEL_SIZES),
        "dense_units": trial.suggest_int("dense_units", *DENSE_UNITS, log=True),
    }
    params.update(suggest_regularization(trial))
    params.update(suggest_keras_common(trial))
    return params


def build(
    params: dict[str, Any], *, input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10
) -> keras.Model:
    """Build the (uncompiled) CNN that ``params`` describes."""
    import keras

    l2 = kernel_l2(params)

    def conv(i: int) -> keras.layers.Conv2D:
        return keras.layers.Conv2D(
            params["filters"] * 2**i,
            params["kernel_size"],
            padding="same",
            activation="relu",
            kernel_regularizer=l2,
        )

    inputs, x = image_input(input_shape)
    x = keras.layers.MaxPooling2D(2)(conv(0)(x))
    x = keras.layers.MaxPooling2D(2)(conv(1)(x))
    x = keras.layers.Dropout(params["dropout"])(x)
    x = keras.layers.Flatten()(conv(2)(x))
    x = keras.layers.Dense(params["dense_units"], activation="relu", kernel_regularizer=l2)(x)
    x = keras.layers.Dropout(params["dropout"])(x)
    return keras.Model(inputs, classifier_head(x, num_classes), name="cnn")
