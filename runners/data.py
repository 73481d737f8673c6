"""Fashion-MNIST: finding it, verifying it, and splitting it for a search.

The files are the original IDX files (``*-ubyte.gz``). Sources are tried in this order: an
explicit directory, Debian's ``dataset-fashion-mnist`` package, the Keras cache, and last a
Keras download. Whatever the source, the decoded arrays must match known SHA-256 checksums, so
every study sees the same pixels.

The search trains on a stratified, seeded split of the 60k training images; the 10k test
images are only for judging a winner.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runners.errors import DataError

logger = logging.getLogger(__name__)

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SHAPE = (28, 28, 1)
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
KERAS_CACHE_DIR = Path.home() / ".keras" / "datasets" / "fashion-mnist"
# Fixed so that every study, resumed or new, validates on the same images.
SPLIT_SEED = 20170825

# name: (file, IDX magic, shape, SHA-256 of the decoded bytes)
_FILES = {
    "x_train": (
        "train-images-idx3-ubyte.gz",
        2051,
        (60000, 28, 28),
        "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
    ),
    "y_train": (
        "train-labels-idx1-ubyte.gz",
        2049,
        (60000,),
        "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
    ),
    "x_test": (
        "t10k-images-idx3-ubyte.gz",
        2051,
        (10000, 28, 28),
        "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
    ),
    "y_test": (
        "t10k-labels-idx1-ubyte.gz",
        2049,
        (10000,),
        "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
    ),
}

HOW_TO_GET = (
    "install Debian's package with `sudo apt-get install dataset-fashion-mnist`, or put the four "
    "files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
    "t10k-labels-idx1-ubyte.gz from https://github.com/zalandoresearch/fashion-mnist in a "
    "directory and pass it as --data-dir (or FMSEARCH_DATA_DIR)"
)


@dataclass(frozen=True)
class FashionMNIST:
    """The whole data set: uint8 images shaped (N, 28, 28), int labels, and where it came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


