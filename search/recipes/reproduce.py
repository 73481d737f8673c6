"""``fmsearch reproduce RECIPE``: train one source recipe at its published settings and set
what it got beside what its source published.

A reproduction is a study of one trial, the recipe enqueued (Optuna's random sampler, no
pruning, the recipe's epochs and early-stopping patience), tracked and promoted like any study
but registered under its own name (``fmsearch-RECIPE``), so that it never displaces an
architecture's champion. Its parent run carries the recipe's name and ``reproduction.json``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from runners.errors import FmsearchError
from search.names import EPOCHS_ATTR, OUT_OF_TIME_ATTR, RECIPE_TAG
from spaces.recipes import Recipe, recipe


@dataclass(frozen=True)
class Reproduction:
    """One recipe trained as published, and what it reached.

    Attributes:
        name: The recipe's name.
        recipe: The recipe.
        study_name: The study (and MLflow experiment) it ran in.
        test_accuracy: The trained model's accuracy on the 10,000 test images.
        test_loss: Its cross-entropy there.
        epochs: Epochs it trained (None: a scikit-learn model).
        planned_epochs: Epochs it was to train at most.
        time_boxed: The time box ended its training early.
        seconds: What the whole reproduction took.
    """

    name: str
    recipe: Recipe
    study_name: str
    test_accuracy: float
    test_loss: float | None
    epochs: int | None
    planned_epochs: int | None
    time_boxed: bool
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        r = self.recipe
        return {
            "recipe": self.name, "arch": r.arch, "source": r.source, "study": self.study_name,
            "published_accuracy": r.published_accuracy, "test_accuracy": self.test_accuracy,
            "published_loss": r.published_loss, "test_loss": self.test_loss,
            "epochs": self.epochs, "planned_epochs": self.planned_epochs,
            "patience": r.patience, "time_boxed": self.time_boxed, "seconds": self.seconds,
            "note": r.note,
        }  # fmt: skip

    def describe(self) -> str:
        """Published against obtained, as the CLI prints it."""

        def figure(value: float | None, fmt: str) -> str:
            return "-" if value is None else format(value, fmt)

        r = self.recipe
        trained = "-" if self.epochs is None else f"{self.epochs} of {self.planned_epochs}"
        if self.time_boxed:
            trained += " (time-boxed)"
        lines = [
            f"recipe {self.name} ({r.arch}, source: {r.source}), study {self.study_name}:",
            f"  {'':<14}{'published':>10}  {'obtained':>10}",
            f"  {'test accuracy':<14}{figure(r.published_accuracy, '.2%'):>10}  "
            f"{self.test_accuracy:>10.2%}",
            f"  {'test loss':<14}{figure(r.published_loss, '.3f'):>10}  "
            f"{figure(self.test_loss, '.3f'):>10}",
            f"  epochs trained: {trained}; took {self.seconds / 60:.1f} min",
        ]
        if r.note:
            lines.append(f"  not stated by the source: {r.note}")
        return "\n".join(lines)


def _checked(name: str, *, study_name: str | None, storage: str | None) -> Recipe:
    """Recipe ``name``, refused when unknown or when ``study_name`` exists already."""
    try:
        found = recipe(name)
    except KeyError as e:
        raise FmsearchError(f"recipe: {e.args[0]}") from None
    if study_name is not None:
        import optuna

        from search.storage.urls import default_storage

        if study_name in optuna.get_all_study_names(storage or default_storage()):
            raise FmsearchError(
                f"--study-name: expected a new study (a reproduction is one trial of the "
                f"recipe), got {study_name!r}, which exists"
            )
    return found


def reproduce(
    name: str,
    *,
    epochs: int | None = None,
    time_box_hours: float | None = None,
    subset: int | None = None,
    val_size: int = 10_000,
    seed: int | None = None,
    study_name: str | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    data_dir: Path | None = None,
    precision: str = "auto",
    threads: int | None = None,
    quiet: bool = False,
) -> Reproduction:
    """Train recipe ``name`` at its published settings and judge it on the test set.

    Args:
        name: A key of ``spaces.recipes.RECIPES``.
        epochs: Train this many epochs instead of the recipe's (Keras recipes).
        time_box_hours: End the training after the epoch during which this much time passed
            (the result says it was time-boxed).
        subset: Train on this many training images instead of all of them.
        val_size, seed, storage, tracking_uri, data_dir, precision, threads, quiet: as for
            :func:`search.api.search`.
        study_name: A new study; default ``reproduce-NAME-<date and time>``.

    Raises:
        FmsearchError: An unknown recipe, a study that exists, or a training that failed.
    """
    from search.run.config import SearchOptions
    from search.run.orchestrator import run_search
    from search.run.start import open_tracker

    found = _checked(name, study_name=study_name, storage=storage)
    # Keras recipes train by epochs; scikit-learn ones have none.
    planned_epochs = None if found.epochs is None else epochs or found.epochs
    start = time.time()
    result = run_search(SearchOptions(
        arch=found.arch, trials=1, enqueue=name, sampler="random", pruner="none",
        max_epochs=planned_epochs or 1, patience=found.patience or 0, subset=subset,
        val_size=val_size, seed=seed, budget_hours=time_box_hours,
        study_name=study_name or f"reproduce-{name}-{time.strftime('%Y%m%d-%H%M%S')}",
        storage=storage, tracking_uri=tracking_uri, data_dir=data_dir, precision=precision,
        threads=threads, register_as=f"fmsearch-{name}", quiet=quiet,
    ))  # fmt: skip
    (trial,) = result.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if result.promotion is None:
        raise FmsearchError(f"recipe {name}: its trained model was not promoted")
    reproduction = Reproduction(
        name=name,
        recipe=found,
        study_name=result.study_name,
        test_accuracy=result.promotion.test_accuracy,
        test_loss=result.promotion.test_loss,
        epochs=trial.user_attrs.get(EPOCHS_ATTR) if planned_epochs else None,
        planned_epochs=planned_epochs,
        time_boxed=bool(trial.user_attrs.get(OUT_OF_TIME_ATTR)),
        seconds=time.time() - start,
    )
    tracker = open_tracker(tracking_uri)
    parent = tracker.study_run_id(result.study_name)
    if parent is not None:
        tracker.set_tags(parent, {RECIPE_TAG: name})
        tracker.log_json(parent, reproduction.as_dict(), "reproduction.json")
    return reproduction
