"""Trials that start from trained weights: ``fmsearch finetune`` (a registered model trained
further) and transfer learning (a space's pretrained backbone, ``fmsearch run --weights``).

``fmsearch finetune --model models:/NAME@champion``: a trained model trained further.

A fine-tuning study searches a grid (every combination once, as ``--sampler grid`` does) of
learning rate x batch size x early-stopping patience, by default the source recipe's
{1e-5, 5e-6} x {32, 64} x {2, 3}. Every trial starts from the model's trained weights (its
architecture built again from its configuration, then its weights set) and trains at a
constant rate. The grid is the study's own space (:class:`FineTuneSpace`), so fine-tuning
rates far below an architecture's search range never widen the space of fresh studies.

The study keeps where it came from (``FINETUNE_ATTR``), so that ``fmsearch worker`` processes
anywhere rebuild the same space. Its trials are tracked like any; its best model is promoted
under the source model's registered name, and takes the ``champion`` alias only by beating the
champion on the test set.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runners.errors import FmsearchError
from search.kinds import runner_for
from search.names import (
    ARCH_ATTR,
    FINETUNE_ATTR,
    FINETUNE_OF_TAG,
    FLAVOR_TAG,
    MEMBERS_TAG,
    MODEL_URI_TAG,
    RUN_ID_ATTR,
    SETTINGS_ATTR,
    SOURCE_TRIAL_TAG,
    STUDY_TAG,
)
from spaces import ARCHITECTURES, resolve

if TYPE_CHECKING:
    import keras
    import optuna

    from search.api import SearchResult
    from search.tracking import Tracker

logger = logging.getLogger(__name__)

# The source recipe's fine-tuning grid (93.23% from a 90.94% ResNet).
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
        from search.choices import combinations

        return combinations(self.grid)


class FineTuneSpace:
    """A fine-tuning study's space: the source configuration with the grid's values, built
    with the source model's weights. Used like a space module (``suggest``, ``build``)."""

    KIND = "keras"

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

    def __init__(self, base: Any, weights_file: str) -> None:
        self._base = base
        self._weights_file = weights_file
        self.DEFAULTS = base.DEFAULTS

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
    if not hasattr(space, "BACKBONE"):
        if given is not None:
            raise FmsearchError(
                f"--weights: expected an architecture with a pretrained backbone "
                f"({', '.join(a for a, s in ARCHITECTURES.items() if hasattr(s, 'BACKBONE'))}), "
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


def spec_for(
    model_uri: str, *, tracker: Tracker, storage: str, grid: Mapping[str, Sequence[Any]]
) -> tuple[FineTuneSpec, str, str]:
    """What fine-tuning the registered model ``model_uri`` starts from; also its registered
    name and its study's name.

    Raises:
        FmsearchError: Not a registered version of a single Keras model trained by an fmsearch
            study in ``storage``.
    """
    import optuna

    version = tracker.version_of(model_uri)
    tags = version.tags
    if tags.get(MEMBERS_TAG):
        raise FmsearchError(
            f"finetune: expected a single model, got an ensemble of trials {tags[MEMBERS_TAG]} "
            f"at {model_uri}"
        )
    try:
        study = optuna.load_study(study_name=tags.get(STUDY_TAG, ""), storage=storage)
    except KeyError:
        raise FmsearchError(
            f"finetune: expected the study of {model_uri} ({tags.get(STUDY_TAG)!r}) in "
            f"{storage}, got none"
        ) from None
    arch = study.user_attrs.get(ARCH_ATTR, "")
    space = ARCHITECTURES.get(arch)
    # Fine-tuning continues a model's training from its weights, by epochs.
    runner = runner_for(space) if space is not None else None
    if runner is None or not runner.trains_in_epochs:
        raise FmsearchError(
            f"finetune: expected a model of one Keras architecture, got --arch {arch} ({model_uri})"
        )
    trial = study.trials[int(tags[SOURCE_TRIAL_TAG])]
    run_tags = tracker.run_tags(trial.user_attrs[RUN_ID_ATTR])
    if run_tags.get(FLAVOR_TAG, runner.kind) != runner.kind or MODEL_URI_TAG not in run_tags:
        raise FmsearchError(f"finetune: expected a Keras model, got none at {model_uri}")
    spec = FineTuneSpec(
        arch=arch,
        params=dict(trial.params),
        model_uri=run_tags[MODEL_URI_TAG],
        grid=check_grid(grid),
        source=f"{version.name} version {version.version} (study {study.study_name}, trial "
        f"{trial.number})",
    )
    return spec, version.name, study.study_name


def finetune(
    *,
    model_uri: str,
    grid: Mapping[str, Sequence[Any]] | None = None,
    study_name: str | None = None,
    max_epochs: int = 10,
    storage: str | None = None,
    tracking_uri: str | None = None,
    subset: int | None = None,
    val_size: int = 10_000,
    seed: int | None = None,
    data_dir: Path | None = None,
    precision: str = "auto",
    threads: int | None = None,
    register_as: str | None = None,
    promote: bool = True,
    quiet: bool = False,
) -> SearchResult:
    """Fine-tune the registered Keras model ``model_uri`` over ``grid`` (default
    :data:`DEFAULT_GRID`), each trial from its trained weights; promote the best.

    Args:
        model_uri: ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``.
        grid: Name -> values, names among :data:`GRID_NAMES`.
        study_name: The study; default ``<source study>-finetune``.
        max_epochs: Epochs a trial trains at most (its patience may end it sooner).
        register_as: Registered model name; default the source's, so that the fine-tuned
            model competes with it for ``champion``.
        storage, tracking_uri, subset, val_size, seed, data_dir, precision, threads, promote,
            quiet: as for :func:`search.api.search` (the storage must hold the source study).

    Raises:
        FmsearchError: See :func:`spec_for`; and what :func:`search.api.search` raises.
    """
    from search import api
    from search.pipeline import SearchOptions
    from search.urls import default_storage

    tracker = api.open_tracker(tracking_uri)
    storage = storage or default_storage()
    spec, name, source_study = spec_for(
        model_uri, tracker=tracker, storage=storage, grid=DEFAULT_GRID if grid is None else grid
    )
    points = spec.points()
    options = SearchOptions(
        arch=spec.arch, trials=len(points), study_name=study_name or f"{source_study}-finetune",
        storage=storage, tracking_uri=tracking_uri, sampler="grid", pruner="none", seed=seed,
        max_epochs=max_epochs, subset=subset, val_size=val_size, enqueue=False,
        data_dir=data_dir, precision=precision, threads=threads, register_as=register_as or name,
        promote=promote, quiet=quiet,
    )  # fmt: skip
    logger.info("fine-tuning %s: %d trials", spec.source, len(points))

    def keep_source(study: optuna.Study) -> None:
        study.set_user_attr(FINETUNE_ATTR, spec.to_json())

    result = api.run_search(options, grid=points, prepare=keep_source)
    parent = tracker.study_run_id(result.study_name)
    if parent is not None:
        tracker.set_tags(parent, {FINETUNE_OF_TAG: spec.source})
        tracker.log_json(parent, asdict(spec), "finetune.json")
    return result
