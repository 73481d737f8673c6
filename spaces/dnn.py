"""Deep multi-layer perceptron: 3 to 6 dense layers with L2, optional BatchNorm.

Hyperparameters:
    n_layers (int, 3 to 6): hidden dense layers.
    n_units_l{i} (int, 64 to 1024, log): units of hidden layer ``i``.
    batchnorm (bool): BatchNormalization between each dense layer and its ReLU.
    use_l2 (bool) with l2 (float, 1e-6 to 1e-2, log): an L2 penalty on every dense kernel,
        or none.
    dropout (float, 0.0 to 0.5): dropout after every hidden layer.
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
N_LAYERS = (3, 6)
N_UNITS = (64, 1024)
DEFAULTS = {
    **COMMON_DEFAULTS, "n_layers": 3, "n_units_l0": 512, "n_units_l1": 256, "n_units_l2": 128,
    "batchnorm": True, "use_l2": True, "l2": 1e-4, "dropout": 0.3, "lr_schedule": "cosine",
}  # fmt: skip


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    """Suggest one deep MLP configuration."""
    params: dict[str, Any] = {"n_layers": trial.suggest_int("n_layers", *N_LAYERS)}
    for i in range(params["n_layers"]):
        params[f"n_units_l{i}"] = trial.suggest_int(f"n_units_l{i}", *N_UNITS, log=True)
    params["batchnorm"] = trial.suggest_categorical("batchnorm", (False, True))
    params.update(suggest_regularization(trial))
    params.update(suggest_keras_common(trial))
    return params


def build(
    params: dict[str, Any], *, input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10
) -> keras.Model:
    """Build the (uncompiled) deep MLP that ``params`` describes."""
    import keras

    l2 = kernel_l2(params)
    inputs, x = image_input(input_shape)
    x = keras.layers.Flatten()(x)
    for i in range(params["n_layers"]):
        x = keras.layers.Dense(
            params[f"n_units_l{i}"], use_bias=not params["batchnorm"], kernel_regularizer=l2
        )(x)
        if params["batchnorm"]:
            x = batch_norm()(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.Dropout(params["dropout"])(x)
    return keras.Model(inputs, classifier_head(x, num_classes), name="dnn")
