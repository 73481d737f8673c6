"""The input pipeline of a Keras trial: batching, augmentation, CutMix and MixUp.

Training batches go through ``tf.data``: shuffled, then the classic augmentations (Keras
preprocessing layers: shift, rotation, zoom, shear, horizontal flip, random erasing), then one-hot
labels, then CutMix or MixUp on the batch. Validation and test batches are only batched and
one-hot encoded: nothing random ever touches them.

Images stay pixel values 0 to 255 throughout; the models scale them in their first layer.

CutMix and MixUp are written here rather than taken from ``keras.layers.CutMix``/``MixUp``:
those weight the labels by the fractional box they draw, not by the pixels they paste (they
differ by up to a row and a column), sample ``alpha`` itself from a range, and apply to every
batch. Here each image is mixed with probability ``mix_prob``, with weight
``lambda ~ Beta(mix_alpha, mix_alpha)``, and a CutMix label weight is exactly the fraction of
pixels pasted.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

MIX_METHODS = ("none", "mixup", "cutmix")


def classic_augmentation(params: dict[str, Any]) -> keras.layers.Pipeline | None:
    """The classic augmentations that ``params`` switch on, as one Keras pipeline (or None).

    Keys read (all optional, off when missing): ``shift`` with ``shift_factor`` (fraction of
    the side), ``rotation`` with ``rotation_degrees``, ``zoom`` with ``zoom_factor``, ``shear``
    with ``shear_factor`` (horizontal, fraction of the side), ``flip`` (horizontal),
    ``erasing`` with ``erasing_prob``.
    """
    layers: list[keras.layers.Layer] = []
    fill = {"fill_mode": "constant", "fill_value": 0.0}  # the data set's background is black
    if params.get("shift"):
        f = params["shift_factor"]
        layers.append(keras.layers.RandomTranslation(f, f, **fill))
    if params.get("rotation"):
        layers.append(keras.layers.RandomRotation(params["rotation_degrees"] / 360.0, **fill))
    if params.get("zoom"):
        layers.append(keras.layers.RandomZoom(params["zoom_factor"], **fill))
    if params.get("shear"):
        # Along x only, as Keras' ImageDataGenerator(shear_range=...) of the source recipes.
        layers.append(keras.layers.RandomShear(x_factor=params["shear_factor"], **fill))
    if params.get("flip"):
        layers.append(keras.layers.RandomFlip("horizontal"))
    if params.get("erasing"):
        p = params["erasing_prob"]
        # A (p, p) range makes p the probability itself; a single float would draw it from 0..p.
        layers.append(keras.layers.RandomErasing(factor=(p, p), value_range=(0, 255)))
    return keras.layers.Pipeline(layers) if layers else None


def _sample_beta(shape: tf.Tensor, alpha: float) -> tf.Tensor:
    a = tf.random.gamma(shape, alpha)
    b = tf.random.gamma(shape, alpha)
    return a / (a + b)


def mixup(
    images: tf.Tensor, labels: tf.Tensor, *, alpha: float, prob: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """MixUp: blend each image (with probability ``prob``) with another of the batch.

    Args:
        images: Float images (B, H, W, C).
        labels: One-hot (or already soft) labels (B, K).
        alpha: Beta distribution parameter of the blend weight.
        prob: Probability that an image is mixed at all.

    Returns:
        The mixed images and labels; a label keeps weight ``lambda`` for its own class.
    """
    batch = tf.shape(images)[0]
    partner = tf.random.shuffle(tf.range(batch))
    lam = _sample_beta([batch], alpha)
    lam = tf.where(tf.random.uniform([batch]) < prob, lam, tf.ones([batch]))
    lam_images = tf.reshape(lam, [-1, 1, 1, 1])
    lam_labels = tf.reshape(lam, [-1, 1])
    images = lam_images * images + (1.0 - lam_images) * tf.gather(images, partner)
    labels = lam_labels * labels + (1.0 - lam_labels) * tf.gather(labels, partner)
    return images, labels


def cutmix_masks(batch: tf.Tensor, height: int, width: int, lam: tf.Tensor) -> tf.Tensor:
    """One box mask (B, H, W, 1) per image: 1 where the partner's pixels are pasted.

    The box covers about ``1 - lam`` of the image, with whole-pixel sides, centred at a
    uniform random pixel and clipped at the borders (as in the CutMix paper).
    """
    ratio = tf.sqrt(1.0 - lam)
    box_h = tf.cast(tf.round(ratio * height), tf.int32)
    box_w = tf.cast(tf.round(ratio * width), tf.int32)
    cy = tf.random.uniform([batch], 0, height, dtype=tf.int32)
    cx = tf.random.uniform([batch], 0, width, dtype=tf.int32)
    y0 = tf.clip_by_value(cy - box_h // 2, 0, height)
    y1 = tf.clip_by_value(cy - box_h // 2 + box_h, 0, height)
    x0 = tf.clip_by_value(cx - box_w // 2, 0, width)
    x1 = tf.clip_by_value(cx - box_w // 2 + box_w, 0, width)
    rows = tf.range(height)[None, :, None]
    cols = tf.range(width)[None, None, :]
    inside_y = (rows >= y0[:, None, None]) & (rows < y1[:, None, None])
    inside_x = (cols >= x0[:, None, None]) & (cols < x1[:, None, None])
    return tf.cast(inside_y & inside_x, tf.float32)[..., None]


def cutmix(
    images: tf.Tensor, labels: tf.Tensor, *, alpha: float, prob: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """CutMix: paste a box of another image of the batch into each image (with ``prob``).

    The label weights are the pixel fractions: the partner's class gets exactly the share of
    pixels that were pasted.
    """
    batch = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    partner = tf.random.shuffle(tf.range(batch))
    lam = _sample_beta([batch], alpha)
    masks = cutmix_masks(batch, height, width, lam)
    masks *= tf.reshape(tf.cast(tf.random.uniform([batch]) < prob, tf.float32), [-1, 1, 1, 1])
    images = (1.0 - masks) * images + masks * tf.gather(images, partner)
    pasted = tf.reduce_mean(masks, axis=[1, 2, 3])[:, None]
    labels = (1.0 - pasted) * labels + pasted * tf.gather(labels, partner)
    return images, labels


def train_dataset(
    x: np.ndarray,
    y: np.ndarray,
    *,
    params: dict[str, Any],
    num_classes: int,
    seed: int | None = None,
) -> tf.data.Dataset:
    """Shuffled, augmented training batches of ``(images, one-hot labels)``, repeating per epoch.

    Args:
        x: uint8 images (N, H, W, C), pixel values 0 to 255.
        y: Integer labels (N,), or soft labels (N, ``num_classes``): class probabilities a
            teacher gave each image (distillation), used as they are.
        params: The trial's hyperparameters: ``batch_size``, and the augmentation keys
            (``mix``, ``mix_prob``, ``mix_alpha`` and those of :func:`classic_augmentation`).
        num_classes: Classes of the one-hot labels.
        seed: Shuffle seed (None: a fresh order every run).
    """
    mix = params.get("mix", "none")
    if mix not in MIX_METHODS:
        raise ValueError(f"mix must be one of {', '.join(MIX_METHODS)}, got {mix!r}")
    classic = classic_augmentation(params)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(params["batch_size"])
    soft = np.ndim(y) == 2
    if soft and np.shape(y)[1] != num_classes:
        raise ValueError(f"expected soft labels of {num_classes} classes, got {np.shape(y)[1]}")

    def to_float(images, labels):
        labels = tf.cast(labels, tf.float32) if soft else tf.one_hot(labels, num_classes)
        return tf.cast(images, tf.float32), labels

    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    if classic is not None:
        ds = ds.map(
            lambda images, labels: (classic(images, training=True), labels),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    if mix != "none":
        mixer = mixup if mix == "mixup" else cutmix
        alpha, prob = float(params["mix_alpha"]), float(params["mix_prob"])
        ds = ds.map(
            lambda images, labels: mixer(images, labels, alpha=alpha, prob=prob),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return _without_autotune(ds.prefetch(tf.data.AUTOTUNE))


def _without_autotune(ds: tf.data.Dataset) -> tf.data.Dataset:
    """``ds`` with tf.data's autotuning off.

    Keras deletes an epoch's iterator as the next epoch starts (and as fit ends), and with
    TensorFlow 2.21 the deletion waits for the autotuning thread to wake from its sleep,
    which doubles up to 60 s: both cores sit idle for tens of seconds at the start of long
    epochs (docs/performance.md). The epochs themselves train as fast without it (the
    AUTOTUNE parallelism and prefetch fall back to TensorFlow's defaults).
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def eval_dataset(
    x: np.ndarray, y: np.ndarray, *, batch_size: int, num_classes: int
) -> tf.data.Dataset:
    """Validation or test batches of ``(images, one-hot labels)``, in order, untouched."""
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    ds = ds.map(
        lambda images, labels: (tf.cast(images, tf.float32), tf.one_hot(labels, num_classes)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return _without_autotune(ds.prefetch(tf.data.AUTOTUNE))
