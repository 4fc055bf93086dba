"""Policies as data: golden file, round trips, export to plain albumentations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from search.trials.compile import count_dimensions, decode, sample_configs, sample_policies
from spaces.errors import SpaceError
from spaces.policy import (
    BatchOps,
    Op,
    Policy,
    SubPolicy,
    build_pipeline,
    export_albumentations,
    flat_params,
    identity_policy,
    load_policy,
    policy_from_dict,
    policy_to_dict,
    save_policy,
)
from spaces.schema import BaseAug, load_space

GOLDEN = Path(__file__).parent / "golden" / "policy_v1.yaml"


def _images(n: int = 6, size: int = 32) -> np.ndarray:
    from sklearn.datasets import load_digits

    digits = load_digits().images[:n]  # real 8x8 digits, values 0..16
    big = np.kron(digits, np.ones((size // 8, size // 8))) * (255 / 16)
    rgb = np.stack([big, big * 0.6 + 40, 255 - big], axis=-1)
    return rgb.clip(0, 255).astype(np.uint8)


def test_golden_policy_keeps_loading() -> None:
    policy = load_policy(GOLDEN)
    assert len(policy.sub_policies) == 3
    assert policy.sub_policies[0].ops[0] == Op("Rotate", 0.4, 0.7)
    assert policy.sub_policies[2].ops[1] == Op("Color", 0.6, 0.4)
    assert policy.batch == BatchOps(mixup_alpha=0.2)
    assert policy.provenance["searcher"] == "tpe"


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    policy = load_policy(GOLDEN)
    again = load_policy(save_policy(policy, tmp_path / f"p{suffix}"))
    assert again == policy
    assert again.provenance == policy.provenance


def test_export_loads_with_plain_albumentations_and_applies(tmp_path: Path) -> None:
    policy = load_policy(GOLDEN)
    base = BaseAug(crop=True, crop_padding=4, flip=True)
    path = export_albumentations(policy, base, 32, tmp_path / "best_policy.json")
    # A user's process: plain albumentations, no augsearch import.
    code = (
        "import os, sys, numpy as np; os.environ['NO_ALBUMENTATIONS_UPDATE']='1'\n"
        "import albumentations as A\n"
        f"t = A.load({str(path)!r}, data_format='json')\n"
        "img = np.full((32, 32, 3), 128, np.uint8); img[8:24, 8:24] = 250\n"
        "outs = [t(image=img)['image'] for _ in range(20)]\n"
        "assert all(o.shape == img.shape and o.dtype == np.uint8 for o in outs)\n"
        "print(sum(int((o != img).any()) for o in outs))\n"
        "print('augsearch' in sys.modules or 'spaces' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    changed, leaked = proc.stdout.split()
    assert int(changed) >= 15 and leaked == "False"


def test_exported_pipeline_equals_training_pipeline(tmp_path: Path) -> None:
    import albumentations as A

    policy = load_policy(GOLDEN)
    base = BaseAug()
    loaded = A.load(str(export_albumentations(policy, base, 32, tmp_path / "p.json")),
                    data_format="json")
    trained = build_pipeline(policy, base, 32)
    assert A.to_dict(loaded) == A.to_dict(trained)
    loaded.set_random_seed(3)
    trained.set_random_seed(3)
    for img in _images():
        assert np.array_equal(loaded(image=img)["image"], trained(image=img)["image"])


def test_identity_policy_without_base_is_identity() -> None:
    pipe = build_pipeline(identity_policy(), None, 32, seed=0)
    for img in _images():
        assert np.array_equal(pipe(image=img)["image"], img)


def test_pipeline_is_deterministic_under_seed_and_varies_across_seeds() -> None:
    policy = load_policy(GOLDEN)
    imgs = _images()

    def run(seed: int) -> list[np.ndarray]:
        pipe = build_pipeline(policy, BaseAug(), 32, seed=seed)
        return [pipe(image=i)["image"] for i in imgs]

    assert all(np.array_equal(a, b) for a, b in zip(run(1), run(1), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(run(1), run(2), strict=True))


def test_grayscale_pipeline() -> None:
    policy = load_policy(GOLDEN)
    gray = _images()[..., :1]
    pipe = build_pipeline(policy, BaseAug(), 32, seed=0)
    for img in gray:
        out = pipe(image=img)["image"]
        assert out.shape == (32, 32, 1) and out.dtype == np.uint8


BAD_POLICIES = [
    ({"format": "other"}, "not an augsearch policy"),
    ({"format": "augsearch-policy", "version": 9}, "version 9 is not supported"),
    ({"format": "augsearch-policy", "version": 1, "sub_policies": [[{"op": "Rotat"}]]},
     "sub_policies[0][0]: unknown op 'Rotat'"),
    ({"format": "augsearch-policy", "version": 1,
      "sub_policies": [[{"op": "Rotate", "magnitude": 2}]]},
     "sub_policies[0][0]: `0 <= magnitude <= 1` must hold"),
    ({"format": "augsearch-policy", "version": 1,
      "sub_policies": [[{"op": "Rotate", "mag": 0.2}]]}, "unknown key(s) ['mag']"),
    ({"format": "augsearch-policy", "version": 1, "sub_policies": {"a": 1}}, "expected a list"),
    ({"format": "augsearch-policy", "version": 1, "batch": {"mixup_alpha": -1}},
     "batch values must be >= 0"),
    ({"format": "augsearch-policy", "version": 1, "batch": {"mixup_alpha": "strong"}},
     "batch.mixup_alpha: expected a number, got 'strong'"),
]


@pytest.mark.parametrize("data,words", BAD_POLICIES)
def test_bad_policy_files_are_refused(data: dict, words: str) -> None:
    with pytest.raises(SpaceError) as info:
        policy_from_dict(data, "p.yaml")
    assert words in str(info.value)


def test_corrupt_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text("{not json")
    with pytest.raises(SpaceError, match="p.json: not valid JSON: .*; pass the best_policy"):
        load_policy(path)
    binary = tmp_path / "p.yaml"
    binary.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(SpaceError, match="p.yaml: not UTF-8 text"):
        load_policy(binary)
    with pytest.raises(SpaceError, match="nowhere.yaml: no such policy file"):
        load_policy(tmp_path / "nowhere.yaml")


def test_flat_params_are_named_by_op() -> None:
    params = flat_params(load_policy(GOLDEN))
    assert params["sp0.op0.name"] == "Rotate" and params["sp0.op0.magnitude"] == 0.4
    assert params["batch.mixup_alpha"] == 0.2
    assert len(params) == 3 * 2 * 3 + 3


def test_dict_form_is_versioned_and_by_name() -> None:
    data = policy_to_dict(Policy((SubPolicy((Op("Equalize", 0, 0.5),)),)))
    assert data["format"] == "augsearch-policy" and data["version"] == 1
    assert json.loads(json.dumps(data))["sub_policies"][0][0]["op"] == "Equalize"


# ---------------------------------------------------------------- compiler (space -> policy)


@pytest.mark.parametrize("name", ["digits", "cifar10", "svhn"])
def test_sampled_configs_decode_within_the_space(name: str) -> None:
    space = load_space(name)
    allowed = {o.name: o.magnitude for o in space.policy.ops}
    for config in sample_configs(space, 25, seed=1):
        policy = decode(space, config)
        if space.policy.family != "subpolicies":  # a drawn policy: the family contract's
            assert set(policy.op_names()) <= set(allowed) and not policy.sub_policies
            continue
        assert len(policy.sub_policies) == space.policy.sub_policies
        for sub in policy.sub_policies:
            assert len(sub.ops) == space.policy.ops_per_sub_policy
            for op in sub.ops:
                low, high = allowed[op.name]
                assert low <= op.magnitude <= high or op.magnitude == 0.0
                assert 0.0 <= op.probability <= 1.0
        mix = space.policy.batch_ops.mixup_alpha
        assert mix is None or mix[0] <= policy.batch.mixup_alpha <= mix[1]


def test_magnitude_is_conditional_on_the_op() -> None:
    space = load_space("digits")
    for config in sample_configs(space, 20, seed=2):
        for key, value in config.items():
            if key.endswith("_mag"):
                slot, op = key.split("_")[0:2], key.split("_")[2]
                assert config["_".join(slot)] == op, (key, value)


def test_sampling_is_seeded() -> None:
    space = load_space("cifar10")
    assert sample_policies(space, 3, seed=5) == sample_policies(space, 3, seed=5)
    assert sample_policies(space, 3, seed=5) != sample_policies(space, 3, seed=6)
    assert count_dimensions(space) == 4  # RandAugment's N, M, p and mixup's alpha
