"""Hyperparameters every Keras space shares, under one name and range everywhere.

Keeping the names and ranges identical across architectures lines up the MLflow params of
different studies, so runs compare column by column in the UI.

Shared hyperparameters:
    learning_rate (float, 1e-4 to 1e-2, log): initial learning rate of the optimizer. Above
        1e-2 adam and rmsprop diverge to chance on this data (measured: rmsprop at 0.068 stayed
        at 10% validation accuracy for 10 epochs).
    batch_size (categorical, 32 / 64 / 128 / 256): training batch size.
    optimizer (categorical, adam / adamw / sgd / rmsprop): sgd uses Nesterov momentum 0.9.
    l2 (float, 1e-6 to 1e-2, log): L2 penalty on every kernel.
    dropout (float, 0.0 to 0.5): dropout rate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras
    import optuna

LEARNING_RATE = (1e-4, 1e-2)
BATCH_SIZES = (32, 64, 128, 256)
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
L2 = (1e-6, 1e-2)
DROPOUT = (0.0, 0.5)


def suggest_training(trial: optuna.Trial) -> dict[str, Any]:
    """Suggest the optimisation hyperparameters every Keras space shares."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", *LEARNING_RATE, log=True),
        "batch_size": trial.suggest_categorical("batch_size", BATCH_SIZES),
        "optimizer": trial.suggest_categorical("optimizer", OPTIMIZERS),
    }


def suggest_regularization(trial: optuna.Trial) -> dict[str, Any]:
    """Suggest the shared regularisation hyperparameters (``l2``, ``dropout``)."""
    return {
        "l2": trial.suggest_float("l2", *L2, log=True),
        "dropout": trial.suggest_float("dropout", *DROPOUT),
    }


def image_input(input_shape: tuple[int, ...]) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The model's input and its scaled view.

    Models take raw pixel values (0 to 255) and scale inside the graph, so a saved model
    carries its own preprocessing.
    """
    import keras

    inputs = keras.Input(shape=input_shape, name="image")
    return inputs, keras.layers.Rescaling(1.0 / 255.0, name="scale")(inputs)


def classifier_head(x: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    """Softmax output, kept in float32 so mixed precision never rounds the probabilities."""
    import keras

    return keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probs")(x)
