"""Pictures across studies: the leaderboard of champions, the data set's EDA, explanations.

Each lands in an MLflow run of its own experiment (``fmsearch-leaderboard``, ``fmsearch-eda``,
``fmsearch-explain``), so the UI shows them beside the studies.
"""

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
from search.kinds import runner_for
from search.names import ARCH_TAG, INDEX_TAG, MODEL_URI_TAG, ROLE_TAG, SOURCE_RUN_TAG, STUDY_TAG

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from runners.data import FashionMNIST, Split
    from search.tracking import Tracker

logger = logging.getLogger(__name__)

LEADERBOARD_EXPERIMENT = "fmsearch-leaderboard"
EDA_EXPERIMENT = "fmsearch-eda"
EXPLAIN_EXPERIMENT = "fmsearch-explain"


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


def run_eda(*, data: FashionMNIST, split: Split, tracker: Tracker) -> tuple[str, dict]:
    """Log the class distribution of train/validation/test and samples of each class.

    Returns:
        The EDA run's id, and the per-split class counts it logged.
    """
    from runners.figures import class_distribution, samples_per_class

    counts = {
        "train": np.bincount(split.y_train, minlength=len(CLASS_NAMES)),
        "validation": np.bincount(split.y_val, minlength=len(CLASS_NAMES)),
        "test": np.bincount(data.y_test, minlength=len(CLASS_NAMES)),
    }
    run_id = tracker.start_insight_run(
        experiment=EDA_EXPERIMENT, run_name="eda", tags={ROLE_TAG: "eda"}
    )
    figures = {
        "class_distribution": class_distribution(
            counts, class_names=CLASS_NAMES, title="Fashion-MNIST: images per class and split"
        ),
        "samples_per_class": samples_per_class(data.x_train, data.y_train, class_names=CLASS_NAMES),
    }
    tracker.log_figures(run_id, figures)
    table = {
        split_name: dict(zip(CLASS_NAMES, map(int, values), strict=True))
        for split_name, values in counts.items()
    }
    tracker.log_json(run_id, table, "class_counts.json")
    tracker.log_metrics(run_id, {f"{k}_images": int(v.sum()) for k, v in counts.items()})
    tracker.end_run(run_id, status="FINISHED")
    return run_id, table


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


@dataclass(frozen=True)
class Explanation:
    """What ``fmsearch explain`` found for one test image.

    Attributes:
        run_id: The explain run holding the pictures.
        index: The test image's index.
        true_class: Its label.
        predicted_class: The model's class.
        confidence: The model's probability for it.
        files: The pictures written locally.
    """

    run_id: str
    index: int
    true_class: str
    predicted_class: str
    confidence: float
    files: list[Path]


def _embedding_figure(
    served: Any, images: np.ndarray, labels: np.ndarray, *, method: str, model_uri: str
) -> Figure:
    """The 2-D map (``method``) of the served model's penultimate features of ``images``."""
    from runners import explain as methods
    from runners.figures import embedding as embedding_figure

    wrapped = served.unwrap_python_model()
    features = methods.penultimate_features(wrapped.classifier, wrapped.flavor, images)
    points = methods.embed_2d(features, method=method)
    return embedding_figure(
        points,
        labels,
        class_names=CLASS_NAMES,
        title=f"{model_uri}: penultimate features of {len(points)} test images ({method})",
    )


def _check_embedding(embedding: str | None) -> None:
    """Refuse ``umap`` without its package (an optional extra), before any work."""
    import importlib.util

    if embedding == "umap" and importlib.util.find_spec("umap") is None:
        raise FmsearchError(
            "--embedding umap: expected the umap-learn package (pip install 'fmsearch[umap]'), "
            "got none installed"
        )


