"""Loading real data, adapting it to the spec, and the search's splits."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from children.datasets import DataError, ImageData, load_dataset, make_splits, stratified_order
from spaces.schema import DatasetSpec


def test_digits_are_real_uint8_images_with_a_fixed_stratified_test_split(digits_data, digits_space):
    assert digits_data.x_train.shape == (1497, 16, 16, 1)
    assert digits_data.x_test.shape == (300, 16, 16, 1)
    assert digits_data.x_train.dtype == np.uint8 and digits_data.y_train.dtype == np.int64
    assert digits_data.x_train.max() == 255 and digits_data.x_train.min() == 0
    assert np.bincount(digits_data.y_test).min() >= 29  # ~30 of each digit
    again = load_dataset(digits_space.dataset)
    assert np.array_equal(again.x_test, digits_data.x_test)
    assert digits_data.class_names == [str(i) for i in range(10)]


def test_channels_and_size_are_adapted_when_the_space_opts_in(digits_space):
    spec = digits_space.dataset.model_copy(update={"channels": 3, "image_size": 32})
    assert spec.resize  # the digits space opts in: its images are 8x8
    data = load_dataset(spec)
    assert data.x_train.shape[1:] == (32, 32, 3) and data.x_test.shape[1:] == (32, 32, 3)
    assert np.array_equal(data.x_train[..., 0], data.x_train[..., 2])  # gray replicated


def test_a_shape_mismatch_without_the_opt_in_names_data_and_space(digits_space):
    spec = digits_space.dataset.model_copy(update={"resize": False})
    with pytest.raises(DataError) as err:
        load_dataset(spec)
    assert str(err.value) == (
        "digits: x_train images are 8x8x1 but the space's dataset is 16x16x1 "
        "(dataset.image_size 16, dataset.channels 1); set dataset.image_size: 8 and "
        "dataset.channels: 1 to match the data, or set dataset.resize: true to resize the images")


def _tagged(data: ImageData) -> ImageData:
    """Digits whose top-left two pixels (always 0 in digits) encode the image's index."""
    x = data.x_train.copy()
    index = np.arange(len(x))
    x[:, 0, 0, 0], x[:, 0, 1, 0] = index % 256, index // 256
    return ImageData(x, data.y_train, data.x_test, data.y_test, data.class_names)


def _ids(x: np.ndarray) -> np.ndarray:
    return x[:, 0, 0, 0].astype(int) + 256 * x[:, 0, 1, 0].astype(int)


def test_splits_are_disjoint_stratified_sized_and_deterministic(digits_data, digits_space):
    spec = digits_space.dataset
    data = _tagged(digits_data)
    splits = make_splits(data, spec, seed=3)
    parts = (splits.train, splits.val_pool, splits.audit)
    assert [len(p) for p in parts] == [spec.train_size, spec.val_pool_size, spec.audit_size]
    ids = [set(_ids(p.x)) for p in parts]
    assert sum(len(i) for i in ids) == len(set().union(*ids)) == sum(len(p) for p in parts)
    share = np.bincount(data.y_train) / len(data.y_train)
    for part in parts:
        counts = np.bincount(part.y, minlength=10)
        assert np.all(np.abs(counts - share * len(part)) <= 2), counts
        assert np.array_equal(data.y_train[_ids(part.x)], part.y)  # labels stay with images
    assert len(set(part.y[:20])) > 3  # shuffled, not sorted by class
    same = make_splits(data, spec, seed=3)
    other = make_splits(data, spec, seed=4)
    assert np.array_equal(same.train.x, splits.train.x) and np.array_equal(same.audit.y,
                                                                          splits.audit.y)
    assert not np.array_equal(_ids(other.train.x), _ids(splits.train.x))
    assert splits.test.x is data.x_test and splits.num_classes == 10


def test_stratified_order_spreads_classes_over_every_chunk():
    y = np.repeat(np.arange(4), [10, 20, 30, 40])
    order = stratified_order(y, seed=0)
    assert sorted(order) == list(range(100))
    for start in range(0, 100, 25):
        counts = np.bincount(y[order[start:start + 25]], minlength=4)
        assert np.all(np.abs(counts - np.array([2.5, 5, 7.5, 10])) <= 2), counts


def test_cifar_tiny_npz_loads_and_splits(cifar_tiny, dataset_spec):
    spec = dataset_spec(path=str(cifar_tiny), image_size=32, channels=3, train_size=100,
                        val_pool_size=60, audit_size=40)
    data = load_dataset(spec)
    assert data.x_train.shape == (200, 32, 32, 3) and data.x_test.shape == (100, 32, 32, 3)
    assert data.class_names[0] == "airplane"
    splits = make_splits(data, spec, seed=0)
    assert np.bincount(splits.train.y).tolist() == [10] * 10
    gray = load_dataset(dataset_spec(path=str(cifar_tiny), image_size=16, channels=1,
                                     resize=True))
    assert gray.x_train.shape == (200, 16, 16, 1)


def _write_class_folders(root: Path, data: ImageData, classes: int, per_class: int) -> None:
    for label in range(classes):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True)
        images = data.x_train[data.y_train == label][:per_class]
        for i, image in enumerate(images):
            assert cv2.imwrite(str(folder / f"{i:03d}.png"), image)


def test_image_folder_with_and_without_a_test_split(tmp_path, digits_data, dataset_spec):
    flat = tmp_path / "flat"
    _write_class_folders(flat, digits_data, classes=3, per_class=30)
    spec = dataset_spec(name="folder", path=str(flat), num_classes=3, image_size=16,
                        train_size=40, val_pool_size=20, audit_size=10)
    data = load_dataset(spec)
    assert data.class_names == ["class_0", "class_1", "class_2"]
    assert len(data.x_train) + len(data.x_test) == 90 and len(data.x_test) == 15
    assert data.x_train.shape[1:] == (16, 16, 1)
    split = tmp_path / "split"
    _write_class_folders(split / "train", digits_data, classes=3, per_class=20)
    _write_class_folders(split / "test", digits_data, classes=3, per_class=5)
    data = load_dataset(spec, data=str(split))
    assert len(data.x_train) == 60 and np.bincount(data.y_test).tolist() == [5, 5, 5]
    assert data.x_train.shape[1:] == (16, 16, 1)
    small = load_dataset(spec.model_copy(update={"image_size": 8, "resize": True}), data=str(split))
    assert small.x_train.shape[1:] == (8, 8, 1)


def test_missing_torchvision_files_offline_fail_at_once_with_the_fix(tmp_path):
    spec = DatasetSpec(name="cifar10", train_size=4000, val_pool_size=1000, audit_size=500,
                       image_size=32, channels=3, num_classes=10)
    with pytest.raises(DataError) as err:
        load_dataset(spec, data_dir=str(tmp_path), download=False)
    message = str(err.value)
    assert message.startswith("cifar10: files not found in ")
    assert str(tmp_path) in message and "--data-dir" in message and "--data FILE.npz" in message
    assert "\n" not in message
