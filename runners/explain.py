"""Why a model predicts what it does: occlusion saliency, LIME, and feature embeddings.

Model-agnostic where it can be: the functions take ``predict_proba``, a function from uint8
images (N, 28, 28) to class probabilities (N, 10), so they explain the served model itself.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

import numpy as np

PredictProba = Callable[[np.ndarray], np.ndarray]


def occlusion_saliency(
    predict_proba: PredictProba, image: np.ndarray, *, target: int, patch: int = 4, stride: int = 2
) -> np.ndarray:
    """How much the probability of ``target`` drops when each region is blanked out.

    Every ``patch`` x ``patch`` square (moved by ``stride``) is set to the background value 0;
    a pixel's saliency is the mean drop over the squares that cover it. All occluded copies go
    through the model in one batch.
    """
    side = image.shape[0]
    corners = [(r, c) for r in range(0, side - patch + 1, stride)
               for c in range(0, side - patch + 1, stride)]  # fmt: skip
    batch = np.repeat(image[None], len(corners), axis=0)
    for i, (r, c) in enumerate(corners):
        batch[i, r : r + patch, c : c + patch] = 0
    base = float(predict_proba(image[None])[0, target])
    drops = base - predict_proba(batch)[:, target]
    total = np.zeros(image.shape, dtype=np.float64)
    cover = np.zeros(image.shape, dtype=np.float64)
    for drop, (r, c) in zip(drops, corners, strict=True):
        total[r : r + patch, c : c + patch] += drop
        cover[r : r + patch, c : c + patch] += 1
    return total / np.maximum(cover, 1)


def lime_explanation(
    predict_proba: PredictProba,
    image: np.ndarray,
    *,
    target: int,
    num_samples: int = 500,
    num_features: int = 5,
    seed: int = 0,
) -> tuple[np.ndarray, list[tuple[int, float]]]:
    """LIME's superpixels that speak most for class ``target``.

    Returns:
        A mask (28, 28) of the chosen superpixels (their segment ids, 0 elsewhere), and the
        (segment, weight) pairs of LIME's linear model for the class, strongest first.
    """
    from lime import lime_image
    from skimage.segmentation import slic

    def classify(rgb: np.ndarray) -> np.ndarray:
        return predict_proba(np.clip(rgb[..., 0], 0, 255).astype(np.uint8))

    def segment(rgb: np.ndarray) -> np.ndarray:
        # SLIC: about 17 superpixels on a 28x28 garment; LIME's default quickshift finds 7.
        return slic(rgb, n_segments=30, compactness=0.3, start_label=0, channel_axis=-1)

    rgb = np.repeat(image[..., None], 3, axis=-1).astype(np.float64)
    explainer = lime_image.LimeImageExplainer(random_state=seed)
    # LIME draws a tqdm bar on stderr with no way to turn it off: keep logs clean.
    with contextlib.redirect_stderr(io.StringIO()):
        explanation = explainer.explain_instance(
            rgb,
            classify,
            labels=(target,),
            top_labels=None,
            hide_color=0,
            num_samples=num_samples,
            segmentation_fn=segment,
            random_seed=seed,
            batch_size=num_samples,  # one call of the model, not one per 10 images
        )
    weights = sorted(explanation.local_exp[target], key=lambda kv: -kv[1])
    chosen = [segment_id for segment_id, weight in weights[:num_features] if weight > 0]
    mask = np.where(np.isin(explanation.segments, chosen), explanation.segments + 1, 0)
    return mask, [(int(s), float(w)) for s, w in weights]


def penultimate_features(classifier: Any, flavor: str, images: np.ndarray) -> np.ndarray:
    """What the final layer sees: a Keras model's input to its last Dense layer, or a
    scikit-learn pipeline's input to its final estimator (pixels, or their PCA)."""
    if flavor == "keras":
        import keras

        dense = [layer for layer in classifier.layers if isinstance(layer, keras.layers.Dense)]
        if not dense:
            raise ValueError("expected a Keras model ending in a Dense layer, got none")
        features = keras.Model(classifier.inputs, dense[-1].input)
        pixels = images.reshape(-1, 28, 28, 1).astype(np.float32)
        return np.asarray(features.predict(pixels, batch_size=512, verbose=0))
    flat = images.reshape(len(images), -1) / 255.0
    steps = getattr(classifier, "steps", None)
    if steps and len(steps) > 1:
        return np.asarray(classifier[:-1].transform(flat))
    return flat


# The 2-d maps of a model's features: pca (fast, linear), tsne (local neighbourhoods), umap
# (local and global structure; the umap-learn package).
EMBEDDINGS = ("pca", "tsne", "umap")


def embed_2d(features: np.ndarray, *, method: str, seed: int = 0) -> np.ndarray:
    """A 2-d map of ``features`` by ``method``, one of :data:`EMBEDDINGS`."""
    from sklearn.decomposition import PCA

    if method not in EMBEDDINGS:
        raise ValueError(f"method must be one of {', '.join(EMBEDDINGS)}, got {method!r}")
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(features)
    # PCA to 50 dimensions first, as scikit-learn's and UMAP's documentation advise for speed.
    reduced = features
    if features.shape[1] > 50:
        reduced = PCA(n_components=50, random_state=seed).fit_transform(features)
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, init="pca", random_state=seed).fit_transform(reduced)
    import umap

    # n_jobs=1: a random_state makes UMAP single-threaded anyway, and it warns unless told.
    return umap.UMAP(n_components=2, random_state=seed, n_jobs=1).fit_transform(reduced)
