"""Hyperparameters every Keras space shares, under one name and range everywhere.

Keeping the names and ranges identical across architectures lines up the MLflow params of
different studies, so runs compare column by column in the UI.

Shared hyperparameters:
    learning_rate (float, 1e-4 to 1e-2, log): initial learning rate of the optimizer. Above
        1e-2 adam and rmsprop diverge to chance on this data (measured: rmsprop at 0.068 stayed
        at 10% validation accuracy for 10 epochs).
    batch_size (categorical, 32 / 64 / 128 / 256): training batch size.
    optimizer (categorical, adam / adamw / sgd / rmsprop): sgd uses Nesterov momentum 0.9.
    lr_schedule (categorical, constant / cosine / one_cycle / plateau): how the learning rate
        moves: cosine decay to zero over the trial's epochs, one-cycle (warm up from 1/25 of
        ``learning_rate`` over 30% of the steps, then cosine down), or multiplied by
        ``plateau_factor`` when the validation loss stalls for ``plateau_patience`` epochs.
    plateau_factor (float, 0.1 to 0.5) and plateau_patience (int, 1 to 5): with
        ``lr_schedule`` plateau only, Keras' ``ReduceLROnPlateau``.
    label_smoothing (float, 0.0 to 0.2): label smoothing of the cross-entropy loss.
    class_weights (bool) with shirt_weight (float, 1.5 to 4.0): the loss weighs Shirt images,
        the weakest class of every source, this much more than the others (for
        ``--objective worst_class_f1``).
    use_l2 (bool) with l2 (float, 1e-6 to 1e-2, log): an L2 penalty on every kernel, or none.
    dropout (float, 0.0 to 0.5): dropout rate.

Shared augmentation (training batches only), each on/off with its strength:
    mix (categorical, none / mixup / cutmix): batch mixing; with it, ``mix_prob`` (float, 0.1
        to 1.0: share of images mixed) and ``mix_alpha`` (float, 0.1 to 2.0, log: Beta
        parameter of the mixing weight).
    shift (bool) with shift_factor (float, 0.02 to 0.15): random translation, fraction of
        the side.
    rotation (bool) with rotation_degrees (float, 2 to 20): random rotation.
    zoom (bool) with zoom_factor (float, 0.02 to 0.2): random zoom in or out.
    flip (bool): random horizontal flip.
    erasing (bool) with erasing_prob (float, 0.1 to 0.5): random erasing of a patch.
    shear (bool) with shear_factor (float, 0.02 to 0.2): random horizontal shear, fraction of
        the side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras
    import optuna

LEARNING_RATE = (1e-4, 1e-2)
BATCH_SIZES = (32, 64, 128, 256)
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
LR_SCHEDULES = ("constant", "cosine", "one_cycle", "plateau")
PLATEAU_FACTOR = (0.1, 0.5)
PLATEAU_PATIENCE = (1, 5)
SHIRT_WEIGHT = (1.5, 4.0)
# Searched only with lr_schedule "plateau".
PLATEAU_PARAMS = ("plateau_factor", "plateau_patience")
LABEL_SMOOTHING = (0.0, 0.2)
L2 = (1e-6, 1e-2)
DROPOUT = (0.0, 0.5)
MIX = ("none", "mixup", "cutmix")
MIX_PROB = (0.1, 1.0)
MIX_ALPHA = (0.1, 2.0)
SWITCH = (False, True)
# The shared hyperparameters at the settings most published models use: Adam at 1e-3, batches
# of 128, no schedule, no smoothing, no augmentation. Each space's DEFAULTS start from these.
COMMON_DEFAULTS: dict[str, Any] = {
    "learning_rate": 1e-3, "batch_size": 128, "optimizer": "adam", "lr_schedule": "constant",
    "label_smoothing": 0.0, "class_weights": False, "mix": "none", "shift": False,
    "rotation": False, "zoom": False, "flip": False, "erasing": False, "shear": False,
}  # fmt: skip
# A search whose trials train fewer epochs than this searches without augmentation: in so few
# epochs it costs more accuracy than it buys (make run's 5-epoch mlp search ended 2.5 points
# under a plain MLP with it searched, see benchmarks/results/first_run.md).
AUGMENTED_MIN_EPOCHS = 10
NO_AUGMENTATION: dict[str, Any] = {
    "mix": "none", "shift": False, "rotation": False, "zoom": False, "flip": False,
    "erasing": False, "shear": False,
}  # fmt: skip
SHIFT_FACTOR = (0.02, 0.15)
ROTATION_DEGREES = (2.0, 20.0)
ZOOM_FACTOR = (0.02, 0.2)
ERASING_PROB = (0.1, 0.5)
SHEAR_FACTOR = (0.02, 0.2)


def suggest_training(trial: optuna.Trial) -> dict[str, Any]:
    """Suggest the optimisation hyperparameters every Keras space shares."""
    params: dict[str, Any] = {
        "learning_rate": trial.suggest_float("learning_rate", *LEARNING_RATE, log=True),
        "batch_size": trial.suggest_categorical("batch_size", BATCH_SIZES),
        "optimizer": trial.suggest_categorical("optimizer", OPTIMIZERS),
        "lr_schedule": trial.suggest_categorical("lr_schedule", LR_SCHEDULES),
    }
    if params["lr_schedule"] == "plateau":
        params["plateau_factor"] = trial.suggest_float("plateau_factor", *PLATEAU_FACTOR)
        params["plateau_patience"] = trial.suggest_int("plateau_patience", *PLATEAU_PATIENCE)
    params["label_smoothing"] = trial.suggest_float("label_smoothing", *LABEL_SMOOTHING)
    params["class_weights"] = trial.suggest_categorical("class_weights", SWITCH)
    if params["class_weights"]:
        params["shirt_weight"] = trial.suggest_float("shirt_weight", *SHIRT_WEIGHT)
    return params


def suggest_augmentation(trial: optuna.Trial) -> dict[str, Any]:
    """Suggest the shared augmentation: batch mixing and the classic transformations."""
    params: dict[str, Any] = {"mix": trial.suggest_categorical("mix", MIX)}
    if params["mix"] != "none":
        params["mix_prob"] = trial.suggest_float("mix_prob", *MIX_PROB)
        params["mix_alpha"] = trial.suggest_float("mix_alpha", *MIX_ALPHA, log=True)
    strengths = {
        "shift": ("shift_factor", SHIFT_FACTOR),
        "rotation": ("rotation_degrees", ROTATION_DEGREES),
        "zoom": ("zoom_factor", ZOOM_FACTOR),
        "flip": None,
        "erasing": ("erasing_prob", ERASING_PROB),
        "shear": ("shear_factor", SHEAR_FACTOR),
    }
    for switch, strength in strengths.items():
        params[switch] = trial.suggest_categorical(switch, SWITCH)
        if params[switch] and strength is not None:
            name, bounds = strength
            params[name] = trial.suggest_float(name, *bounds)
    return params


def short_search_fixes(max_epochs: int, *, named: set[str]) -> dict[str, Any]:
    """Augmentation switched off for a search of fewer than ``AUGMENTED_MIN_EPOCHS`` epochs,
    except the switches in ``named`` (the user pinned or narrowed them)."""
    if max_epochs >= AUGMENTED_MIN_EPOCHS:
        return {}
    return {k: v for k, v in NO_AUGMENTATION.items() if k not in named}


def short_run_start(space: Any) -> dict[str, Any]:
    """``space``'s published configuration retuned for a run of a few epochs: a cosine
    schedule that anneals to zero by the last epoch, twice the learning rate, batches of 64,
    then the space's own ``SHORT_RUN`` changes where it has them.

    Each change, and the three together most, beat the published configuration at 5 epochs
    on 10,000 images (docs/searching.md, "Short searches").
    """
    # The cosine schedule has none of the plateau schedule's settings (vggbn's recipe has).
    defaults = {k: v for k, v in space.DEFAULTS.items() if k not in PLATEAU_PARAMS}
    rate = min(2 * defaults["learning_rate"], LEARNING_RATE[1])
    return {
        **defaults, "lr_schedule": "cosine", "learning_rate": rate, "batch_size": 64,
        **space.SHORT_RUN,
    }  # fmt: skip


def suggest_keras_common(trial: optuna.Trial) -> dict[str, Any]:
    """Everything every Keras space searches besides its architecture."""
    return {**suggest_training(trial), **suggest_augmentation(trial)}


def suggest_regularization(trial: optuna.Trial) -> dict[str, Any]:
    """Suggest the shared regularisation hyperparameters (``use_l2`` with ``l2``,
    ``dropout``)."""
    params: dict[str, Any] = {"use_l2": trial.suggest_categorical("use_l2", SWITCH)}
    if params["use_l2"]:
        params["l2"] = trial.suggest_float("l2", *L2, log=True)
    params["dropout"] = trial.suggest_float("dropout", *DROPOUT)
    return params


def kernel_l2(params: dict[str, Any]) -> keras.regularizers.Regularizer | None:
    """The L2 penalty ``params`` ask for (None with ``use_l2`` off). Configurations stored
    before ``use_l2`` existed always had one."""
    import keras

    if not params.get("use_l2", True):
        return None
    return keras.regularizers.L2(params["l2"])


def image_input(input_shape: tuple[int, ...]) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The model's input and its scaled view.

    Models take raw pixel values (0 to 255) and scale inside the graph, so a saved model
    carries its own preprocessing.
    """
    import keras

    inputs = keras.Input(shape=input_shape, name="image")
    return inputs, keras.layers.Rescaling(1.0 / 255.0, name="scale")(inputs)


