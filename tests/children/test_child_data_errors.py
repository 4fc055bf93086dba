"""The data error corpus: every bad dataset gives its own one-line DataError."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from children.datasets import DataError, ImageData, load_dataset, make_splits

Case = Callable[[Path, ImageData], tuple[Path, dict]]


def _arrays(data: ImageData, n: int = 200) -> dict[str, np.ndarray]:
    return {"x_train": data.x_train[:n], "y_train": data.y_train[:n].astype(np.uint8),
            "x_test": data.x_test[:50], "y_test": data.y_test[:50].astype(np.uint8)}


def _npz(tmp: Path, name: str = "data.npz", **arrays: np.ndarray) -> Path:
    path = tmp / name
    np.savez(path, **arrays)
    return path


def missing_key(tmp, data):
    arrays = _arrays(data)
    del arrays["y_test"]
    return _npz(tmp, **arrays), {}


def float_images(tmp, data):
    arrays = _arrays(data)
    arrays["x_train"] = arrays["x_train"].astype(np.float32) / 255
    return _npz(tmp, **arrays), {}


def labels_out_of_range(tmp, data):
    arrays = _arrays(data)
    arrays["y_train"][7] = 12
    return _npz(tmp, **arrays), {}


def mismatched_lengths(tmp, data):
    arrays = _arrays(data)
    arrays["y_train"] = arrays["y_train"][:-1]
    return _npz(tmp, **arrays), {}


def float_labels(tmp, data):
    arrays = _arrays(data)
    arrays["y_test"] = arrays["y_test"].astype(np.float64)
    return _npz(tmp, **arrays), {}


def channels_first(tmp, data):
    arrays = _arrays(data)
    arrays["x_train"] = np.repeat(arrays["x_train"], 3, axis=3).transpose(0, 3, 1, 2)
    return _npz(tmp, **arrays), {}


def pickled_objects(tmp, data):
    arrays = _arrays(data)
    arrays["y_train"] = np.array(list(arrays["y_train"]), dtype=object)
    return _npz(tmp, **arrays), {}


def corrupt_bytes(tmp, data):
    path = tmp / "data.npz"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path, {}


def truncated_npz(tmp, data):
    path = _npz(tmp, **_arrays(data))
    path.write_bytes(path.read_bytes()[:3000])
    return path, {}


def single_npy_array(tmp, data):
    path = tmp / "data.npy"
    np.save(path, data.x_train[:10])
    return path, {}


def missing_path(tmp, data):
    return tmp / "nowhere.npz", {}


def empty_folder(tmp, data):
    folder = tmp / "images"
    folder.mkdir()
    return folder, {"name": "folder"}


def class_without_images(tmp, data):
    folder = tmp / "images"
    (folder / "cat").mkdir(parents=True)
    (folder / "cat" / "notes.txt").write_text("no images here")
    return folder, {"name": "folder"}


def undecodable_image(tmp, data):
    folder = tmp / "images" / "cat"
    folder.mkdir(parents=True)
    (folder / "0001.png").write_bytes(b"this is not a png")
    return folder.parent, {"name": "folder"}


def too_few_class_folders(tmp, data):
    for label in range(3):
        folder = tmp / "images" / f"digit_{label}"
        folder.mkdir(parents=True)
        for i, image in enumerate(data.x_train[data.y_train == label][:5]):
            assert cv2.imwrite(str(folder / f"{i}.png"), image)
    return tmp / "images", {"name": "folder"}


def size_differs(tmp, data):
    return _npz(tmp, **_arrays(data)), {"image_size": 32}


def channels_differ(tmp, data):
    return _npz(tmp, **_arrays(data)), {"channels": 3}


def folder_image_size_differs(tmp, data):
    folder = tmp / "images"
    for label in range(10):
        (folder / str(label)).mkdir(parents=True)
        assert cv2.imwrite(str(folder / str(label) / "0.png"), data.x_train[label])
    return folder, {"name": "folder", "image_size": 8}


def too_small_for_splits(tmp, data):
    return _npz(tmp, **_arrays(data, n=90)), {}


CASES: dict[str, tuple[Case, str]] = {
    "missing key": (missing_key, "missing key(s) y_test (found: x_train, y_train, x_test)"),
    "wrong image dtype": (float_images, "x_train has dtype float32; images must be uint8"),
    "labels out of range": (labels_out_of_range,
                            "y_train has labels in [0, 12] but the space's dataset.num_classes is"
                            " 10"),
    "mismatched lengths": (mismatched_lengths, "x_train has 200 images but y_train has 199 labels"),
    "float labels": (float_labels, "y_test has dtype float64; labels must be integer class ids"),
    "channels first": (channels_first, "this looks like NCHW: use x.transpose(0, 2, 3, 1)"),
    "pickled objects": (pickled_objects, "'y_train' is stored as pickled Python objects"),
    "corrupt bytes": (corrupt_bytes, "not an .npz archive (no zip signature at the start)"),
    "truncated npz": (truncated_npz, "corrupt .npz archive (BadZipFile"),
    "single npy": (single_npy_array, "holds a single .npy array, not an .npz archive"),
    "missing path": (missing_path, "no such file or folder; pass --data"),
    "empty folder": (empty_folder, "no class subfolders"),
    "class without images": (class_without_images, "class folder has no images"),
    "undecodable image": (undecodable_image, "cannot decode this image"),
    "class count differs": (too_few_class_folders, "has 3 class folders but the space's "
                                                   "dataset.num_classes is 10"),
    "image size differs": (size_differs, "x_train images are 16x16x1 but the space's dataset "
                                         "is 32x32x1 (dataset.image_size 32, dataset.channels 1)"
                                         "; set dataset.image_size: 16 and dataset.channels: 1"),
    "channels differ": (channels_differ, "x_train images are 16x16x1 but the space's dataset is "
                                         "16x16x3"),
    "folder image size differs": (folder_image_size_differs,
                                  "image is 16x16x1 but the space's dataset is 8x8x1"),
    "too small for the splits": (too_small_for_splits,
                                 "the splits need 100 training images (train_size 50 + "
                                 "val_pool_size 30 + audit_size 20) but the data has 90"),
}


def _message(name: str, tmp: Path, data: ImageData, dataset_spec) -> str:
    make, _ = CASES[name]
    path, changes = make(tmp, data)
    spec = dataset_spec(path=str(path), **changes)
    with pytest.raises(DataError) as err:
        make_splits(load_dataset(spec), spec, seed=0)
    return str(err.value)


@pytest.mark.parametrize("name", list(CASES))
def test_each_bad_dataset_fails_with_its_own_one_line_error(name, tmp_path, digits_data,
                                                            dataset_spec):
    message = _message(name, tmp_path, digits_data, dataset_spec)
    assert CASES[name][1] in message
    assert "\n" not in message
    assert ";" in message  # problem; fix


def test_the_corpus_messages_are_all_different(tmp_path, digits_data, dataset_spec):
    messages = set()
    for i, name in enumerate(CASES):
        folder = tmp_path / str(i)
        folder.mkdir()
        messages.add(_message(name, folder, digits_data, dataset_spec).replace(str(folder), ""))
    assert len(messages) == len(CASES)


# ---------------------------------------------------------------- long class lists


def _many_classes(tmp: Path, data: ImageData, dataset_spec) -> tuple[ImageData, object]:
    """10,000 declared classes; the 6,000 training images hold the 5,000 even ones, every
    one of them in runs of one (the worst case for a list of runs)."""
    from children.datasets import load_dataset

    x = np.tile(data.x_train[:1500], (4, 1, 1, 1))
    y = (np.arange(len(x)) % 5000) * 2
    path = _npz(tmp, x_train=x, y_train=y, x_test=data.x_test[:50], y_test=y[:50])
    spec = dataset_spec(path=str(path), num_classes=10_000)
    return load_dataset(spec), spec


def test_class_lists_in_messages_are_capped(tmp_path, digits_data, dataset_spec) -> None:
    from children.classes import check_classes, class_ids

    data, spec = _many_classes(tmp_path, digits_data, dataset_spec)
    with pytest.raises(DataError) as err:
        check_classes(data, make_splits(data, spec, seed=0), spec)
    message = str(err.value)
    line = message.replace(str(tmp_path / "data.npz"), "data.npz")  # was 25,000 characters
    assert len(line) < 320 and "\n" not in line, (len(line), line)  # ~230 of them fixed text
    assert "y_train has no image of classes 1, 3, 5, 7, 9, … (4995 more): add " \
           "images of every class, or set dataset.num_classes to 5000 and relabel the classes " \
           "0..4999" in message
    assert class_ids({0, 1, 2, 3, 7, 9}) == "0-3, 7, 9"  # short lists stay whole
    assert class_ids(range(0, 40, 2)) == "0, 2, 4, 6, 8, … (15 more)"
    assert class_ids([*range(100), *range(200, 300)]) == "0-99, 200-299"


def test_unknown_test_class_folders_are_capped(tmp_path, digits_data, dataset_spec) -> None:
    image = np.zeros((16, 16), np.uint8)
    for split, names in (("train", ["a"]), ("test", ["a", *(f"extra{k:03d}" for k in
                                                             range(200))])):
        for name in names:
            (tmp_path / "images" / split / name).mkdir(parents=True)
            assert cv2.imwrite(str(tmp_path / "images" / split / name / "0.png"), image)
    spec = dataset_spec(path=str(tmp_path / "images"), num_classes=2)
    with pytest.raises(DataError) as err:
        load_dataset(spec)
    message = str(err.value)
    assert len(message) < 400 and "extra000, extra001" in message and "(195 more)" in message