def explain(
    *,
    tracker: Tracker,
    model_uri: str,
    images: np.ndarray,
    labels: np.ndarray,
    index: int,
    output_dir: Path,
    lime_samples: int = 500,
    embedding: str | None = None,
    embedding_images: int = 2000,
) -> Explanation:
    """Explain the served model's prediction for test image ``index`` (occlusion and LIME),
    and with ``embedding`` (``pca``/``tsne``/``umap``) map its penultimate features of the test
    set.

    Raises:
        FmsearchError: ``index`` is outside the test set, the model does not load, or
            ``umap`` without the umap-learn package.
    """
    from runners import explain as methods
    from runners.figures import explanation as explanation_figure

    if not 0 <= index < len(images):
        raise FmsearchError(f"--index must be in 0..{len(images) - 1}, got {index}")
    _check_embedding(embedding)
    try:
        served = tracker.load_served_model(model_uri)
    except Exception as exc:
        raise FmsearchError(f"cannot load model {model_uri!r}: {exc}") from exc

    def predict_proba(batch: np.ndarray) -> np.ndarray:
        return served.predict(batch)[list(CLASS_NAMES)].to_numpy()

    image = images[index]
    probabilities = predict_proba(image[None])[0]
    target = int(probabilities.argmax())
    saliency = methods.occlusion_saliency(predict_proba, image, target=target)
    mask, _ = methods.lime_explanation(predict_proba, image, target=target,
                                       num_samples=lime_samples)  # fmt: skip
    title = (
        f"test image {index}: true {CLASS_NAMES[labels[index]]}, predicted "
        f"{CLASS_NAMES[target]} ({probabilities[target]:.0%})"
    )
    figures = {
        f"explain_{index}": explanation_figure(
            image, saliency=saliency, lime_mask=mask, title=title
        ),
    }
    if embedding is not None:
        figures[f"embedding_{embedding}"] = _embedding_figure(
            served, images[:embedding_images], labels[:embedding_images],
            method=embedding, model_uri=model_uri,
        )  # fmt: skip
    output_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for name, figure in figures.items():
        path = output_dir / f"{name}.png"
        figure.savefig(path, dpi=110)
        files.append(path)
    run_id = tracker.start_insight_run(
        experiment=EXPLAIN_EXPERIMENT,
        run_name=f"explain-{index}",
        tags={ROLE_TAG: "explain", MODEL_URI_TAG: model_uri, INDEX_TAG: index},
    )
    tracker.log_files(run_id, files)
    tracker.log_json(
        run_id,
        {"index": index, "true": CLASS_NAMES[labels[index]], "predicted": CLASS_NAMES[target],
         "probabilities": dict(zip(CLASS_NAMES, map(float, probabilities), strict=True))},
        "prediction.json",
    )  # fmt: skip
    tracker.end_run(run_id, status="FINISHED")
    return Explanation(
        run_id=run_id,
        index=index,
        true_class=CLASS_NAMES[labels[index]],
        predicted_class=CLASS_NAMES[target],
        confidence=float(probabilities[target]),
        files=files,
    )


LR_FIND_EXPERIMENT = "fmsearch-lr-find"


@dataclass(frozen=True)
class LearningRateFinding:
    """The range test's suggestion, within the space's own learning-rate range.

    Attributes:
        run_id: The lr-find run with the plot.
        low: Suggested lowest learning rate (clipped to the space's range).
        high: Suggested highest.
        measured_low: What the curve suggested before clipping.
        measured_high: Likewise.
        plot: The plot, written locally.
    """

    run_id: str
    low: float
    high: float
    measured_low: float
    measured_high: float
    plot: Path


def find_learning_rate_range(
    *,
    arch: str,
    split: Split,
    tracker: Tracker,
    output_dir: Path,
    steps: int = 200,
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    params: dict[str, Any] | None = None,
) -> LearningRateFinding:
    """Run the range test on ``arch``'s published configuration (or ``params``).

    Raises:
        FmsearchError: ``arch`` does not train by gradient descent, or the suggested range
            lies outside the space's learning-rate range.
    """
    from runners.data import IMAGE_SHAPE, NUM_CLASSES
    from runners.figures import lr_range
    from runners.lr_find import find_learning_rate
    from search.trials.choices import describe_space
    from spaces import ARCHITECTURES

    space = ARCHITECTURES[arch]
    if not runner_for(space).trains_in_epochs:
        raise FmsearchError(
            f"--arch must be a Keras architecture (it has a learning rate), got {arch}"
        )
    bounds = describe_space(space)["learning_rate"]
    config = {**space.DEFAULTS, **(params or {})}
    model = space.build(config, input_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES)
    found = find_learning_rate(model, config, split, min_lr=min_lr, max_lr=max_lr, steps=steps)
    low = min(max(found.low, bounds.low), bounds.high)
    high = min(max(found.high, bounds.low), bounds.high)
    figure = lr_range(
        found.learning_rates,
        found.losses,
        smoothed=found.smoothed,
        suggested=(found.low, found.high),
        title=f"{arch}: learning-rate range test ({len(found.losses)} batches of "
        f"{config['batch_size']}, optimizer {config['optimizer']})",
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    plot = output_dir / f"lr_find_{arch}.png"
    figure.savefig(plot, dpi=110)
    run_id = tracker.start_insight_run(
        experiment=LR_FIND_EXPERIMENT, run_name=f"lr-find-{arch}",
        tags={ROLE_TAG: "lr-find", ARCH_TAG: arch},
    )  # fmt: skip
    tracker.log_files(run_id, [plot])
    measured = {"measured_low": found.low, "measured_high": found.high}
    tracker.log_metrics(run_id, {"suggested_low": low, "suggested_high": high, **measured})
    tracker.end_run(run_id, status="FINISHED")
    if not low < high:
        raise FmsearchError(
            f"the suggested range {found.low:.3g}..{found.high:.3g} lies outside {arch}'s "
            f"learning-rate range {bounds.low:g}..{bounds.high:g}: see {plot}"
        )
    return LearningRateFinding(run_id, low, high, found.low, found.high, plot)
