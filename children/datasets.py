"""Datasets and the search's splits: checked uint8 NHWC arrays, split deterministically.

`load_dataset` reads a built-in dataset (digits offline; CIFAR-10/100 and SVHN through a
torchvision cache) or the user's data (an .npz file or an image folder) and checks it against the
space's `DatasetSpec`: images of another size or channel count are refused, unless the space
opts in to resizing them (`dataset.resize: true`). `make_splits` carves the train subset, the
validation pool, the audit set from the training images, stratified and shuffled from a seed; the
test set is the data's own and the search never touches it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from children.classes import EVERY_CLASS_PER_CLASS, check_classes
from children.errors import DataError
from children.sources import (
    TORCHVISION,
    Raw,
    Shape,
    has_labels,
    mismatch,
    read_digits,
    read_folder,
    read_npz,
    read_torchvision,
    read_unlabelled,
)
from spaces.errors import loop_message, symlink_loop

if TYPE_CHECKING:
    from spaces.schema import DatasetSpec

__all__ = ["EVERY_CLASS_PER_CLASS", "Arrays", "DataError", "ImageData", "Splits", "check_classes",
           "load_dataset", "make_splits", "stratified_order", "default_cache_dir"]

TEST_FRACTION = 1 / 6  # test share carved (seed 0) from data without a test split: digits, folders
_TEST_SEED = 0


@dataclass(frozen=True)
class Arrays:
    """Images and labels: `x` uint8 N×H×W×C, `y` int64 N. May be read-only (Ray's object store)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class ImageData:
    """A whole dataset, checked: uint8 NHWC images at the spec's size and channels, int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    origin: str = ""  # where it was read from (a path or a built-in name), for messages
    labelled: bool = True  # False: images without labels (every label -1; self-supervised)
    x_unlabelled: np.ndarray | None = None  # dataset.unlabelled: images for pre-training only


@dataclass(frozen=True)
class Splits:
    """The search's data: train subset, validation pool, audit set (never rewarded), test set."""

    train: Arrays
    val_pool: Arrays
    audit: Arrays
    test: Arrays
    num_classes: int | None = None  # the spec's class count (labels may not show every class)
    labelled: int | None = None  # dataset.labelled_size: the first rows of `train` keep their
    # labels (a stratified draw); None: all of them
    unlabelled: Arrays | None = None  # dataset.unlabelled's images (labels -1): pre-training only

    def labelled_set(self) -> Arrays:
        """The train split's labelled images (all of it unless dataset.labelled_size)."""
        if self.labelled is None:
            return self.train
        return Arrays(self.train.x[:self.labelled], self.train.y[:self.labelled])


def default_cache_dir(name: str) -> Path:
    """Where torchvision downloads go unless --data-dir is given: ~/.cache/augsearch/<name>."""
    return Path.home() / ".cache" / "augsearch" / name


def load_dataset(
    spec: DatasetSpec, data: str | None = None, data_dir: str | None = None, download: bool = True
) -> ImageData:
    """Read and check the dataset `spec` names; `data` (an .npz or folder) overrides it.

    Raises DataError with one line naming the problem and the fix for missing downloads, corrupt
    or mislabelled files, label ranges that do not fit `spec.num_classes` and images whose size
    or channels differ from the spec's (unless `spec.resize`).
    """
    source = data or spec.path
    if source and _without_labels(Path(source).expanduser(), spec):
        path = Path(source).expanduser()
        shape = Shape(spec.image_size, spec.channels, spec.resize)
        return _with_unlabelled(_unlabelled_data(read_unlabelled(path, shape), str(path), spec),
                                spec)
    if source:
        path = Path(source).expanduser()
        origin = str(path)
        if path.is_dir():
            raw = read_folder(path, Shape(spec.image_size, spec.channels, spec.resize))
            found = len(raw.class_names or [])
            if found != spec.num_classes:
                raise DataError(f"{path}: has {found} class folders but the space's "
                                f"dataset.num_classes is {spec.num_classes}; set "
                                f"dataset.num_classes to {found} or fix the folders")
        elif path.is_file():
            raw = read_npz(path)
        elif symlink_loop(path):
            raise DataError(loop_message(path, "data"))
        else:
            raise DataError(f"{path}: no such file or folder; pass --data with an existing .npz "
                            f"file or image folder")
    elif spec.name == "digits":
        origin, raw = "digits", read_digits()
    elif spec.name in TORCHVISION:
        root = Path(data_dir).expanduser() if data_dir else default_cache_dir(spec.name)
        origin, raw = spec.name, read_torchvision(spec.name, root, download)
    else:
        raise DataError(f"dataset '{spec.name}' needs its data; pass --data PATH (an .npz file "
                        f"or an image folder) or set dataset.path")
    return _with_unlabelled(_checked(raw, origin, spec), spec)


def _without_labels(path: Path, spec: DatasetSpec) -> bool:
    """Whether `path` holds images without labels that the space can use (self-supervised with
    `dataset.labelled_size: 0`); a space that needs labels is refused, naming the label-free
    alternative."""
    if spec.labelled_size is None or not path.exists() or has_labels(path):
        return False
    if spec.labelled_size == 0:
        return True
    raise DataError(f"{path}: has no labels (no y_train, no class folders) but "
                    f"dataset.labelled_size is {spec.labelled_size}: a probe needs labelled "
                    f"images; set dataset.labelled_size: 0 and reward.ssl.score: rotation "
                    f"(label-free), or add labels")


def _unlabelled_data(x: np.ndarray, origin: str, spec: DatasetSpec) -> ImageData:
    """Images without labels as a dataset: labels -1, a test share carved off (seed 0)."""
    x = _fit(_images(x, "x", origin), "x", origin, spec)
    order = np.random.default_rng(_TEST_SEED).permutation(len(x))
    n_test = max(1, round(len(x) * TEST_FRACTION))
    test, train = order[:n_test], order[n_test:]
    return ImageData(x[train], np.full(len(train), -1, dtype=np.int64), x[test],
                     np.full(len(test), -1, dtype=np.int64),
                     [str(i) for i in range(spec.num_classes)], origin, labelled=False)


def _with_unlabelled(data: ImageData, spec: DatasetSpec) -> ImageData:
    """`data` with dataset.unlabelled's images, checked against the space's shape."""
    if not spec.unlabelled:
        return data
    path = Path(spec.unlabelled).expanduser()
    origin = f"{path} (dataset.unlabelled)"
    x = read_unlabelled(path, Shape(spec.image_size, spec.channels, spec.resize))
    return replace(data, x_unlabelled=_fit(_images(x, "x", origin), "x", origin, spec))


def _checked(raw: Raw, origin: str, spec: DatasetSpec) -> ImageData:
    x_train = _images(raw.x_train, "x_train", origin)
    y_train = _labels(raw.y_train, "y_train", origin, len(x_train), spec.num_classes)
    if raw.x_test is None or raw.y_test is None:
        order = stratified_order(y_train, _TEST_SEED)
        n_test = max(1, round(len(y_train) * TEST_FRACTION))
        test, train = order[:n_test], order[n_test:]
        x_test, y_test = x_train[test], y_train[test]
        x_train, y_train = x_train[train], y_train[train]
    else:
        x_test = _images(raw.x_test, "x_test", origin)
        y_test = _labels(raw.y_test, "y_test", origin, len(x_test), spec.num_classes)
    names = raw.class_names or [str(i) for i in range(spec.num_classes)]
    return ImageData(_fit(x_train, "x_train", origin, spec), y_train,
                     _fit(x_test, "x_test", origin, spec), y_test, names, origin)


def _images(x: np.ndarray, key: str, origin: str) -> np.ndarray:
    if x.dtype != np.uint8:
        raise DataError(f"{origin}: {key} has dtype {x.dtype}; images must be uint8 0..255 "
                        f"(convert e.g. with (x * 255).round().astype(np.uint8))")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[3] not in (1, 3):
        hint = ""
        if x.ndim == 4 and x.shape[1] in (1, 3):
            hint = " (this looks like NCHW: use x.transpose(0, 2, 3, 1))"
        raise DataError(f"{origin}: {key} has shape {x.shape}; images must be N×H×W×C with C = 1 "
                        f"or 3 (uint8 NHWC){hint}")
    if len(x) == 0:
        raise DataError(f"{origin}: {key} holds no images; add images to both splits")
    return x


def _labels(y: np.ndarray, key: str, origin: str, n: int, num_classes: int) -> np.ndarray:
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{origin}: {key} has dtype {y.dtype}; labels must be integer class ids "
                        f"0..num_classes-1")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{origin}: {key} has shape {y.shape}; labels must be a 1-D array of class "
                        f"ids (one-hot labels: use y.argmax(1))")
    x_key = "x" + key[1:]
    if len(y) != n:
        raise DataError(f"{origin}: {x_key} has {n} images but {key} has {len(y)} labels; give "
                        f"one label per image")
    low, high = int(y.min()), int(y.max())
    if low < 0:
        raise DataError(f"{origin}: {key} has negative labels ({int((y < 0).sum())} below 0, the "
                        f"lowest {low}); labels must be class ids 0..{num_classes - 1} "
                        f"(dataset.num_classes {num_classes}); relabel them, or drop the images "
                        f"labelled below 0 (-1 often marks 'unlabelled')")
    if high >= num_classes:
        fix = (f"subtract 1 from the labels (they look 1-based: {low}..{high})"
               if low == 1 and high == num_classes else "fix the labels")
        raise DataError(f"{origin}: {key} has labels in [{low}, {high}] but the space's "
                        f"dataset.num_classes is {num_classes} (ids 0..{num_classes - 1}); {fix} "
                        f"or set dataset.num_classes to {high + 1}")
    return y.astype(np.int64)


