"""Baseline multi-layer perceptron: two dense hidden layers on flattened pixels.

Hyperparameters:
    n_units_l0, n_units_l1 (int, 32 to 1024, log): units of the two hidden layers.
    use_l2 (bool) with l2 (float, 1e-6 to 1e-2, log): an L2 penalty on every dense kernel,
        or none.
    dropout (float, 0.0 to 0.5): dropout after each hidden layer.
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
BACKBONE = None
N_UNITS = (32, 1024)
# The usual Fashion-MNIST baseline (about 88% test accuracy): 256-128 ReLU, dropout 0.2, Adam.
DEFAULTS = {
    **COMMON_DEFAULTS, "n_units_l0": 256, "n_units_l1": 128, "use_l2": False, "dropout": 0.2,
}  # fmt: skip
# For a run of a few epochs (on top of spaces.common.short_run_start): wider layers, smaller
# batches, label smoothing, each of which raised validation accuracy at 5 epochs on 10,000
# images (docs/searching.md, "Short searches").
SHORT_RUN = {"n_units_l0": 512, "n_units_l1": 256, "batch_size": 32, "label_smoothing": 0.1}


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    """Suggest one MLP configuration."""
    params: dict[str, Any] = {
        f"n_units_l{i}": trial.suggest_int(f"n_units_l{i}", *N_UNITS, log=True) for i in range(2)
    }
    params.update(suggest_regularization(trial))
    params.update(suggest_keras_common(trial))
    return params


def build(
    params: dict[str, Any], *, input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10
) -> keras.Model:
    """Build the (uncompiled) MLP that ``params`` describes."""
    import keras

    l2 = kernel_l2(params)
    inputs, x = image_input(input_shape)
    x = keras.layers.Flatten()(x)
    for i in range(2):
        x = keras.layers.Dense(params[f"n_units_l{i}"], activation="relu", kernel_regularizer=l2)(x)
        x = keras.layers.Dropout(params["dropout"])(x)
    return keras.Model(inputs, classifier_head(x, num_classes), name="mlp")
