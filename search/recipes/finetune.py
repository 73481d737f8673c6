"""``fmsearch finetune --model models:/NAME@champion``: a registered model trained further.

A fine-tuning study searches a grid (every combination once, as ``--sampler grid`` does) of
learning rate x batch size x early-stopping patience, by default the source recipe's
{1e-5, 5e-6} x {32, 64} x {2, 3}. Every trial starts from the model's trained weights (its
architecture built again from its configuration, then its weights set) and trains at a
constant rate. The grid is the study's own space (:class:`~search.trials.spaces.FineTuneSpace`),
so fine-tuning rates far below an architecture's search range never widen the space of fresh
studies.

Its trials are tracked like any; its best model is promoted under the source model's registered
name, and takes the ``champion`` alias only by beating the champion on the test set.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
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
    SOURCE_TRIAL_TAG,
    STUDY_TAG,
)
from search.trials.spaces import DEFAULT_GRID, FineTuneSpec, check_grid
from spaces import ARCHITECTURES

if TYPE_CHECKING:
    import optuna

    from search.run.orchestrator import SearchResult
    from search.tracking import Tracker

logger = logging.getLogger(__name__)


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
    from search.run.config import SearchOptions
    from search.run.orchestrator import run_search
    from search.run.start import open_tracker
    from search.storage.urls import default_storage

    tracker = open_tracker(tracking_uri)
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

    result = run_search(options, grid=points, prepare=keep_source)
    parent = tracker.study_run_id(result.study_name)
    if parent is not None:
        tracker.set_tags(parent, {FINETUNE_OF_TAG: spec.source})
        tracker.log_json(parent, asdict(spec), "finetune.json")
    return result
