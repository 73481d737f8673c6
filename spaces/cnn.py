"""Convolutional network: conv blocks with max pooling, then a dense layer.

Each block is Conv2D (ReLU) followed by 2x2 max pooling; filters double from block to block.

Hyperparameters:
    n_conv (int, 2 to 3): convolution blocks.
    filters (categorical, 16 / 32 / 64): filters of the first block.
    kernel_size (categorical, 3 / 5): convolution kernel size.
    dense_units (int, 64 to 512, log): units of the dense layer before the output.
    l2 (float, 1e-6 to 1e-2, log): L2 penalty on every kernel.
    dropout (float, 0.0 to 0.5): dropout after the convolutions and after the dense layer.
    learning_rate, batch_size, optimizer: shared, see :mod:`spaces.common`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spaces.common import classifier_head, image_input, suggest_regularization, suggest_training

if TYPE_CHECKING:
    import keras
    import optuna

N_CONV = (2, 3)
FILTERS = (16, 32, 64)
KERNEL_SIZES = (3, 5)
DENSE_UNITS = (64, 512)


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    """Suggest one CNN configuration."""
    params: dict[str, Any] = {
        "n_conv": trial.suggest_int("n_conv", *N_CONV),
        "filters": trial.suggest_categorical("filters", FILTERS),
        "kernel_size": trial.suggest_categorical("kernel_size", KERNEL_SIZES),
        "dense_units": trial.suggest_int("dense_units", *DENSE_UNITS, log=True),
    }
    params.update(suggest_regularization(trial))
    params.update(suggest_training(trial))
    return params


def build(
    params: dict[str, Any], *, input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10
) -> keras.Model:
    """Build the (uncompiled) CNN that ``params`` describes."""
    import keras

    l2 = keras.regularizers.L2(params["l2"])
    inputs, x = image_input(input_shape)
    for i in range(params["n_conv"]):
        x = keras.layers.Conv2D(
            params["filters"] * 2**i,
            params["kernel_size"],
            padding="same",
            activation="relu",
            kernel_regularizer=l2,
        )(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Dropout(params["dropout"])(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(params["dense_units"], activation="relu", kernel_regularizer=l2)(x)
    x = keras.layers.Dropout(params["dropout"])(x)
    return keras.Model(inputs, classifier_head(x, num_classes), name="cnn")
