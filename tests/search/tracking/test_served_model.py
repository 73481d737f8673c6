"""The registered model's input contract, without MLflow in the loop."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from search.tracking.served_model import to_frame, to_images


@pytest.mark.parametrize(
    "shape", [(4, 28, 28), (4, 28, 28, 1), (4, 784)], ids=["NHW", "NHWC", "flat"]
)
def test_accepts_every_documented_shape(shape):
    images = np.arange(4 * 784).reshape(shape) % 256
    out = to_images(images.astype(np.uint8))
    assert out.shape == (4, 28, 28, 1) and out.dtype == np.float32
    np.testing.assert_array_equal(out.reshape(4, -1), images.reshape(4, -1))


def test_float_images_in_unit_range_are_scaled():
    images = np.full((2, 28, 28), 0.5, dtype=np.float32)
    assert to_images(images).max() == pytest.approx(127.5)
    assert to_images(images * 255).max() == pytest.approx(127.5)


def test_dataframe_of_pixels_and_nested_lists():
    pixels = np.random.default_rng(0).integers(0, 256, (3, 784))
    np.testing.assert_array_equal(
        to_images(pd.DataFrame(pixels)).reshape(3, -1), pixels.astype(np.float32)
    )
    nested = pixels.reshape(3, 28, 28).tolist()
    np.testing.assert_array_equal(to_images(nested).reshape(3, -1), pixels)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((28, 28)), r"got \(28, 28\); add a batch axis"),
        (np.zeros((2, 32, 32)), r"expected images shaped \(N, 28, 28\), .*got \(2, 32, 32\)"),
        (np.zeros((2, 28, 28, 3)), r"got \(2, 28, 28, 3\)"),
        (np.zeros((0, 28, 28)), r"got \(0, 28, 28\)"),
        (np.full((1, 784), 300.0), r"pixel values in 0..255 \(or 0..1\), got 300..300"),
        (np.full((1, 784), np.nan), r"finite pixel values"),
        (np.array([["a"] * 784]), r"numeric images"),
    ],
)
def test_rejects_what_it_cannot_classify(images, message):
    with pytest.raises(ValueError, match=message):
        to_images(images)


def test_to_frame():
    names = [f"c{i}" for i in range(10)]
    probs = np.eye(10, dtype=np.float32)[[3, 7]]
    frame = to_frame(probs, names)
    assert list(frame.columns) == ["class_index", "class_name", *names]
    assert frame["class_index"].tolist() == [3, 7]
    assert frame["class_name"].tolist() == ["c3", "c7"]
    assert frame["c7"].tolist() == [0.0, 1.0]


@pytest.mark.parametrize("arch", ["svm", "logreg"])
def test_sklearn_probabilities_rank_like_predict(arch, small_split):
    """With predict_proba (logreg) or without it (SVC: softmax of decision values)."""
    from runners.estimators import to_features
    from search.tracking.served_model import sklearn_probabilities
    from spaces import ARCHITECTURES

    space = ARCHITECTURES[arch]
    model = space.build({**space.DEFAULTS, "pca_components": 16})
    model.fit(to_features(small_split.x_train), small_split.y_train)
    images = small_split.x_val[:50].astype(np.float32)
    probabilities = sklearn_probabilities(model, images, 10)
    assert probabilities.shape == (50, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(probabilities.argmax(axis=1), model.predict(to_features(images)))
