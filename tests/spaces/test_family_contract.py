"""The policy-family contract: every registered family (and a toy plug-in registered here)
turns the space into dimensions inside it and every point of them into a valid policy, the same
one each time, that both augmentation paths run.

What each family emits is checked before anything normalises it: `family.decode` (not the
compiler, which adds the batch ops), PBT's initial population and explored configs as drawn.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from children.tensor_aug import BatchedPipeline, Draws
from search.trials.compile import decode, sample_configs
from search.trials.pbt import Explore, initial_population
from spaces.families import (
    DEFAULT_FAMILY,
    Dim,
    Family,
    family_names,
    family_of,
    get_family,
    register_family,
    unregister_family,
)
from spaces.families.subpolicies import bounds
from spaces.policy import (
    Op,
    Policy,
    SubPolicy,
    build_pipeline,
    export_albumentations,
    load_policy,
    policy_from_dict,
    policy_to_dict,
    save_policy,
)
from spaces.schema import Space
from tests.devicecheck import OneDevice
from tests.spaces.family_spaces import family_space

TOY = "oneop"


class OneOp(Family):
    """A toy plug-in: one op per image, the op and its level searched."""

    name = TOY
    summary = "one searched op at a searched level"

    def dimensions(self, space: Space) -> list[Dim]:
        return [Dim("toy_op", choices=tuple(o.name for o in space.policy.ops)), Dim("toy_level")]

    def decode(self, space: Space, config: dict[str, Any]) -> Policy:
        name = str(config["toy_op"])
        low, high = bounds(space)[name]
        magnitude = low + (high - low) * float(config["toy_level"])
        return Policy((SubPolicy((Op(name, round(magnitude, 6), 1.0),)),))

    def describe(self, space: Space) -> str:
        return "one op at a level"


@pytest.fixture(scope="module", autouse=True)
def toy_family() -> Iterator[None]:
    register_family(OneOp())
    yield
    unregister_family(TOY)


NAMES = [*family_names(), TOY]


@pytest.fixture(params=NAMES)
def space(request: pytest.FixtureRequest) -> Space:
    return family_space(request.param)


def _images(n: int = 8, channels: int = 1) -> np.ndarray:
    """Real 16x16 digits (uint8 N×16×16×C)."""
    digits = np.kron(load_digits().images[:n], np.ones((2, 2))) * (255 / 16)
    return np.repeat(np.rint(digits).astype(np.uint8)[..., None], channels, axis=-1)


def _configs(space: Space) -> list[dict[str, Any]]:
    """What the searchers hand the family: define-by-run samples, PBT's population and its
    explored members."""
    sampled = sample_configs(space, 30, seed=1)
    population = initial_population(space, 10, seed=2)
    explore = Explore(space, seed=3)
    explored = [explore(member) for member in population for _ in range(3)]
    return sampled + population + explored


def _inside(space: Space, policy: Policy) -> None:
    declared = bounds(space)
    ops = policy.draw.ops if policy.draw is not None else [
        op for sub in policy.sub_policies for op in sub.ops]
    assert ops
    for op in ops:
        low, high = declared[op.name]
        magnitudes = op.magnitude if isinstance(op.magnitude, tuple) else (op.magnitude,)
        assert all(low - 1e-9 <= m <= high + 1e-9 or m == 0.0 for m in magnitudes), op
        assert 0.0 <= op.probability <= 1.0


def test_dimensions_are_well_formed_and_every_searched_value_lies_inside_them(space) -> None:
    family = family_of(space)
    dims = family.dimensions(space)
    names = [d.name for d in dims]
    assert len(set(names)) == len(names) and family.count_dimensions(space) >= len(dims)
    ops = {o.name for o in space.policy.ops}
    for dim in dims:
        assert "/" not in dim.name and not dim.name.startswith("_")
        if dim.categorical:
            assert set(dim.choices) <= ops
        else:
            assert math.isfinite(dim.low) and dim.low <= dim.high
            assert not dim.integer or (dim.low == int(dim.low) and dim.high == int(dim.high))
    by_name = {d.name: d for d in dims}
    for config in _configs(space):
        for key, value in config.items():
            dim = by_name.get(key)
            if dim is None:
                continue
            if dim.categorical:
                assert value in dim.choices
            else:
                assert dim.low <= value <= dim.high, (key, value)
                assert not dim.integer or isinstance(value, int), (key, value)


def test_every_config_decodes_to_a_valid_policy_inside_the_space(space) -> None:
    family = family_of(space)
    for config in _configs(space):
        policy = family.decode(space, config)
        assert policy.batch == Policy().batch  # batch ops are the compiler's
        _inside(space, policy)
        assert policy_from_dict(policy_to_dict(policy), "decoded") == policy


def test_identical_configs_decode_identically(space) -> None:
    for config in sample_configs(space, 5, seed=4):
        assert decode(space, config) == decode(space, dict(config)) == decode(space, config)
    first, second = sample_configs(space, 2, seed=4)
    assert decode(space, first) != decode(space, second)


def test_sampling_is_reproducible_under_a_seed(space) -> None:
    assert sample_configs(space, 4, seed=7) == sample_configs(space, 4, seed=7)
    assert sample_configs(space, 4, seed=7) != sample_configs(space, 4, seed=8)
    assert initial_population(space, 4, seed=7) == initial_population(space, 4, seed=7)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_decoded_policy_round_trips(space, tmp_path: Path, suffix: str) -> None:
    policy = decode(space, sample_configs(space, 1, seed=5)[0])
    again = load_policy(save_policy(policy, tmp_path / f"best_policy{suffix}"))
    assert again == policy


def test_the_albumentations_export_loads_and_runs_on_real_images(space, tmp_path: Path) -> None:
    import albumentations as A

    policy = decode(space, sample_configs(space, 1, seed=6)[0])
    base, size = space.child.base_augmentation, space.dataset.image_size
    loaded = A.load(str(export_albumentations(policy, base, size, tmp_path / "p.json")),
                    data_format="json")
    again = build_pipeline(policy, base, size)
    loaded.set_random_seed(1)
    again.set_random_seed(1)
    for channels in (1, 3):
        for image in _images(channels=channels):
            out = loaded(image=image)["image"]
            assert out.dtype == np.uint8 and out.shape == image.shape
            assert np.array_equal(out, again(image=image)["image"])


def test_the_batched_path_runs_on_cpu_and_on_meta_without_a_host_sync(space) -> None:
    policy = decode(space, sample_configs(space, 1, seed=6)[0])
    size = space.dataset.image_size
    pipe = BatchedPipeline(policy, space.child.base_augmentation, size)
    assert pipe.missing == []
    x = torch.from_numpy(_images(32)).permute(0, 3, 1, 2).contiguous()
    out = pipe(x, Draws(3))
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert torch.equal(out, pipe(x, Draws(3))) and not torch.equal(out, pipe(x, Draws(4)))
    meta = torch.empty(32, 1, size, size, dtype=torch.uint8, device="meta")
    pipe(meta, Draws(0, "meta"))  # what it keeps per device and strength, made once
    with OneDevice() as check:
        moved = pipe(meta, Draws(1, "meta"))
    assert moved.device.type == "meta" and moved.shape == meta.shape and check.moves == []


def test_an_identity_config_decodes_to_the_base(space) -> None:
    identity = family_of(space).identity_config(space)
    if identity is None:
        pytest.skip(f"family {space.policy.family} has no config that decodes to the base")
    pipe = build_pipeline(decode(space, identity), None, space.dataset.image_size, seed=0)
    for image in _images():
        assert np.array_equal(pipe(image=image)["image"], image)


def test_the_family_describes_itself_in_one_line(space) -> None:
    text = family_of(space).describe(space)
    assert text and "\n" not in text


def test_the_registry_refuses_unknown_and_taken_names_and_keeps_the_default() -> None:
    with pytest.raises(ValueError, match="unknown policy family 'randaugmnet'; registered "
                                         "families: subpolicies, randaugment, trivialaugment"):
        get_family("randaugmnet")
    with pytest.raises(ValueError, match="already registered"):
        register_family(OneOp())
    with pytest.raises(ValueError, match="cannot be unregistered"):
        unregister_family(DEFAULT_FAMILY)
    assert family_space(TOY).policy.family == TOY