@dataclass(frozen=True)
class Split:
    """What a trial trains and validates on: uint8 images shaped (N, 28, 28, 1)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def load_fashion_mnist(*, data_dir: Path | None = None, download: bool = True) -> FashionMNIST:
    """Find, decode and verify Fashion-MNIST.

    Args:
        data_dir: A directory holding the four IDX ``.gz`` files. When given, it is the only
            source tried, so a wrong path is reported instead of silently replaced.
        download: Whether a Keras download is the last resort.

    Raises:
        DataError: The data is missing or does not match its checksums.
    """
    if data_dir is not None:
        missing = [f for f, *_ in _FILES.values() if not (Path(data_dir) / f).is_file()]
        if missing:
            raise DataError(
                f"--data-dir {data_dir} lacks {', '.join(missing)}: expected the four "
                f"Fashion-MNIST IDX files there; {HOW_TO_GET}"
            )
        return _read_dir(Path(data_dir))
    for directory in (DEBIAN_DIR, KERAS_CACHE_DIR):
        if all((directory / f).is_file() for f, *_ in _FILES.values()):
            return _read_dir(directory)
    if download:
        return _download()
    raise DataError(f"Fashion-MNIST not found in {DEBIAN_DIR} or {KERAS_CACHE_DIR}: {HOW_TO_GET}")


def _read_dir(directory: Path) -> FashionMNIST:
    arrays = {}
    for name, (filename, magic, shape, _) in _FILES.items():
        path = directory / filename
        # One byte more than the file should hold is enough to tell it is too long: a gzip
        # bomb in --data-dir is not decompressed whole.
        limit = 4 * (1 + len(shape)) + int(np.prod(shape)) + 1
        try:
            with gzip.open(path, "rb") as fh:
                raw = fh.read(limit)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path} is not a readable gzip file ({exc}); {HOW_TO_GET}") from exc
        arrays[name] = _decode_idx(raw, path=path, magic=magic, shape=shape)
    data = FashionMNIST(**arrays, source=str(directory))
    verify(data)
    logger.info("Fashion-MNIST loaded from %s", directory)
    return data


def _decode_idx(raw: bytes, *, path: Path, magic: int, shape: tuple[int, ...]) -> np.ndarray:
    header = 4 * (1 + len(shape))
    got = np.frombuffer(raw[:header], dtype=">u4") if len(raw) >= header else np.array([])
    expected = np.array((magic, *shape))
    if got.shape != expected.shape or not (got == expected).all():
        raise DataError(
            f"{path} has IDX header {got.tolist()}, expected {expected.tolist()}; {HOW_TO_GET}"
        )
    body = np.frombuffer(raw, dtype=np.uint8, offset=header)
    size, expected_size = body.size, int(np.prod(shape))
    if size < expected_size:
        raise DataError(
            f"{path} holds {size} bytes of data, expected {expected_size} (truncated?); "
            f"{HOW_TO_GET}"
        )
    if size > expected_size:  # read no further than one byte past the end
        raise DataError(
            f"{path} holds more than {expected_size} bytes of data, expected {expected_size}; "
            f"{HOW_TO_GET}"
        )
    return body.reshape(shape)


def _download() -> FashionMNIST:
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    except Exception as exc:  # the Keras download raises bare Exceptions on network errors
        raise DataError(
            f"Fashion-MNIST not found in {DEBIAN_DIR} or {KERAS_CACHE_DIR}, and the Keras "
            f"download failed ({type(exc).__name__}: {exc}); {HOW_TO_GET}"
        ) from exc
    data = FashionMNIST(x_train, y_train, x_test, y_test, source="keras download")
    verify(data)
    return data


def verify(data: FashionMNIST) -> None:
    """Check shapes, dtypes, label range and the checksums of the decoded arrays.

    Raises:
        DataError: Anything differs from the published data set.
    """
    for name, (_, _, shape, digest) in _FILES.items():
        array = getattr(data, name)
        if array.shape != shape or array.dtype != np.uint8:
            raise DataError(
                f"{name} from {data.source} is {array.dtype}{list(array.shape)}, "
                f"expected uint8{list(shape)}; {HOW_TO_GET}"
            )
        if name.startswith("y") and array.max() >= NUM_CLASSES:
            raise DataError(
                f"{name} from {data.source} has label {int(array.max())}, "
                f"expected 0 to {NUM_CLASSES - 1}; {HOW_TO_GET}"
            )
        got = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
        if got != digest:
            raise DataError(
                f"{name} from {data.source} is corrupt: SHA-256 of the decoded array is "
                f"{got[:16]}..., expected {digest[:16]}...; {HOW_TO_GET}"
            )


def split_train_val(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    val_size: int = 10_000,
    subset: int | None = None,
    seed: int = SPLIT_SEED,
) -> Split:
    """Split labelled images into stratified training and validation sets.

    Args:
        images: uint8 images shaped (N, 28, 28).
        labels: Integer labels shaped (N,).
        val_size: Validation images, drawn with every class in proportion.
        subset: Train on only this many of the remaining images (a stratified prefix of a
            fixed order, so a larger subset contains every smaller one).
        seed: Seed of the split; the default keeps every study on the same validation set.

    Raises:
        DataError: ``val_size`` or ``subset`` does not fit the data.
    """
    from sklearn.model_selection import train_test_split

    n = len(labels)
    if not NUM_CLASSES <= val_size <= n - NUM_CLASSES:
        raise DataError(
            f"--val-size must be between {NUM_CLASSES} and {n - NUM_CLASSES}, got {val_size}"
        )
    train_idx, val_idx = train_test_split(
        np.arange(n), test_size=val_size, stratify=labels, random_state=seed
    )
    if subset is not None:
        if not 1 <= subset <= len(train_idx):
            raise DataError(f"--subset must be between 1 and {len(train_idx)}, got {subset}")
        order = stratified_order(labels[train_idx], np.random.default_rng(seed))
        train_idx = np.sort(train_idx[order[:subset]])
    return Split(
        x_train=images[train_idx, ..., np.newaxis],
        y_train=labels[train_idx],
        x_val=images[val_idx, ..., np.newaxis],
        y_val=labels[val_idx],
    )


def stratified_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An order of the samples in which every prefix holds each class in proportion."""
    rank = np.empty(len(labels))
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        # Spread each class evenly over [0, 1); sorting interleaves the classes.
        rank[members] = (np.arange(len(members)) + rng.random()) / len(members)
    return np.argsort(rank, kind="stable")


def read_image_files(paths: list[Path]) -> tuple[np.ndarray, list[str]]:
    """Images from ``.npy`` arrays and grayscale ``.png`` files, stacked in one batch.

    A 2-D array is one image; an array of several images keeps its shape for the model to
    check. Each image gets a name: the file, with ``[i]`` for the images of an array.

    Raises:
        DataError: A file is not a ``.npy`` or ``.png`` image, or shapes do not stack.
    """
    from PIL import Image

    batches, names = [], []
    for path in paths:
        suffix = Path(path).suffix.lower()
        try:
            if suffix == ".npy":
                array = np.load(path, allow_pickle=False)
            elif suffix == ".png":
                with Image.open(path) as image:
                    array = np.asarray(image.convert("L"))[np.newaxis]
            else:
                raise DataError(
                    f"{path}: expected a .npy or .png file, got {suffix or 'no suffix'}"
                )
        except (OSError, ValueError, SyntaxError) as exc:  # PIL, np.load: corrupt or not one
            raise DataError(f"{path}: expected a readable {suffix} image, got {exc}") from exc
        if array.ndim == 2:
            array = array[np.newaxis]
        if array.ndim < 3 or len(array) == 0 or 0 in array.shape:
            raise DataError(f"{path}: expected one image or a stack of images, got shape "
                            f"{array.shape}")  # fmt: skip
        names += [f"{path}[{i}]" for i in range(len(array))] if len(array) > 1 else [str(path)]
        batches.append(array)
    shapes = {b.shape[1:] for b in batches}
    if len(shapes) > 1:
        raise DataError(f"images of different shapes cannot go in one batch: {sorted(shapes)}")
    return np.concatenate(batches), names
