"""Readers for every kind of image data augsearch trains on, each returning raw arrays.

`children.datasets` checks and adapts what these return; the readers only get the bytes into
numpy and turn I/O problems into one-line `DataError`s that name the file and the fix.
"""

from __future__ import annotations

import socket
import zipfile
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import numpy as np

from children.classes import capped_names
from children.errors import DataError

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")
TORCHVISION = ("cifar10", "cifar100", "svhn")
_NPZ_FIX = "save it with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"


class Raw(NamedTuple):
    """Arrays as read, before checks; x_test/y_test are None when the source has no test split."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    class_names: list[str] | None


def read_digits() -> Raw:
    """scikit-learn's bundled 1,797 handwritten digits: 8x8, values 0..16 scaled to uint8 0..255."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    y = bunch.target.astype(np.int64)
    return Raw(x, y, None, None, [str(name) for name in bunch.target_names])


def read_npz(path: Path) -> Raw:
    """An .npz archive with x_train, y_train, x_test, y_test (and optionally class_names)."""
    try:
        with open(path, "rb") as file:
            head = file.read(6)
    except OSError as err:
        raise DataError(f"{path}: cannot read the file ({err.strerror}); check its "
                        f"permissions") from None
    if head.startswith(b"\x93NUMPY"):
        raise DataError(f"{path}: holds a single .npy array, not an .npz archive of x_train, "
                        f"y_train, x_test, y_test; {_NPZ_FIX}")
    if not head.startswith(b"PK"):
        raise DataError(f"{path}: not an .npz archive (no zip signature at the start); "
                        f"{_NPZ_FIX}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: corrupt .npz archive ({_reason(err)}); {_NPZ_FIX}") from None
    with archive:
        missing = [key for key in NPZ_KEYS if key not in archive.files]
        if missing:
            unlabelled = ("; images without labels can pre-train views: reward.kind: "
                          "self_supervised with dataset.labelled_size: 0 and reward.ssl.score: "
                          "rotation" if "y_train" in missing and {"x", "x_train"} & set(
                              archive.files) else "")
            raise DataError(f"{path}: missing key(s) {', '.join(missing)} (found: "
                            f"{', '.join(archive.files) or 'none'}); an .npz needs "
                            f"{', '.join(NPZ_KEYS)}{unlabelled}")
        arrays = [_npz_array(archive, key, path) for key in NPZ_KEYS]
        names = None
        if "class_names" in archive.files:
            values = _npz_array(archive, "class_names", path)
            if values.ndim != 1:
                raise DataError(f"{path}: class_names has shape {values.shape}; store a 1-D "
                                f"array of names, e.g. np.array(['cat', 'dog'])")
            names = [str(v) for v in values]
    return Raw(arrays[0], arrays[1], arrays[2], arrays[3], names)


def _npz_array(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(archive[key])
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise DataError(f"{path}: '{key}' is stored as pickled Python objects; store a plain "
                            f"numeric (or string) array") from None
        raise DataError(f"{path}: cannot read '{key}' ({_reason(err)}); {_NPZ_FIX}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: '{key}' is corrupt ({_reason(err)}); {_NPZ_FIX}") from None


class Shape(NamedTuple):
    """The image shape a space expects, and whether other shapes may be converted to it."""

    size: int
    channels: int
    resize: bool = False


def read_folder(root: Path, shape: Shape) -> Raw:
    """Images in one subfolder per class: `root/<class>/*` or `root/train|test/<class>/*`.

    Every image must have the space's size and channels, unless the space opts in to resizing:
    then images are decoded with OpenCV straight into `shape.channels` (RGB order) and resized.
    """
    train_dir, test_dir = root / "train", root / "test"
    if train_dir.is_dir() and test_dir.is_dir():
        classes = _class_dirs(train_dir)
        x_train, y_train = _read_classes(train_dir, classes, shape)
        unknown = sorted({p.name for p in test_dir.iterdir() if p.is_dir()} - set(classes))
        if unknown:
            raise DataError(f"{test_dir}: class folder(s) {capped_names(unknown)} are not in "
                            f"{train_dir}; test classes must be train classes")
        present = [c for c in classes if (test_dir / c).is_dir()]
        x_test, y_test = _read_classes(test_dir, present, shape, classes)
        return Raw(x_train, y_train, x_test, y_test, classes)
    classes = _class_dirs(root)
    x, y = _read_classes(root, classes, shape)
    return Raw(x, y, None, None, classes)


def _class_dirs(root: Path) -> list[str]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class subfolders; put each class's images in its own "
                        f"folder, e.g. {root}/cat/0001.png, {root}/dog/0001.png")
    return classes


