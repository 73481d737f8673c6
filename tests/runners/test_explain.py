"""2-d maps of a model's features."""

from __future__ import annotations

import numpy as np
import pytest

from runners.explain import EMBEDDINGS, embed_2d


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_a_map_keeps_separate_clusters_apart(method):
    """Two well-separated clouds in 64 dimensions stay apart in 2-d (UMAP is exercised by
    ``explain``'s test)."""
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 1, (40, 64)), rng.normal(8, 1, (40, 64))])
    points = embed_2d(features, method=method)
    assert points.shape == (80, 2)
    first, second = points[:40].mean(axis=0), points[40:].mean(axis=0)
    spread = max(points[:40].std(axis=0).max(), points[40:].std(axis=0).max())
    assert np.linalg.norm(first - second) > 3 * spread


def test_an_unknown_map_names_the_known_ones():
    assert EMBEDDINGS == ("pca", "tsne", "umap")
    with pytest.raises(ValueError, match=r"method must be one of pca, tsne, umap, got 'mds'"):
        embed_2d(np.zeros((5, 3)), method="mds")
