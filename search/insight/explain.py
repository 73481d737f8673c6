"""Explanations of one prediction (occlusion saliency, LIME) and 2-d maps of a model's
penultimate features, logged to the ``fmsearch-explain`` experiment."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from runners.data import CLASS_NAMES
from runners.errors import FmsearchError
from search.names import INDEX_TAG, MODEL_URI_TAG, ROLE_TAG

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from search.tracking import Tracker


EXPLAIN_EXPERIMENT = "fmsearch-explain"


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


def _save(figures: dict[str, Any], output_dir: Path) -> list[Path]:
    """The figures as PNG files in ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for name, figure in figures.items():
        path = output_dir / f"{name}.png"
        figure.savefig(path, dpi=110)
        files.append(path)
    return files


def _record(tracker: Tracker, *, model_uri: str, index: int, files: list[Path],
            prediction: dict[str, Any]) -> str:  # fmt: skip
    """An explanation's run in MLflow: its pictures and the prediction explained."""
    run_id = tracker.start_insight_run(
        experiment=EXPLAIN_EXPERIMENT,
        run_name=f"explain-{index}",
        tags={ROLE_TAG: "explain", MODEL_URI_TAG: model_uri, INDEX_TAG: index},
    )
    tracker.log_files(run_id, files)
    tracker.log_json(run_id, prediction, "prediction.json")
    tracker.end_run(run_id, status="FINISHED")
    return run_id


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
    files = _save(figures, output_dir)
    prediction = {
        "index": index, "true": CLASS_NAMES[labels[index]], "predicted": CLASS_NAMES[target],
        "probabilities": dict(zip(CLASS_NAMES, map(float, probabilities), strict=True)),
    }  # fmt: skip
    run_id = _record(tracker, model_uri=model_uri, index=index, files=files, prediction=prediction)
    return Explanation(
        run_id=run_id,
        index=index,
        true_class=CLASS_NAMES[labels[index]],
        predicted_class=CLASS_NAMES[target],
        confidence=float(probabilities[target]),
        files=files,
    )
