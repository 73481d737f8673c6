"""The source projects' published configurations, by name: ``RECIPES`` is the one registry.

fmsearch's spaces were drawn from five published Fashion-MNIST projects. A recipe is one of
their configurations in a space's own names, so ``fmsearch run --enqueue RECIPE`` starts a
study from it and ``fmsearch reproduce RECIPE`` trains it alone at its published settings.
Where a source leaves a setting unstated, the recipe says what fmsearch chose (``note``).

Sources:
    keras-basics: MLP (2 hidden), DNN (3 hidden), DNN + L2, CNN (3 conv + 2 dropout, 91.27%),
        2-layer LSTM + L2, ResNet (1 conv + 2 residual blocks + L2 dense head, 91.59%); Adam.
    tinyvgg: TinyVGG (3 conv, 2 max-pool), Adam at 1e-3 from an LR range test, 25 epochs:
        90.02%, test loss 0.372.
    vgg-bn: VGG-style CNN with BatchNorm, augmentation, plateau schedule: 94.87%; ResNet50V2
        transfer on 85x85x3 upscaled images with ImageNet weights.
    classic-ml: random forest, kNN, XGBoost on PCA features; MiniCNN.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from spaces import (
    cnn,
    dnn,
    forest,
    knn,
    minicnn,
    mlp,
    resnet,
    resnet50v2,
    rnn,
    tinyvgg,
    vggbn,
)
from spaces import xgboost as xgboost_space

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """One published configuration.

    Attributes:
        arch: The space (a key of ``spaces.ARCHITECTURES``).
        params: The whole configuration, as the space's ``suggest`` returns it.
        source: Which project published it (see the module's docstring).
        epochs: Epochs the source trained (Keras; None for scikit-learn).
        patience: The source's early-stopping patience in epochs (None: none).
        published_accuracy: The source's test accuracy (None: not stated for this model).
        published_loss: The source's test loss (None: not stated).
        layers: The source's layer list, as :func:`layer_signature` writes it (empty: the
            source gives none).
        note: What the source leaves unstated and fmsearch chose.
    """

    arch: str
    params: Mapping[str, Any]
    source: str
    epochs: int | None = None
    patience: int | None = None
    published_accuracy: float | None = None
    published_loss: float | None = None
    layers: tuple[str, ...] = field(default=())
    note: str = ""


_ADAM = {"optimizer": "adam", "learning_rate": 1e-3, "lr_schedule": "constant"}
_PLAIN = {**mlp.DEFAULTS, **_ADAM}


def _without(params: Mapping[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in names}


# fmt: off
RECIPES: dict[str, Recipe] = {
    "mlp-2hidden": Recipe(
        arch="mlp",
        params=dict(_PLAIN),
        source="keras-basics",
        epochs=20,
        note="units 256-128, dropout 0.2, batch 128 and 20 epochs are fmsearch's; the source "
        "states 83-92% for its six models together",
    ),
    "dnn-3hidden": Recipe(
        arch="dnn",
        params={**_without(dnn.DEFAULTS, "l2"), **_ADAM, "batchnorm": False, "use_l2": False},
        source="keras-basics",
        epochs=20,
        note="units 512-256-128, dropout 0.3, batch 128 and 20 epochs are fmsearch's",
    ),
    "dnn-l2": Recipe(
        arch="dnn",
        params={**dnn.DEFAULTS, **_ADAM, "batchnorm": False, "use_l2": True, "l2": 1e-3},
        source="keras-basics",
        epochs=20,
        note="L2 1e-3 (Keras' own default strength), units, dropout, batch and epochs are "
        "fmsearch's",
    ),
    "cnn-3conv": Recipe(
        arch="cnn",
        params={**cnn.DEFAULTS, **_ADAM},
        source="keras-basics",
        epochs=20,
        published_accuracy=0.9127,
        layers=(
            "Conv2D(32)", "MaxPooling2D", "Conv2D(64)", "MaxPooling2D", "Dropout(0.3)",
            "Conv2D(128)", "Dense(128)", "Dropout(0.3)", "Dense(10)",
        ),
        note="filters 32-64-128, dense 128, dropout 0.3, batch 128 and 20 epochs are "
        "fmsearch's",
    ),
    "rnn-lstm2-l2": Recipe(
        arch="rnn",
        params={**rnn.DEFAULTS, **_ADAM, "use_l2": True, "l2": 1e-4},
        source="keras-basics",
        epochs=20,
        note="128 units, L2 1e-4, dropout 0.2, batch 128 and 20 epochs are fmsearch's",
    ),
    "resnet-2block": Recipe(
        arch="resnet",
        params={
            **_without(resnet.DEFAULTS, "shift_factor"), **_ADAM, "n_stages": 1,
            "n_blocks": 2, "skip": True, "dropout": 0.0, "use_l2": True, "l2": 1e-4,
            "shift": False, "flip": False,
        },
        source="keras-basics",
        epochs=20,
        published_accuracy=0.9159,
        layers=(
            "Conv2D(32)", "BatchNormalization",
            *("Conv2D(32)", "BatchNormalization", "Conv2D(32)", "BatchNormalization", "Add") * 2,
            "GlobalAveragePooling2D", "Dense(128)", "Dense(10)",
        ),
        note="32 filters, dense 128, L2 1e-4 (on every kernel here, on the head in the "
        "source), batch 128 and 20 epochs are fmsearch's",
    ),
    "tinyvgg-25ep": Recipe(
        arch="tinyvgg",
        params={**tinyvgg.DEFAULTS, **_ADAM, "batch_size": 32},
        source="tinyvgg",
        epochs=25,
        published_accuracy=0.9002,
        published_loss=0.372,
        layers=(
            "Conv2D(10)", "Conv2D(10)", "MaxPooling2D", "Conv2D(10)", "MaxPooling2D", "Dense(10)",
        ),
        note="10 filters and batches of 32 (the CNN Explainer design's) are fmsearch's reading",
    ),
    "minicnn": Recipe(
        arch="minicnn",
        params={**minicnn.DEFAULTS, **_ADAM},
        source="classic-ml",
        epochs=20,
        note="filters, dense units, dropout, batch and epochs are fmsearch's",
    ),
    "vggbn-bn94": Recipe(
        arch="vggbn",
        params=dict(vggbn.DEFAULTS),
        source="vgg-bn",
        epochs=50,
        patience=10,
        published_accuracy=0.9487,
        layers=(
            *("Conv2D(64)", "BatchNormalization") * 2, "MaxPooling2D", "Dropout(0.25)",
            *("Conv2D(128)", "BatchNormalization") * 2, "MaxPooling2D", "Dropout(0.3)",
            *("Conv2D(256)", "BatchNormalization") * 2, "GlobalAveragePooling2D",
            "Dropout(0.4)", "Dense(256)", "BatchNormalization", "Dropout(0.4)", "Dense(10)",
        ),
        note="early stopping watches validation accuracy here, validation loss in the source",
    ),
    "resnet50v2-imagenet": Recipe(
        arch="resnet50v2",
        params=dict(resnet50v2.DEFAULTS),
        source="vgg-bn",
        epochs=10,
        note="ImageNet weights where the Keras cache has them (or --weights FILE); the frozen "
        "share, the head, Adam at 1e-4, batches of 64 and 10 epochs are fmsearch's",
    ),
    "forest-pca": Recipe(
        arch="forest",
        params={**forest.DEFAULTS, "pca_components": 64},
        source="classic-ml",
        note="64 PCA components and the forest's settings are fmsearch's",
    ),
    "knn-pca": Recipe(
        arch="knn",
        params={**knn.DEFAULTS, "pca_components": 64},
        source="classic-ml",
        note="64 PCA components and k=5 are fmsearch's",
    ),
    "xgboost-pca": Recipe(
        arch="xgboost",
        params={**xgboost_space.DEFAULTS, "pca_components": 64},
        source="classic-ml",
        note="64 PCA components and XGBoost's defaults (depth 6, 200 trees) are fmsearch's",
    ),
}
# fmt: on


def recipe(name: str) -> Recipe:
    """The recipe called ``name``.

    Raises:
        KeyError: No recipe has that name (the message lists them).
    """
    if name not in RECIPES:
        raise KeyError(f"expected one of {', '.join(RECIPES)}, got {name!r}")
    return RECIPES[name]


def layer_signature(model: keras.Model) -> tuple[str, ...]:
    """The layers that make a design, as a source lists them: convolutions and dense layers
    with their widths, pooling, BatchNorm, dropout with its rate (none at rate 0), residual
    additions and recurrent layers. Inputs, scaling, activations and reshapes are left out."""
    signature = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            signature.append(f"Conv2D({layer.filters})")
        elif kind in ("Dense", "LSTM", "GRU"):
            signature.append(f"{kind}({layer.units})")
        elif kind == "Dropout":
            if layer.rate:
                signature.append(f"Dropout({layer.rate:g})")
        elif kind in ("MaxPooling2D", "GlobalAveragePooling2D", "BatchNormalization", "Add"):
            signature.append(kind)
    return tuple(signature)
