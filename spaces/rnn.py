"""Recurrent network: the image's 28 rows as a sequence through two stacked LSTM or GRU layers.

Hyperparameters:
    cell (categorical, lstm / gru): the recurrent cell.
    units (int, 32 to 256, log): units of each recurrent layer.
    bidirectional (bool): read the rows both top-down and bottom-up.
    use_l2 (bool) with l2 (float, 1e-6 to 1e-2, log): an L2 penalty on the input kernels
        and the dense output, or none.
    dropout (float, 0.0 to 0.5): dropout between the layers (not inside the recurrence,
        which would rule out the fused cuDNN kernels on a GPU).
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
CELLS = ("lstm", "gru")
UNITS = (32, 256)
# Two stacked 128-unit LSTMs over the rows, as Fashion-MNIST RNN tutorials build them.
DEFAULTS = {
    **COMMON_DEFAULTS, "cell": "lstm", "units": 128, "bidirectional": False, "use_l2": True,
    "l2": 1e-6, "dropout": 0.2,
}  # fmt: skip


def suggest(trial: optuna.Trial) -> dict[str, Any]:
    """Suggest one recurrent configuration."""
    params: dict[str, Any] = {
        "cell": trial.suggest_categorical("cell", CELLS),
        "units": trial.suggest_int("units", *UNITS, log=True),
        "bidirectional": trial.suggest_categorical("bidirectional", (False, True)),
    }
    params.update(suggest_regularization(trial))
    params.update(suggest_keras_common(trial))
    return params


def build(
    params: dict[str, Any], *, input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10
) -> keras.Model:
    """Build the (uncompiled) recurrent network that ``params`` describes."""
    import keras

    l2 = kernel_l2(params)
    cell = keras.layers.LSTM if params["cell"] == "lstm" else keras.layers.GRU
    inputs, x = image_input(input_shape)
    x = keras.layers.Reshape(input_shape[:2])(x)  # (rows, pixels per row)
    for return_sequences in (True, False):
        layer = cell(params["units"], return_sequences=return_sequences, kernel_regularizer=l2)
        x = keras.layers.Bidirectional(layer)(x) if params["bidirectional"] else layer(x)
        x = keras.layers.Dropout(params["dropout"])(x)
    return keras.Model(inputs, classifier_head(x, num_classes), name="rnn")
