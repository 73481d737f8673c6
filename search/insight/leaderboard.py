"""The leaderboard: the champion of every fmsearch model judged again on the test set,
logged to the ``fmsearch-leaderboard`` experiment."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from runners.data import CLASS_NAMES
from runners.errors import FmsearchError
from runners.metrics import evaluate_predictions, measure_latency
from search.names import ROLE_TAG, SOURCE_RUN_TAG, STUDY_TAG

if TYPE_CHECKING:
    from search.tracking import Tracker

logger = logging.getLogger(__name__)


LEADERBOARD_EXPERIMENT = "fmsearch-leaderboard"


@dataclass(frozen=True)
class Entry:
    """One registered model, judged on the test set.

    Attributes:
        model_name: The registered model.
        version: Its champion version.
        study: The study it came from.
        accuracy: Test accuracy, recomputed from the registered model.
        macro_precision: Precision averaged over classes with equal weight.
        macro_recall: Recall, likewise.
        macro_f1: F1, likewise.
        n_params: Trainable and fixed parameters (None for scikit-learn models).
        train_seconds: Training time of the trial that made it.
        latency_ms: Milliseconds per image of the served model on a 256-image batch.
    """

    model_name: str
    version: str
    study: str
    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    n_params: int | None
    train_seconds: float | None
    latency_ms: float


def build_leaderboard(
    *,
    tracker: Tracker,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    model_names: Sequence[str] = (),
) -> list[Entry]:
    """Judge the champion of each registered fmsearch model (or of ``model_names``), best first.

    Raises:
        FmsearchError: No champion found, or a named model has none.
    """
    if model_names:
        versions = []
        for name in model_names:
            version = tracker.version_by_alias(name, "champion")
            if version is None:
                raise FmsearchError(f"model {name!r} has no champion: expected a promoted model")
            versions.append(version)
    else:
        versions = tracker.champions()
    if not versions:
        raise FmsearchError(
            f"no registered fmsearch model has a champion in {tracker.tracking_uri}: "
            "run `fmsearch run` (which promotes) first"
        )
    entries = []
    for version in versions:
        model = tracker.load_served_model(f"models:/{version.name}@champion")
        predicted = model.predict(test_images)["class_index"].to_numpy()
        evaluation = evaluate_predictions(test_labels, predicted, class_names=CLASS_NAMES)
        macro = evaluation.report["macro avg"]
        trial_metrics = {}
        source = version.tags.get(SOURCE_RUN_TAG)
        if source:
            try:
                trial_metrics = tracker.run_metrics(source)
            except Exception:  # the trial's run is gone: the model still ranks
                logger.warning("trial run %s of %s not found", source, version.name)
        n_params = trial_metrics.get("n_params")
        entries.append(
            Entry(
                model_name=version.name,
                version=str(version.version),
                study=version.tags.get(STUDY_TAG, ""),
                accuracy=evaluation.accuracy,
                macro_precision=float(macro["precision"]),
                macro_recall=float(macro["recall"]),
                macro_f1=float(macro["f1-score"]),
                n_params=int(n_params) if n_params is not None else None,
                train_seconds=trial_metrics.get("train_seconds"),
                latency_ms=measure_latency(model.predict, test_images),
            )
        )
    return sorted(entries, key=lambda e: (-e.accuracy, e.model_name))


def leaderboard_csv(entries: Sequence[Entry]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(Entry.__dataclass_fields__))
    writer.writeheader()
    for entry in entries:
        writer.writerow(asdict(entry))
    return buffer.getvalue()


def publish_leaderboard(
    *, entries: Sequence[Entry], tracker: Tracker, csv_path: Path, n_images: int
) -> str:
    """Write the CSV and log it, the bar chart and the table to a leaderboard run."""
    from runners.figures import bar_chart

    csv_path.parent.mkdir(parents=True, exist_ok=True)
    csv_path.write_text(leaderboard_csv(entries), encoding="utf-8")
    run_id = tracker.start_insight_run(
        experiment=LEADERBOARD_EXPERIMENT, run_name="leaderboard", tags={ROLE_TAG: "leaderboard"}
    )
    figure = bar_chart(
        [e.model_name.removeprefix("fmsearch-") for e in entries],
        [e.accuracy for e in entries],
        ylabel="test accuracy",
        title=f"Champions on the {n_images} held-out test images",
    )
    tracker.log_figures(run_id, {"test_accuracy": figure})
    tracker.log_files(run_id, [csv_path])
    tracker.log_metrics(run_id, {f"{e.model_name}.test_accuracy": e.accuracy for e in entries})
    tracker.end_run(run_id, status="FINISHED")
    return run_id


def entry_row(entry: Entry) -> dict[str, Any]:
    """An entry as the terminal table shows it."""
    return {
        "model": entry.model_name,
        "version": entry.version,
        "accuracy": f"{entry.accuracy:.4f}",
        "precision": f"{entry.macro_precision:.4f}",
        "recall": f"{entry.macro_recall:.4f}",
        "f1": f"{entry.macro_f1:.4f}",
        "params": "-" if entry.n_params is None else f"{entry.n_params:,}",
        "train_s": "-" if entry.train_seconds is None else f"{entry.train_seconds:.0f}",
        "ms/image": f"{entry.latency_ms:.3f}",
    }
