"""RandomResizedCrop on the batched path (`children.tensor_crop`) against albumentations 2.0.8.

Two halves, each checked on its own: the resize, given albumentations' own crop boxes, must
equal albumentations' (OpenCV's `INTER_LINEAR` on uint8) on every pixel, on real images and on
random crops of every size; the crop boxes the batched path draws must follow albumentations'
draw in distribution (each box coordinate, the area, how often the central-crop fallback is
taken). Then the whole op in a pipeline, in per-image statistics, as
tests/children/test_tensor_parity.py checks the other ops; identity at magnitude 0, dtype,
shape, range and determinism; the batch's device on `meta`.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp

from children.tensor_aug import BATCHED, BatchedPipeline, Draws
from children.tensor_crop import crop_boxes, resized_crop
from spaces.ops import CROP_RATIO, build_op, get_op
from spaces.policy import Op, Policy, SubPolicy, build_pipeline
from spaces.schema import BaseAug
from tests.children.test_tensor_parity import _real_images, assert_same_distribution
from tests.devicecheck import OneDevice

NAME = "RandomResizedCrop"
CROP_FLIP = BaseAug(crop=True, crop_padding=4, flip=True)


def _gray(rgb: np.ndarray) -> np.ndarray:
    return np.stack([cv2.cvtColor(i, cv2.COLOR_RGB2GRAY) for i in rgb])[..., None]


def _tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().contiguous()


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).numpy().astype(np.int16)


def _kernel(images: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The batched resize of each image's box (x_min, y_min, x_max, y_max rows)."""
    b = torch.from_numpy(np.asarray(boxes, dtype=np.int64))
    return _hwc(resized_crop(_tensor(images), b[:, 1], b[:, 0], b[:, 3] - b[:, 1],
                             b[:, 2] - b[:, 0]))


# ---------------------------------------------------------------- the resize


@pytest.mark.parametrize("channels", [3, 1], ids=["rgb", "gray"])
@pytest.mark.parametrize("magnitude", [0.5, 1.0])
def test_the_resize_equals_albumentations_with_its_own_boxes(channels, magnitude) -> None:
    """albumentations draws each box and crops and resizes; the kernel, handed those boxes,
    gives the same image to the level."""
    rgb, _ = _real_images(96)
    images = rgb if channels == 3 else _gray(rgb)
    transform = build_op(NAME, magnitude, 1.0, size=(32, 32))
    boxes, reference = [], []
    for k, image in enumerate(images):
        transform.set_random_seed(k)
        params = transform.get_params_dependent_on_data({"shape": image.shape}, {"image": image})
        boxes.append(params["crop_coords"])
        reference.append(transform.apply(image, **params).reshape(image.shape))
    assert len({tuple(b) for b in boxes}) > 80  # the boxes vary
    assert np.array_equal(_kernel(images, np.array(boxes)), np.stack(reference))


@pytest.mark.parametrize("shape", [(32, 32, 3), (17, 23, 1), (23, 17, 3), (6, 9, 3)],
                         ids=lambda s: "x".join(map(str, s)))
def test_the_resize_equals_opencv_on_random_crops_of_every_size(shape) -> None:
    """Random boxes from one pixel to the whole image, on random images (every level): the
    kernel equals `cv2.resize(crop, INTER_LINEAR)` on every pixel, the whole image a copy."""
    rng = np.random.default_rng(sum(shape))
    h, w, _ = shape
    images = rng.integers(0, 256, (200, *shape), dtype=np.uint8)
    heights, widths = rng.integers(1, h + 1, 200), rng.integers(1, w + 1, 200)
    heights[:3], widths[:3] = h, w
    tops = (rng.random(200) * (h - heights + 1)).astype(int)
    lefts = (rng.random(200) * (w - widths + 1)).astype(int)
    boxes = np.stack([lefts, tops, lefts + widths, tops + heights], 1)
    reference = np.stack([
        cv2.resize(i[t:t + hh, s:s + ww], (w, h), interpolation=cv2.INTER_LINEAR
                   ).reshape(shape) for i, t, s, hh, ww in zip(images, tops, lefts, heights,
                                                               widths, strict=True)])
    out = _kernel(images, boxes)
    assert np.array_equal(out, reference)
    assert np.array_equal(out[:3], images[:3])


# ---------------------------------------------------------------- the crop boxes


def _albumentations_boxes(h: int, w: int, scale: float, n: int) -> np.ndarray:
    transform = A.RandomResizedCrop(size=(h, w), scale=(scale, 1.0), ratio=CROP_RATIO)
    transform.set_random_seed(0)
    boxes = [transform.get_params_dependent_on_data({"shape": (h, w, 3)}, {})["crop_coords"]
             for _ in range(n)]
    x0, y0, x1, y1 = np.array(boxes).T
    return np.stack([y0, x0, y1 - y0, x1 - x0], 1)  # top, left, height, width


@pytest.mark.parametrize(("h", "w", "magnitude"), [
    (32, 32, 1.0), (32, 32, 0.5), (32, 32, 0.05), (17, 23, 1.0), (8, 32, 0.8)])
