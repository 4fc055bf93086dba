"""Ops drawn per image on the batched path mean what they mean on the albumentations path.

The same ops at the same strengths (`Draw.magnitudes`) run on both; the draws agree in
frequency: which ops, in which order, at which level (ops whose every outcome is told apart by
exact equality, both paths being exact for them), and in distribution on real images with crop
and flip, RandAugment- and TrivialAugment-style policies over every op. Masked (accelerator) and
row-subset (CPU) application give the same images from the same draws.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency, chisquare, ks_2samp

from children.tensor_aug import BATCHED, BatchedPipeline, Draws
from spaces.drawn import Draw, DrawnOp
from spaces.ops import build_op
from spaces.policy import Policy, build_pipeline
from spaces.schema import BaseAug
from tests.children.test_tensor_parity import _real_images, assert_same_distribution
from tests.devicecheck import OneDevice

SAMPLES = 2048
CROP_FLIP = BaseAug(crop=True, crop_padding=4, flip=True)


def _gradient(size: int = 32) -> np.ndarray:
    """An RGB image holding every level, so each op and level changes it differently."""
    ys, xs = np.mgrid[0:size, 0:size]
    values = (ys * size + xs) * 255 // (size * size - 1)
    return np.stack([values, 255 - values, (values * 7) % 256], axis=-1).astype(np.uint8)


def _apply(steps: list[tuple[str, float]]) -> np.ndarray:
    image = _gradient()
    for name, magnitude in steps:
        image = build_op(name, magnitude, 1.0)(image=image)["image"]
    return image


def _classes(candidates: dict[str, np.ndarray]) -> dict[bytes, str]:
    """Each distinct outcome image, by its bytes, named by the first sequence giving it."""
    named: dict[bytes, str] = {}
    for key, image in candidates.items():
        named.setdefault(image.tobytes(), key)
    return named


def _albumentations(policy: Policy, classes: dict[bytes, str]) -> Counter:
    pipe, image = build_pipeline(policy, None, 32, seed=0), _gradient()
    return Counter(classes[pipe(image=image)["image"].tobytes()] for _ in range(SAMPLES))


def _batched(policy: Policy, classes: dict[bytes, str]) -> Counter:
    x = torch.from_numpy(np.stack([_gradient()] * SAMPLES)).permute(0, 3, 1, 2).contiguous()
    out = BatchedPipeline(policy, None, 32)(x, Draws(0)).permute(0, 2, 3, 1).numpy()
    return Counter(classes[o.tobytes()] for o in out)


def _agree(a: Counter, b: Counter) -> float:
    keys = sorted(set(a) | set(b))
    return chi2_contingency([[a[k] for k in keys], [b[k] for k in keys]]).pvalue


def test_which_ops_fire_and_in_which_order_agree_between_the_paths() -> None:
    """Two of Invert, Solarize and Posterize per image, each firing with p 0.7: every outcome
    (ordered pairs, single ops, the untouched image) as often as designed, on both paths."""
    ops = (("Invert", 0.0), ("Solarize", 0.3), ("Posterize", 1.0))
    policy = Policy(draw=Draw(tuple(DrawnOp(n, (m, m), 0.7) for n, m in ops), n=2))
    rounds = [((), 0.3)] + [((op,), 0.7 / 3) for op in ops]  # per round: what fires, how often
    candidates = {(*a, *b): _apply([*a, *b]) for a, _ in rounds for b, _ in rounds}
    classes = _classes({str(k): v for k, v in candidates.items()})
    # twice Invert is nothing; Solarize at threshold 0.7 and Posterize are idempotent
    assert len(classes) == 10
    expected: Counter = Counter()
    for a, pa in rounds:
        for b, pb in rounds:
            expected[classes[candidates[(*a, *b)].tobytes()]] += pa * pb * SAMPLES
    ours, theirs = _batched(policy, classes), _albumentations(policy, classes)
    assert set(ours) == set(theirs) == set(classes.values())
    for seen in (ours, theirs):
        assert chisquare([seen[k] for k in expected], list(expected.values())).pvalue > 1e-3
    assert _agree(ours, theirs) > 1e-3


def test_each_level_of_a_ranged_magnitude_is_drawn_equally_often_on_both_paths() -> None:
    """One of Solarize on 5 levels of [0.1, 0.9] and Posterize on 5 levels of [0, 1] (8 to 4
    bits) per image: each (op, level) a tenth of the images."""
    draw = Draw((DrawnOp("Solarize", (0.1, 0.9)), DrawnOp("Posterize", (0.0, 1.0))), levels=5)
    candidates = {f"{op.name} {m:.2f}": _apply([(op.name, m)])
                  for op in draw.ops for m in draw.magnitudes(op)}
    classes = _classes(candidates)
    assert len(classes) == 10
    policy = Policy(draw=draw)
    ours, theirs = _batched(policy, classes), _albumentations(policy, classes)
    for seen in (ours, theirs):
        assert chisquare([seen[k] for k in classes.values()]).pvalue > 1e-3
    assert _agree(ours, theirs) > 1e-3


EVERY_OP = tuple(BATCHED)
POLICIES = {
    "randaugment": Policy(draw=Draw(tuple(DrawnOp(n, (0.6, 0.6), 0.8) for n in EVERY_OP), n=2)),
    "trivialaugment": Policy(draw=Draw(tuple(DrawnOp(n, (0.0, 0.9), 1.0) for n in EVERY_OP),
                                       n=1, levels=7)),
}


@pytest.mark.parametrize("name", list(POLICIES))
def test_drawn_policies_match_albumentations_in_distribution(name: str) -> None:
    """Every op of the table, crop and flip, over 1,536 real images through both paths: each
    per-image statistic has the same distribution (KS, p > 0.001) and mean within 4 SE."""
    policy = POLICIES[name]
    rgb, _ = _real_images(384, seed=1)
    source = np.tile(rgb, (4, 1, 1, 1))
    pipe = build_pipeline(policy, CROP_FLIP, 32, seed=0)
    reference = np.stack([pipe(image=i)["image"] for i in source])
    batched_pipe, draws = BatchedPipeline(policy, CROP_FLIP, 32), Draws(0)
    x = torch.from_numpy(source).permute(0, 3, 1, 2).contiguous()
    batched = torch.cat([batched_pipe(x[i:i + 128], draws) for i in range(0, len(x), 128)])
    assert_same_distribution(batched.numpy(), reference, source)


@pytest.mark.parametrize("name", list(POLICIES))
def test_masked_and_row_subset_application_give_the_same_images(name: str) -> None:
    rgb, _ = _real_images(256)
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).contiguous()
    policy = POLICIES[name]
    masked = BatchedPipeline(policy, CROP_FLIP, 32, masked=True)(x, Draws(5))
    rows = BatchedPipeline(policy, CROP_FLIP, 32, masked=False)(x, Draws(5))
    assert torch.equal(masked, rows)
    assert not torch.equal(rows, BatchedPipeline(policy, CROP_FLIP, 32)(x, Draws(6)))


@pytest.mark.parametrize("name", list(POLICIES))
def test_drawn_policies_stay_on_the_batch_device(name: str) -> None:
    """Every op of the table drawn on `meta`: nothing mixes devices, nothing reads the host,
    nothing moves once the pipeline has met the device."""
    pipe = BatchedPipeline(POLICIES[name], CROP_FLIP, 32)
    meta = torch.device("meta")
    pipe(torch.empty(64, 3, 32, 32, dtype=torch.uint8, device=meta), Draws(0, meta))
    for channels, dtype in ((3, torch.uint8), (1, torch.float32)):
        batch = torch.empty(64, channels, 32, 32, dtype=dtype, device=meta)
        with OneDevice() as check:
            out = pipe(batch, Draws(1, meta))
        assert out.device == meta and out.shape == batch.shape and out.dtype == dtype
        assert check.moves == []


def test_noise_strengths_of_one_drawn_op_share_a_field_in_distribution() -> None:
    """GaussianNoise's levels share one noise field per round (no row takes two levels of one
    op in a round): the added noise's spread per level still matches albumentations'."""
    draw = Draw((DrawnOp("GaussianNoise", (0.25, 1.0)),), levels=4)
    flat = np.full((32, 32, 3), 128, np.uint8)
    pipe = build_pipeline(Policy(draw=draw), None, 32, seed=0)
    theirs = np.array([pipe(image=flat)["image"].astype(float).std() for _ in range(512)])
    x = torch.from_numpy(np.stack([flat] * 512)).permute(0, 3, 1, 2).contiguous()
    out = BatchedPipeline(Policy(draw=draw), None, 32)(x, Draws(0)).float()
    ours = out.flatten(1).std(1, correction=0).numpy()
    assert ks_2samp(ours, theirs).pvalue > 1e-3


def test_policy_augment_applies_a_drawn_policy_file_on_the_cpu_and_on_meta() -> None:
    """The golden version-2 file (RandAugment-style draws, mixup) in a user's training loop."""
    from pathlib import Path

    from children.augment import load_augment

    golden = Path(__file__).parents[1] / "spaces" / "golden" / "policy_v2.yaml"
    augment = load_augment(golden)
    assert augment.policy.draw is not None and augment.image_size == 32
    rgb, _ = _real_images(64)
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).contiguous()
    labels = torch.arange(64) % 10
    images, targets = augment(x, labels)
    assert images.dtype == torch.uint8 and images.shape == x.shape and targets.shape == (64, 10)
    assert not torch.equal(images, x)
    meta = torch.empty(64, 3, 32, 32, dtype=torch.uint8, device="meta")
    augment(meta, torch.empty(64, dtype=torch.long, device="meta"))
    with OneDevice() as check:
        out, soft = augment(meta, torch.empty(64, dtype=torch.long, device="meta"))
    assert out.device.type == "meta" and soft.shape == (64, 10)
    # what moves per batch is the batch ops' plan alone (mixup's, drawn on the host), if that
    assert len(check.moves) <= 1 and all("cpu -> meta" in m for m in check.moves), check.moves
