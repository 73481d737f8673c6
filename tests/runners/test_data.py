"""Finding, verifying and splitting Fashion-MNIST."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest

from runners import data as data_module
from runners.data import (
    DEBIAN_DIR,
    NUM_CLASSES,
    DataError,
    load_fashion_mnist,
    read_image_files,
    split_train_val,
)

FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]


@pytest.fixture
def copied_dir(tmp_path):
    target = tmp_path / "fm"
    target.mkdir()
    for name in FILES:
        shutil.copy(DEBIAN_DIR / name, target / name)
    return target


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """No Debian package and an empty Keras cache."""
    monkeypatch.setattr(data_module, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(data_module, "KERAS_CACHE_DIR", tmp_path / "no-keras")
    return tmp_path


def test_real_data_is_verified(fashion):
    assert fashion.x_train.shape == (60000, 28, 28)
    assert fashion.x_test.shape == (10000, 28, 28)
    assert fashion.x_train.dtype == np.uint8
    assert np.bincount(fashion.y_train).tolist() == [6000] * 10
    assert np.bincount(fashion.y_test).tolist() == [1000] * 10
    # The published per-pixel mean of the training set is 0.2860.
    assert fashion.x_train.mean() / 255 == pytest.approx(0.2860, abs=1e-4)


def test_data_dir_is_used(copied_dir):
    assert load_fashion_mnist(data_dir=copied_dir).source == str(copied_dir)


def test_missing_file_in_data_dir_says_how_to_get_it(copied_dir):
    (copied_dir / FILES[1]).unlink()
    with pytest.raises(DataError, match=r"lacks train-labels-idx1-ubyte.gz.*apt-get install"):
        load_fashion_mnist(data_dir=copied_dir)


def test_corrupt_pixels_fail_the_checksum(copied_dir):
    path = copied_dir / FILES[2]
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[5000] ^= 0xFF
    path.write_bytes(gzip.compress(bytes(raw), compresslevel=1))
    with pytest.raises(DataError, match=r"x_test .* is corrupt: SHA-256"):
        load_fashion_mnist(data_dir=copied_dir)


def test_truncated_file_is_reported(copied_dir):
    path = copied_dir / FILES[3]
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    with pytest.raises(DataError, match=r"holds 9900 bytes of data, expected 10000"):
        load_fashion_mnist(data_dir=copied_dir)


def test_a_gzip_bomb_is_not_decompressed_whole(copied_dir):
    import tracemalloc

    path = copied_dir / FILES[3]
    labels = gzip.decompress(path.read_bytes())
    # 10 KiB of gzip that would decompress to 100 MiB.
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(labels)
        for _ in range(100):
            f.write(bytes(1 << 20))
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"holds more than 10000 bytes of data, expected 10000"):
            load_fashion_mnist(data_dir=copied_dir)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100 * (1 << 20)  # the real files need about 55 MiB; the bomb's would add 100


def test_not_gzip_is_reported(copied_dir):
    (copied_dir / FILES[3]).write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match=r"not a readable gzip file"):
        load_fashion_mnist(data_dir=copied_dir)


def test_keras_cache_is_the_fallback(nowhere, copied_dir, monkeypatch):
    monkeypatch.setattr(data_module, "KERAS_CACHE_DIR", copied_dir)
    assert load_fashion_mnist().source == str(copied_dir)


def test_failed_download_says_how_to_get_the_data(nowhere, monkeypatch):
    import keras

    def offline():
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", offline)
    with pytest.raises(DataError, match=r"Keras download failed .*no network.*apt-get install"):
        load_fashion_mnist()


def test_download_is_verified(nowhere, monkeypatch, fashion):
    import keras

    def fake_download():
        y_test = fashion.y_test.copy()
        y_test[0] = (y_test[0] + 1) % NUM_CLASSES
        return (fashion.x_train, fashion.y_train), (fashion.x_test, y_test)

    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", fake_download)
    with pytest.raises(DataError, match=r"y_test from keras download is corrupt"):
        load_fashion_mnist()


def test_no_download_no_data(nowhere):
    with pytest.raises(DataError, match=r"not found in .*--data-dir"):
        load_fashion_mnist(download=False)


def test_split_is_stratified_disjoint_and_repeatable(fashion):
    split = split_train_val(fashion.x_train, fashion.y_train, val_size=1000)
    again = split_train_val(fashion.x_train, fashion.y_train, val_size=1000)
    assert len(split.y_train) == 59000 and len(split.y_val) == 1000
    assert split.x_train.shape[1:] == (28, 28, 1)
    assert np.bincount(split.y_val).tolist() == [100] * 10
    np.testing.assert_array_equal(split.x_val, again.x_val)
    train_rows = {row.tobytes() for row in split.x_train[:5000]}
    assert not any(row.tobytes() in train_rows for row in split.x_val)


def test_subsets_are_stratified_and_nested(fashion):
    small = split_train_val(fashion.x_train, fashion.y_train, val_size=1000, subset=200)
    large = split_train_val(fashion.x_train, fashion.y_train, val_size=1000, subset=2000)
    assert np.bincount(small.y_train).tolist() == [20] * 10
    assert np.bincount(large.y_train).tolist() == [200] * 10
    large_rows = {row.tobytes() for row in large.x_train}
    assert all(row.tobytes() in large_rows for row in small.x_train)
    np.testing.assert_array_equal(small.x_val, large.x_val)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val_size": 5}, r"--val-size must be between 10 and 59990, got 5"),
        ({"val_size": 10000, "subset": 50001}, r"--subset must be between 1 and 50000, got 50001"),
    ],
)
def test_impossible_splits_are_rejected(fashion, kwargs, message):
    with pytest.raises(DataError, match=message):
        split_train_val(fashion.x_train, fashion.y_train, **kwargs)


def test_read_image_files(tmp_path, fashion):
    from PIL import Image

    np.save(tmp_path / "batch.npy", fashion.x_test[:3])
    np.save(tmp_path / "one.npy", fashion.x_test[3])
    Image.fromarray(fashion.x_test[4]).save(tmp_path / "five.png")
    images, names = read_image_files(
        [tmp_path / "batch.npy", tmp_path / "one.npy", tmp_path / "five.png"]
    )
    np.testing.assert_array_equal(images, fashion.x_test[:5])
    assert names[0].endswith("batch.npy[0]") and names[3].endswith("one.npy")
    assert names[4].endswith("five.png")


def test_read_image_files_rejects_other_files(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DataError, match=r"expected a .npy or .png file, got .txt"):
        read_image_files([tmp_path / "x.txt"])
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    with pytest.raises(DataError, match=r"corrupt.png: expected a readable .png image, got"):
        read_image_files([tmp_path / "corrupt.png"])
    (tmp_path / "text.npy").write_text("not an array")
    with pytest.raises(DataError, match=r"text.npy: expected a readable .npy image, got"):
        read_image_files([tmp_path / "text.npy"])
    np.save(tmp_path / "empty.npy", np.zeros((0, 28, 28), np.uint8))
    with pytest.raises(DataError, match=r"expected one image or a stack of images, got shape "
                                        r"\(0, 28, 28\)"):  # fmt: skip
        read_image_files([tmp_path / "empty.npy"])