def batch_norm() -> keras.layers.BatchNormalization:
    """BatchNorm whose moving statistics settle within a short trial.

    Keras' default momentum (0.99) needs about 500 steps before the inference-time statistics
    match the data: a 5-epoch trial on 5,000 images (200 steps) then validates at chance
    (measured: 10% validation accuracy at 75% training accuracy). 0.9, PyTorch's default,
    settles in about 50 steps.
    """
    import keras

    return keras.layers.BatchNormalization(momentum=0.9)


def classifier_head(x: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    """Softmax output, kept in float32 so mixed precision never rounds the probabilities."""
    import keras

    return keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probs")(x)


# scikit-learn spaces: models on the flattened pixels (scaled to 0..1), with optional PCA.
PCA_COMPONENTS = (0, 16, 32, 64, 128)


def suggest_pca(trial: optuna.Trial) -> dict[str, Any]:
    """Suggest ``pca_components``: PCA in front of the model, 0 for none."""
    return {"pca_components": trial.suggest_categorical("pca_components", PCA_COMPONENTS)}


def sklearn_pipeline(params: dict[str, Any], estimator: Any) -> Any:
    """``estimator`` behind PCA with ``params["pca_components"]`` components (0: no PCA)."""
    from sklearn.decomposition import PCA
    from sklearn.pipeline import Pipeline

    n = params["pca_components"]
    pca = PCA(n_components=n, random_state=0) if n else "passthrough"
    return Pipeline([("pca", pca), ("model", estimator)])