def _read_classes(
    root: Path, classes: list[str], shape: Shape, label_of: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    label_of = label_of or classes
    images, labels = [], []
    for name in classes:
        files = sorted(p for p in (root / name).iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{root / name}: class folder has no images "
                            f"({', '.join(IMAGE_SUFFIXES)}); add images or remove the folder")
        for file in files:
            images.append(_read_image(file, shape))
            labels.append(label_of.index(name))
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _read_image(file: Path, shape: Shape) -> np.ndarray:
    """One image as uint8 H×W×C (RGB), checked against (or converted to) the space's shape."""
    import cv2

    if shape.resize:
        flag = cv2.IMREAD_GRAYSCALE if shape.channels == 1 else cv2.IMREAD_COLOR
    else:
        flag = cv2.IMREAD_ANYCOLOR  # as stored (8-bit), so a mismatch can be named
    image = cv2.imread(str(file), flag)
    if image is None:
        raise DataError(f"{file}: cannot decode this image; delete or replace the file")
    image = image.reshape(*image.shape[:2], -1)
    if not shape.resize:
        found = "x".join(str(n) for n in image.shape)
        wanted = f"{shape.size}x{shape.size}x{shape.channels}"
        if found != wanted:
            raise DataError(mismatch(str(file), f"image is {found}", shape, image.shape))
    if image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.shape[:2] != (shape.size, shape.size):
        image = cv2.resize(image, (shape.size, shape.size), interpolation=cv2.INTER_AREA)
    return image.reshape(shape.size, shape.size, shape.channels)


def has_labels(path: Path) -> bool:
    """Whether an .npz holds y_train or a folder holds class subfolders (labelled data); images
    without them are unlabelled (`read_unlabelled`)."""
    if path.is_dir():
        return any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir())
    try:
        with np.load(path, allow_pickle=False) as archive:
            return "y_train" in archive.files
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return True  # not readable as an .npz: read_npz names the problem


def read_unlabelled(path: Path, shape: Shape) -> np.ndarray:
    """Images without labels: an .npz's `x` (or `x_train`; labels ignored) or every image file
    under a folder (class folders ignored), uint8 N×H×W(×C) as stored or converted to `shape`
    (resize). Raises DataError naming the file and the fix."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file()
                       and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{path}: holds no images ({', '.join(IMAGE_SUFFIXES)}); put the "
                            f"unlabelled images in it")
        return np.stack([_read_image(f, shape) for f in files])
    if not path.is_file():
        raise DataError(f"{path}: no such file or folder; give an .npz holding x or an image "
                        f"folder")
    fix = "save it with np.savez(path, x=images) (uint8 N×H×W×C)"
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a readable .npz archive ({_reason(err)}); {fix}") from None
    with archive:
        key = next((k for k in ("x", "x_train") if k in archive.files), None)
        if key is None:
            raise DataError(f"{path}: has no images under x or x_train (found: "
                            f"{', '.join(archive.files) or 'none'}); {fix}")
        return _npz_array(archive, key, path)


def mismatch(origin: str, found: str, shape: Shape, data_shape: tuple[int, ...]) -> str:
    """The one-line refusal of data whose image shape is not the space's."""
    h, w, c = data_shape
    match = (f"set dataset.image_size: {h} and dataset.channels: {c} to match the data, or "
             if h == w and c in (1, 3) else "")
    return (f"{origin}: {found} but the space's dataset is {shape.size}x{shape.size}x"
            f"{shape.channels} (dataset.image_size {shape.size}, dataset.channels "
            f"{shape.channels}); {match}set dataset.resize: true to resize the images")


def read_torchvision(name: str, root: Path, download: bool) -> Raw:
    """CIFAR-10/100 or SVHN through torchvision, downloaded into `root` when allowed.

    Files already in `root` are used without touching the network; before a download the host
    is probed with a short timeout, so an offline machine fails at once instead of hanging.
    """
    fix = f"put the torchvision files in {root} or pass --data-dir DIR / --data FILE.npz"
    try:
        return _torchvision(name, root, download=False)
    except (OSError, RuntimeError):
        if not download:
            raise DataError(f"{name}: files not found in {root} and downloading is off; "
                            f"{fix}") from None
    try:
        _probe(_download_url(name))
        return _torchvision(name, root, download=True)
    except (OSError, RuntimeError) as err:  # URLError, timeouts and SSL errors are OSErrors
        raise DataError(f"{name}: download failed (no network?: {_reason(err)}); {fix}") from None


def _torchvision(name: str, root: Path, download: bool) -> Raw:
    import torchvision.datasets as tvd

    if name == "svhn":
        train = tvd.SVHN(str(root), split="train", download=download)
        test = tvd.SVHN(str(root), split="test", download=download)
        return Raw(train.data.transpose(0, 2, 3, 1), np.asarray(train.labels),
                   test.data.transpose(0, 2, 3, 1), np.asarray(test.labels),
                   [str(i) for i in range(10)])
    cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
    train = cls(str(root), train=True, download=download)
    test = cls(str(root), train=False, download=download)
    return Raw(np.asarray(train.data), np.asarray(train.targets), np.asarray(test.data),
               np.asarray(test.targets), list(train.classes))


def _download_url(name: str) -> str:
    import torchvision.datasets as tvd

    if name == "svhn":
        return tvd.SVHN.split_list["train"][0]
    return (tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100).url


def _probe(url: str, timeout: float = 10.0) -> None:
    """Raise OSError unless the URL's host accepts a TCP connection within `timeout` seconds."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    with socket.create_connection((parts.hostname or "", port), timeout=timeout):
        pass


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split())
    text = text[:120] + "..." if len(text) > 120 else text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
