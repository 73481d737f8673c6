"""TinyVGG, the CNN Explainer design: three conv layers, two max-pools, a dense softmax.

Conv, conv, 2x2 max pooling, conv, 2x2 max pooling, flatten, softmax; all conv layers have
the same filters and ReLU. No dropout or L2: the design is the point.

Hyperparameters:
    filters (categorical, 8 / 10 / 16 / 32 / 64): filters of every conv layer (CNN Explainer
        uses 10).
    kernel_size (categorical, 3 / 5): convolution kernel size.
    learning_rate, batch_size, optimizer, lr_schedule, label_smoothing and the augmentation:
        shared, see :mod:`spaces.common`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spaces.common import COMMON_DEFAULTS, classifier_head, image_input, suggest_keras_common

if TYPE_CHECKING:
    import keras
    import optuna

KIND = "keras"
REQUIRES = None
SHORT_RUN: dict[str, Any] = {}
BACKBONE = None
FILTERS = (8, 10, 16, 32, 64)
KERNEL_SIZES = (3, 5)
DEFAULTS = {**COMMON_DEFAULTS, "filters": 10, "kernel_size": 3}


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    """Suggest one TinyVGG configuration."""
    params: dict[str, Any] = {
        "filters": trial.suggest_categorical("filters", FILTERS),
        "kernel_size": trial.suggest_categorical("kernel_size", KERNEL_SIZES),
    }
    params.update(suggest_keras_common(trial))
    return params


def build(
    params: dict[str, Any], *, input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10
) -> keras.Model:
    """Build the (uncompiled) TinyVGG that ``params`` describes."""
    import keras

    def conv() -> keras.layers.Conv2D:
        return keras.layers.Conv2D(
            params["filters"], params["kernel_size"], padding="same", activation="relu"
        )

    inputs, x = image_input(input_shape)
    x = keras.layers.MaxPooling2D(2)(conv()(conv()(x)))
    x = keras.layers.MaxPooling2D(2)(conv()(x))
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, classifier_head(x, num_classes), name="tinyvgg")
