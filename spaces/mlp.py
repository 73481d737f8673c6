"""Multi-layer perceptron on flattened pixels.

Hyperparameters:
    n_layers (int, 1 to 3): hidden dense layers.
    n_units_l{i} (int, 32 to 1024, log): units of hidden layer ``i``.
    l2 (float, 1e-6 to 1e-2, log): L2 penalty on every dense kernel.
    dropout (float, 0.0 to 0.5): dropout after every hidden layer.
    learning_rate, batch_size, optimizer: shared, see :mod:`spaces.common`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from spaces.common import classifier_head, image_input, suggest_regularization, suggest_training

if TYPE_CHECKING:
    import keras
    import optuna

N_LAYERS = (1, 3)
N_UNITS = (32, 1024)


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    """Suggest one MLP configuration."""
    params: dict[str, Any] = {"n_layers": trial.suggest_int("n_layers", *N_LAYERS)}
    for i in range(params["n_layers"]):
        params[f"n_units_l{i}"] = trial.suggest_int(f"n_units_l{i}", *N_UNITS, log=True)
    params.update(suggest_regularization(trial))
    params.update(suggest_training(trial))
    return params


def build(
    params: dict[str, Any], *, input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10
) -> keras.Model:
    """Build the (uncompiled) MLP that ``params`` describes."""
    import keras

    l2 = keras.regularizers.L2(params["l2"])
    inputs, x = image_input(input_shape)
    x = keras.layers.Flatten()(x)
    for i in range(params["n_layers"]):
        x = keras.layers.Dense(params[f"n_units_l{i}"], activation="relu", kernel_regularizer=l2)(x)
        x = keras.layers.Dropout(params["dropout"])(x)
    return keras.Model(inputs, classifier_head(x, num_classes), name="mlp")
