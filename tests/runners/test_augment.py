"""The input pipeline: CutMix and MixUp mix labels right; only training batches are augmented."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from runners.augment import (
    classic_augmentation,
    cutmix,
    eval_dataset,
    mixup,
    train_dataset,
)

ALL_CLASSIC = {
    "shift": True, "shift_factor": 0.15, "rotation": True, "rotation_degrees": 20.0,
    "zoom": True, "zoom_factor": 0.2, "flip": True, "erasing": True, "erasing_prob": 0.5,
    "shear": True, "shear_factor": 0.2,
}  # fmt: skip


def _batch(n: int = 10) -> tuple[tf.Tensor, tf.Tensor, np.ndarray]:
    """Image k is filled with the value 10 + k and labelled class k."""
    values = 10.0 + np.arange(n, dtype=np.float32)
    images = np.broadcast_to(values[:, None, None, None], (n, 28, 28, 1)).copy()
    return tf.constant(images), tf.one_hot(np.arange(n), n), values


def test_mixup_labels_follow_the_pixel_blend():
    tf.random.set_seed(0)
    images, labels, values = _batch()
    mixed, soft = mixup(images, labels, alpha=0.4, prob=1.0)
    mixed, soft = mixed.numpy(), soft.numpy()
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-6)
    # Every image is one value everywhere: the label-weighted mean of the two sources.
    np.testing.assert_allclose(mixed[:, 0, 0, 0], soft @ values, rtol=1e-5)
    assert np.ptp(mixed.reshape(len(mixed), -1), axis=1).max() < 1e-4
    assert (soft.max(axis=1) < 1.0).any()


def test_cutmix_label_weight_is_the_pasted_area():
    tf.random.set_seed(1)
    images, labels, values = _batch()
    mixed, soft = cutmix(images, labels, alpha=1.0, prob=1.0)
    mixed, soft = mixed.numpy()[..., 0], soft.numpy()
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-6)
    pasted_somewhere = False
    for k in range(len(values)):
        own = np.isclose(mixed[k], values[k])
        np.testing.assert_allclose(soft[k, k], own.mean(), atol=1e-6)
        other = ~own
        if other.any():
            pasted_somewhere = True
            (partner,) = np.unique(mixed[k][other])  # one partner per image
            j = int(np.flatnonzero(np.isclose(values, partner))[0])
            assert soft[k, j] == pytest.approx(other.mean(), abs=1e-6)
            rows, cols = np.nonzero(other)  # the pasted region is one rectangle
            assert other[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
    assert pasted_somewhere


@pytest.mark.parametrize("mixer", [mixup, cutmix])
def test_probability_zero_mixes_nothing(mixer):
    images, labels, _ = _batch()
    mixed, soft = mixer(images, labels, alpha=1.0, prob=0.0)
    np.testing.assert_array_equal(mixed.numpy(), images.numpy())
    np.testing.assert_array_equal(soft.numpy(), labels.numpy())


def test_classic_augmentation_is_off_unless_switched_on():
    assert classic_augmentation({"shift": False, "flip": False}) is None
    pipeline = classic_augmentation(ALL_CLASSIC)
    assert [type(layer).__name__ for layer in pipeline.layers] == [
        "RandomTranslation", "RandomRotation", "RandomZoom", "RandomShear", "RandomFlip",
        "RandomErasing",
    ]  # fmt: skip
    (shear,) = [layer for layer in pipeline.layers if type(layer).__name__ == "RandomShear"]
    # Horizontal only, as ImageDataGenerator's shear_range, over a black background.
    assert shear.x_factor == (-0.2, 0.2) and shear.y_factor == (0.0, 0.0)
    assert (shear.fill_mode, shear.fill_value) == ("constant", 0.0)


def _first_batch(dataset):
    return [t.numpy() for t in next(iter(dataset))]


def test_training_batches_are_augmented_validation_batches_never(small_split):
    x, y = small_split.x_train[:64], small_split.y_train[:64]
    params = {"batch_size": 64, "mix": "cutmix", "mix_prob": 1.0, "mix_alpha": 1.0, **ALL_CLASSIC}
    train_x, train_y = _first_batch(train_dataset(x, y, params=params, num_classes=10, seed=0))
    assert train_x.shape == (64, 28, 28, 1) and train_y.shape == (64, 10)
    np.testing.assert_allclose(train_y.sum(axis=1), 1.0, rtol=1e-5)
    assert (train_y.max(axis=1) < 1).any()  # mixed labels
    originals = {img.tobytes() for img in x.astype(np.float32)}
    assert sum(img.tobytes() in originals for img in train_x) < 5  # nearly all changed

    val_x, val_y = _first_batch(eval_dataset(x, y, batch_size=64, num_classes=10))
    np.testing.assert_array_equal(val_x, x.astype(np.float32))
    np.testing.assert_array_equal(val_y.argmax(axis=1), y)
    assert (val_y.max(axis=1) == 1).all()


def test_without_augmentation_training_batches_are_the_images_shuffled(small_split):
    x, y = small_split.x_train[:32], small_split.y_train[:32]
    batch_x, batch_y = _first_batch(
        train_dataset(x, y, params={"batch_size": 32}, num_classes=10, seed=0)
    )
    assert sorted(img.tobytes() for img in batch_x) == sorted(
        img.tobytes() for img in x.astype(np.float32)
    )
    assert sorted(batch_y.argmax(axis=1)) == sorted(y)


def test_soft_labels_reach_the_batches_as_they_are(small_split, rng):
    """A teacher's probabilities (distillation) are the targets themselves, not one-hot."""
    x = small_split.x_train[:32]
    soft = rng.dirichlet(np.ones(10), size=32).astype(np.float32)
    batch_x, batch_y = _first_batch(
        train_dataset(x, soft, params={"batch_size": 32}, num_classes=10, seed=0)
    )
    order = [next(i for i in range(32) if (x[i] == img).all()) for img in batch_x]
    np.testing.assert_array_equal(batch_y, soft[order])
    with pytest.raises(ValueError, match=r"expected soft labels of 10 classes, got 9"):
        train_dataset(x, soft[:, :9], params={"batch_size": 32}, num_classes=10)


def test_unknown_mix_is_refused(small_split):
    with pytest.raises(ValueError, match=r"mix must be one of none, mixup, cutmix, got 'blend'"):
        train_dataset(
            small_split.x_train, small_split.y_train,
            params={"batch_size": 8, "mix": "blend"}, num_classes=10,
        )  # fmt: skip


def test_pipelines_leave_tf_data_autotuning_off(small_split):
    """Deleting an autotuned iterator, as Keras does every epoch, waited up to a minute."""
    params = {"batch_size": 32, "mix": "mixup", "mix_alpha": 0.2, "mix_prob": 0.5, "flip": True}
    train = train_dataset(small_split.x_train, small_split.y_train, params=params, num_classes=10)
    val = eval_dataset(small_split.x_val, small_split.y_val, batch_size=64, num_classes=10)
    assert train.options().autotune.enabled is False
    assert val.options().autotune.enabled is False