def test_the_boxes_follow_albumentations_draw(h, w, magnitude) -> None:
    """8,000 boxes from each side: the top, left, height, width and area have the same
    distribution (KS, p > 0.001) and mean within 4 standard errors, and the central-crop
    fallback (an 8x32 image fits few tries) is taken as often."""
    n, scale = 8000, get_op(NAME).strength(magnitude)
    theirs = _albumentations_boxes(h, w, scale, n)
    ours = np.stack([v.numpy() for v in crop_boxes(Draws(1), n, h, w, (scale, 1.0),
                                                   CROP_RATIO)], 1)
    assert ours.dtype == np.int64 and ours.shape == theirs.shape
    assert (ours[:, 2] >= 1).all() and (ours[:, 0] + ours[:, 2] <= h).all()
    assert (ours[:, 3] >= 1).all() and (ours[:, 1] + ours[:, 3] <= w).all()
    for column, a, b in [(k, ours[:, k], theirs[:, k]) for k in range(4)] + [
            ("area", ours[:, 2] * ours[:, 3], theirs[:, 2] * theirs[:, 3])]:
        if a.std() == b.std() == 0:
            assert a[0] == b[0], column
            continue
        assert ks_2samp(a, b).pvalue > 1e-3, column
        error = np.sqrt(a.var() / n + b.var() / n)
        assert abs(a.mean() - b.mean()) <= 4 * error + 1e-9, column


def test_the_fallback_is_albumentations_central_crop() -> None:
    """A 4x40 image: no try of SimCLR's scale fits its ratio range, so every box is the central
    crop cut to ratio 4/3, as albumentations' fallback."""
    theirs = _albumentations_boxes(4, 40, 0.9, 50)
    ours = np.stack([v.numpy() for v in crop_boxes(Draws(0), 50, 4, 40, (0.9, 1.0),
                                                   CROP_RATIO)], 1)
    assert (theirs == theirs[0]).all() and (ours == theirs[0]).all()
    assert theirs[0].tolist() == [0, 17, 4, 5]


# ---------------------------------------------------------------- the op


def test_the_op_in_a_pipeline_matches_albumentations_in_distribution() -> None:
    """RandomResizedCrop (SimCLR's, p 0.8) with crop and flip over 1,536 real images through
    both paths: each per-image statistic has the same distribution (KS, p > 0.001) and mean
    within 4 standard errors."""
    policy = Policy((SubPolicy((Op(NAME, 1.0, 0.8),)), SubPolicy((Op(NAME, 0.5, 1.0),))))
    rgb, _ = _real_images(384, seed=2)
    source = np.tile(rgb, (4, 1, 1, 1))
    pipe = build_pipeline(policy, CROP_FLIP, 32, seed=0)
    reference = np.stack([pipe(image=i)["image"] for i in source])
    batched_pipe, draws = BatchedPipeline(policy, CROP_FLIP, 32), Draws(0)
    x = torch.from_numpy(source).permute(0, 3, 1, 2).contiguous()
    batched = torch.cat([batched_pipe(x[i:i + 128], draws) for i in range(0, len(x), 128)])
    assert_same_distribution(batched.numpy(), reference, source)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_magnitudes_0_and_1_keep_dtype_shape_and_range_and_0_is_the_identity(dtype) -> None:
    rgb, _ = _real_images(64)
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).contiguous()
    x = x if dtype == torch.uint8 else x.float() / 255.0
    for magnitude in (0.0, 1.0):
        pipe = BatchedPipeline(Policy((SubPolicy((Op(NAME, magnitude, 1.0),)),)), None, 32)
        out = pipe(x, Draws(3))
        assert out.dtype == dtype and out.shape == x.shape
        assert 0 <= float(out.min()) <= float(out.max()) <= (255 if dtype == torch.uint8 else 1)
        changed = (out != x).flatten(1).any(1).float().mean()
        assert changed == 0.0 if magnitude == 0.0 else changed > 0.9


def test_the_same_seed_gives_the_same_crops_another_seed_others() -> None:
    rgb, _ = _real_images(64)
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).contiguous()
    pipe = BatchedPipeline(Policy((SubPolicy((Op(NAME, 1.0, 0.7),)),)), CROP_FLIP, 32)
    assert torch.equal(pipe(x, Draws(4)), pipe(x, Draws(4)))
    assert not torch.equal(pipe(x, Draws(4)), pipe(x, Draws(5)))
    masked = BatchedPipeline(Policy((SubPolicy((Op(NAME, 1.0, 0.7),)),)), CROP_FLIP, 32,
                             masked=True)
    assert torch.equal(masked(x, Draws(4)), pipe(x, Draws(4)))  # both ways to apply an op


def test_the_op_stays_on_the_batch_device() -> None:
    """Boxes and resize on `meta`: nothing mixes devices, nothing reads back, nothing moves."""
    meta = torch.device("meta")
    for channels in (3, 1):
        x = torch.empty(32, channels, 32, 32, device=meta)
        with OneDevice() as check:
            out = BATCHED[NAME].apply(x, get_op(NAME).strength(1.0),
                                      torch.ones(32, device=meta), Draws(0, meta))
        assert out.device == meta and out.shape == x.shape and out.dtype == torch.float32
        assert check.moves == []