def _fit(x: np.ndarray, key: str, origin: str, spec: DatasetSpec) -> np.ndarray:
    """`x` if it has the spec's shape; resized when the spec opts in; else a DataError."""
    size, channels = spec.image_size, spec.channels
    if x.shape[1:] == (size, size, channels):
        return x
    if not spec.resize:
        found = "x".join(str(n) for n in x.shape[1:])
        raise DataError(mismatch(origin, f"{key} images are {found}",
                                 Shape(size, channels), x.shape[1:]))
    return _adapt(x, spec)


def _adapt(x: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    """Convert channels (1 <-> 3) and resize to the spec's square size."""
    import cv2

    size, channels = spec.image_size, spec.channels
    out = np.empty((len(x), size, size, channels), dtype=np.uint8)
    for i, image in enumerate(x):
        if image.shape[2] != channels:
            code = cv2.COLOR_GRAY2RGB if channels == 3 else cv2.COLOR_RGB2GRAY
            image = cv2.cvtColor(image, code)
        if image.shape[:2] != (size, size):
            shrink = image.shape[0] > size or image.shape[1] > size
            interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            image = cv2.resize(image, (size, size), interpolation=interpolation)
        out[i] = image.reshape(size, size, channels)
    return out


def stratified_order(y: np.ndarray, seed: int) -> np.ndarray:
    """A permutation of indices whose every consecutive chunk is stratified by label.

    Each class's members get evenly spaced, jittered ranks in [0, 1) in a random order; sorting by
    rank interleaves the classes in proportion, so any chunk holds each class within ±2 of its
    share.
    """
    rng = np.random.default_rng(seed)
    rank = np.empty(len(y), dtype=np.float64)
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        count = len(members)
        rank[members[rng.permutation(count)]] = (np.arange(count) + rng.random(count)) / count
    return np.argsort(rank, kind="stable")


def make_splits(data: ImageData, spec: DatasetSpec, seed: int) -> Splits:
    """Train subset, validation pool and audit set from the training images; test kept whole.

    Deterministic from `seed`, stratified, shuffled, disjoint. Raises DataError when the
    training images are fewer than the three sizes need.
    """
    sizes = (spec.train_size, spec.val_pool_size, spec.audit_size)
    need, have = sum(sizes), len(data.y_train)
    if need > have:
        raise DataError(
            f"{spec.name}: the splits need {need} training images (train_size {sizes[0]} + "
            f"val_pool_size {sizes[1]} + audit_size {sizes[2]}) but the data has {have}; lower "
            f"these sizes in the space's dataset section or use more data")
    rng = np.random.default_rng((seed, 1))
    order = stratified_order(data.y_train, seed)
    parts, start = [], 0
    labelled = spec.labelled_size
    for size in sizes:
        if start == 0 and labelled is not None:  # the labelled images first: a stratified chunk
            chosen = np.concatenate([rng.permutation(order[:labelled]),
                                     rng.permutation(order[labelled:size])])
        else:
            chosen = rng.permutation(order[start:start + size])
        parts.append(Arrays(data.x_train[chosen], data.y_train[chosen]))
        start += size
    extra = data.x_unlabelled
    return Splits(parts[0], parts[1], parts[2], Arrays(data.x_test, data.y_test), spec.num_classes,
                  labelled, None if extra is None else
                  Arrays(extra, np.full(len(extra), -1, dtype=np.int64)))
