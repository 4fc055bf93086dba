"""Shared real data for the children tests: scikit-learn digits and ../shared/data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from children.datasets import ImageData, Splits, load_dataset, make_splits
from spaces.schema import DatasetSpec, Space, load_space
from tests.conftest import shared_file

# The children tests pin their own budget, so retuning the built-in space keeps them fast.
PINNED = {
    "dataset.train_size": 400, "dataset.val_pool_size": 600, "dataset.audit_size": 300,
    "dataset.image_size": 16, "dataset.channels": 1, "child.model": "basiccnn",
    "child.width": 16, "child.epochs": 15, "child.batch_size": 64,
    "child.base_augmentation.crop_padding": 2, "reward.last_epochs": 3,
    "reward.val_sample_size": 400,
}


@pytest.fixture(scope="session")
def digits_space() -> Space:
    """The built-in digits space with the budget these tests were written for."""
    return load_space("digits").replace(**PINNED)


@pytest.fixture(scope="session")
def digits_data(digits_space: Space) -> ImageData:
    return load_dataset(digits_space.dataset)


@pytest.fixture(scope="session")
def digits_splits(digits_data: ImageData, digits_space: Space) -> Splits:
    return make_splits(digits_data, digits_space.dataset, seed=0)


@pytest.fixture(scope="session")
def cifar_tiny() -> Path:
    return shared_file("cifar10_tiny.npz")


@pytest.fixture(scope="session")
def dataset_spec() -> Callable[..., DatasetSpec]:
    """Builds a DatasetSpec for user data with small split sizes; keywords override fields."""

    def build(**changes: object) -> DatasetSpec:
        fields: dict[str, object] = dict(name="npz", path="unused", train_size=50,
                                         val_pool_size=30, audit_size=20, image_size=16,
                                         channels=1, num_classes=10)
        fields.update(changes)
        return DatasetSpec(**fields)

    return build
