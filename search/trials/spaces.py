"""The space a study's trials come from, where it is not an architecture's own: a fine-tuning
study's grid over a trained model's weights (:class:`FineTuneSpace`), or an architecture whose
backbone starts from pretrained weights (:class:`PretrainedSpace`, ``fmsearch run --weights``).

Each is used like a space module (``suggest``, ``build``). A study keeps what rebuilds its space
(``FINETUNE_ATTR``, its settings' ``weights``), so that ``fmsearch worker`` processes anywhere
rebuild the same one (:func:`study_space`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from runners.errors import FmsearchError
from search.names import FINETUNE_ATTR, SETTINGS_ATTR
from spaces import ARCHITECTURES, resolve

if TYPE_CHECKING:
    import keras
    import optuna

    from search.tracking import Tracker

logger = logging.getLogger(__name__)
# The source recipe's fine-tuning grid (spaces.recipes, resnet-2block's source).
DEFAULT_GRID: dict[str, tuple[Any, ...]] = {
    "learning_rate": (1e-5, 5e-6),
    "batch_size": (32, 64),
    "patience": (2, 3),
}
# What a fine-tuning grid may vary; "patience" is the trial's early-stopping patience.
GRID_NAMES = ("learning_rate", "batch_size", "patience")


@dataclass(frozen=True)
class FineTuneSpec:
    """Where a fine-tuning study starts.

    Attributes:
        arch: The architecture.
        params: The source model's configuration (its trial's params).
        model_uri: The Keras model its trial logged (the weights every trial starts from).
        grid: Name -> the values the study tries.
        source: The registered version it came from, in words.
    """

    arch: str
    params: dict[str, Any]
    model_uri: str
    grid: dict[str, tuple[Any, ...]]
    source: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> FineTuneSpec:
        data = json.loads(text)
        data["grid"] = {k: tuple(v) for k, v in data["grid"].items()}
        return cls(**data)

    def points(self) -> list[dict[str, Any]]:
        """Every combination of the grid, each a trial."""
        from search.trials.choices import combinations

        return combinations(self.grid)


class FineTuneSpace:
    """A fine-tuning study's space: the source configuration with the grid's values, built
    with the source model's weights. Used like a space module (``suggest``, ``build``)."""

    KIND = "keras"
    REQUIRES = None
    SHORT_RUN: ClassVar[dict[str, Any]] = {}
    BACKBONE = None

    def __init__(self, spec: FineTuneSpec, *, load_model: Callable[[str], keras.Model]) -> None:
        self._spec = spec
        self._base = ARCHITECTURES[spec.arch]
        self._load_model = load_model
        self._weights: list | None = None
        self.DEFAULTS = dict(spec.params)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        tuned = {name: trial.suggest_categorical(name, list(values))
                 for name, values in self._spec.grid.items()}  # fmt: skip
        return {**self._spec.params, "lr_schedule": "constant", **tuned}

    def build(
        self, params: dict[str, Any], *, input_shape: tuple[int, ...] = (28, 28, 1),
        num_classes: int = 10,
    ) -> keras.Model:  # fmt: skip
        model = self._base.build(params, input_shape=input_shape, num_classes=num_classes)
        if self._weights is None:  # loaded once per process
            self._weights = self._load_model(self._spec.model_uri).get_weights()
        model.set_weights(self._weights)
        return model


class PretrainedSpace:
    """A space (one with ``BACKBONE``) whose models start from pretrained backbone weights in
    ``weights_file``: Keras' legacy ``.h5`` (ImageNet's) or a ``.weights.h5`` saved by
    ``save_weights``."""

    KIND = "keras"
    REQUIRES = None

    def __init__(self, base: Any, weights_file: str) -> None:
        self._base = base
        self._weights_file = weights_file
        self.DEFAULTS = base.DEFAULTS
        self.SHORT_RUN = base.SHORT_RUN
        self.BACKBONE = base.BACKBONE

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        return self._base.suggest(trial)

    def build(self, params: dict[str, Any], **shape: Any) -> keras.Model:
        model = self._base.build(params, **shape)
        model.get_layer(self._base.BACKBONE).load_weights(self._weights_file)
        return model


def pretrained_weights(space: Any, *, given: Path | None, arch: str) -> str | None:
    """The pretrained weights a search of ``space`` starts from: ``given`` (``--weights``),
    else the Keras cache's ImageNet file where present, else None (from scratch, logged).

    Raises:
        FmsearchError: ``given`` for a space without a pretrained backbone, or missing.
    """
    if space.BACKBONE is None:
        if given is not None:
            raise FmsearchError(
                f"--weights: expected an architecture with a pretrained backbone "
                f"({', '.join(a for a, s in ARCHITECTURES.items() if s.BACKBONE)}), "
                f"got --arch {arch}"
            )
        return None
    if given is not None:
        if not Path(given).is_file():
            raise FmsearchError(f"--weights: expected a weights file, got {str(given)!r}")
        return str(Path(given).resolve())
    cached = Path.home() / ".keras" / "models" / space.IMAGENET_WEIGHTS
    if cached.is_file():
        return str(cached)
    logger.warning(
        "%s trains from scratch: no --weights and no ImageNet weights at %s", arch, cached
    )
    return None


def study_space(study: optuna.Study, *, arch: str, tracker: Tracker) -> Any:
    """The space a study's trials come from: its fine-tuning space, ``--arch``'s with its
    pretrained weights, or ``--arch``'s."""
    text = study.user_attrs.get(FINETUNE_ATTR)
    if text is not None:
        return FineTuneSpace(FineTuneSpec.from_json(text), load_model=tracker.load_keras_model)
    weights = study.user_attrs.get(SETTINGS_ATTR, {}).get("weights")
    return resolve(arch) if weights is None else PretrainedSpace(resolve(arch), weights)


def check_grid(grid: Mapping[str, Sequence[Any]]) -> dict[str, tuple[Any, ...]]:
    """``grid`` with every axis checked: a known name, at least one value, positive values."""
    checked = {}
    for name, values in grid.items():
        if name not in GRID_NAMES:
            raise FmsearchError(
                f"fine-tuning grid: expected names among {', '.join(GRID_NAMES)}, got {name!r}"
            )
        values = tuple(values)
        if not values or any(v <= 0 for v in values):
            raise FmsearchError(
                f"fine-tuning grid {name}: expected positive values, got {list(values)}"
            )
        checked[name] = values
    return checked
