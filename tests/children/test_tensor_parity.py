"""Parity of the batched path with albumentations, op by op and in distribution, on real images.

Each op runs at magnitudes 0, 0.5 and 1 (both signs for signed ops) on the same real images
through the op table's albumentations transform and through its batched kernel, with the random
parts fixed: the sign is chosen on both sides, Cutout's hole and GaussianNoise's noise field are
drawn by albumentations and handed to the kernel. Images are real CIFAR-10 where ../shared/data
has it, else scikit-learn's handwritten digits given colour gradients; the assertions are the same.

Tolerances are in 8-bit levels, per op (`TOLERANCE`); every other op must match exactly.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from scipy.stats import ks_2samp
from sklearn.datasets import load_digits

from children import tensor_ops as T
from children.tensor_aug import BATCHED, BatchedPipeline, Draws
from spaces.ops import OPS, build_op, get_op
from spaces.policy import Op, Policy, SubPolicy, build_pipeline
from spaces.schema import BaseAug
from tests.conftest import SHARED_DATA

MAGNITUDES = (0.0, 0.5, 1.0)
# (largest difference in levels, largest share of values that may differ at all)
TOLERANCE = {
    # cv2.warpAffine (INTER_LINEAR, 8-bit) computes with fixed-point arithmetic: source positions
    # quantised to 1/32 pixel and weights to 15 bits; grid_sample uses exact float positions.
    # The interpolated values agree to well under a level, so a difference is a value near .5
    # rounding the other way: one level, on a few percent of pixels at the strongest shears.
    "Rotate": (1, 0.05), "ShearX": (1, 0.05), "ShearY": (1, 0.05),
    # cv2.filter2D (3x3) and cv2.sepFilter2D (8-bit input, fixed-point taps) sum in another
    # order than the kernels here: ties at .5 round the other way, a level on < 1% of values.
    "Sharpness": (1, 0.01), "GaussianBlur": (1, 0.01),
}
RANDOM_PARTS = {"Cutout", "GaussianNoise"}  # their random part is drawn by albumentations
RESIZED_CROP = "RandomResizedCrop"  # boxes and resize: tests/children/test_resized_crop_parity.py


def _real_images(n: int = 48, seed: int = 0) -> tuple[np.ndarray, str]:
    """n real 32x32 RGB images, shuffled (the shared files are sorted by class)."""
    rng = np.random.default_rng(seed)
    path = SHARED_DATA / "cifar10_small.npz"
    if path.exists():
        x = np.load(path)["x_train"]
        return x[rng.permutation(len(x))[:n]], "cifar10"
    digits = load_digits().images[rng.permutation(1797)[:n]]  # 8x8 in 0..16
    gray = np.kron(digits, np.ones((4, 4))) * (255 / 16)
    ys, xs = np.mgrid[0:32, 0:32]
    rgb = np.stack([0.6 * gray + 3 * xs, 0.8 * gray + 40, 0.5 * gray + 3.5 * ys], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "digits"


@pytest.fixture(scope="module", params=[3, 1], ids=["rgb", "gray"])
def images(request) -> np.ndarray:
    """uint8 N×H×W×C real images, 3 channels or their OpenCV grey (1 channel)."""
    rgb, _ = _real_images()
    if request.param == 3:
        return rgb
    return np.stack([cv2.cvtColor(i, cv2.COLOR_RGB2GRAY) for i in rgb])[..., None]


def _tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().contiguous()


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).numpy().astype(np.int16)


def _one_side(name: str, magnitude: float, sign: int) -> A.BasicTransform:
    """The op table's transform with its random sign fixed: signed ops are built as
    Sequential([OneOrOther(op(+s), op(-s))])."""
    transform = build_op(name, magnitude, 1.0)
    if get_op(name).signed:
        transform = transform.transforms[0].transforms[0 if sign > 0 else 1]
    return transform


def _albumentations(transform: A.BasicTransform, images: np.ndarray) -> np.ndarray:
    out = [A.Compose([transform], seed=0, strict=True)(image=i)["image"] for i in images]
    return np.stack(out).reshape(images.shape).astype(np.int16)


def _assert_close(name: str, batched: np.ndarray, reference: np.ndarray) -> None:
    levels, share = TOLERANCE.get(name, (0, 0.0))
    diff = np.abs(batched - reference)
    assert batched.shape == reference.shape
    assert diff.max() <= levels, f"{name}: max difference {diff.max()} > {levels}"
    assert np.mean(diff > 0) <= share, f"{name}: {np.mean(diff > 0):.4f} of values differ"


def _cases() -> list[tuple[str, float, int]]:
    cases = []
    for name, op in OPS.items():
        if name in RANDOM_PARTS or name == RESIZED_CROP:  # with albumentations' draws
            continue
        for m in MAGNITUDES if op.has_magnitude else (0.0,):
            cases += [(name, m, s) for s in ((1, -1) if op.signed else (1,))]
    return cases


@pytest.mark.parametrize(("name", "magnitude", "sign"), _cases(),
                         ids=lambda v: str(v) if not isinstance(v, int) else f"{v:+d}")
def test_each_op_matches_albumentations(images, name, magnitude, sign) -> None:
    signs = torch.full((len(images),), float(sign), dtype=torch.float64)
    out = BATCHED[name].apply(_tensor(images), get_op(name).strength(magnitude), signs, Draws(0))
    reference = _albumentations(_one_side(name, magnitude, sign), images)
    _assert_close(name, _hwc(out), reference)


def _drawn(name: str, magnitude: float, images: np.ndarray) -> tuple[list, np.ndarray]:
    """albumentations' own parameters for each image, and its output with them."""
    transform = build_op(name, magnitude, 1.0)
    params, out = [], []
    for k, image in enumerate(images):
        transform.set_random_seed(k)
        p = transform.get_params_dependent_on_data({"shape": image.shape}, {"image": image})
        params.append(p)
        out.append(transform.apply(image, **p).reshape(image.shape))
    return params, np.stack(out).astype(np.int16)


@pytest.mark.parametrize("magnitude", [0.5, 1.0])
def test_cutout_with_albumentations_draws(images, magnitude) -> None:
    params, reference = _drawn("Cutout", magnitude, images)
    holes = np.stack([p["holes"][0] for p in params])  # x_min, y_min, x_max, y_max
    h, w = images.shape[1:3]
    size = T.cutout_size(get_op("Cutout").strength(magnitude), h, w)
    assert {(int(b[3] - b[1]), int(b[2] - b[0])) for b in holes} == {size}
    out = T.cutout(_tensor(images), torch.from_numpy(holes[:, 1]), torch.from_numpy(holes[:, 0]),
                   *size)
    _assert_close("Cutout", _hwc(out), reference)


@pytest.mark.parametrize("magnitude", [0.5, 1.0])
def test_gaussian_noise_with_albumentations_draws(images, magnitude) -> None:
    params, reference = _drawn("GaussianNoise", magnitude, images)
    field = torch.from_numpy(np.stack([p["noise_map"] for p in params])).permute(0, 3, 1, 2)
    out = T.noise(_tensor(images), field)
    _assert_close("GaussianNoise", _hwc(out), reference)
    # the batched path draws its own field: same distribution (std = strength · 255)
    drawn = Draws(0).normal(field.shape, field.float()) * get_op("GaussianNoise").strength(
        magnitude) * 255.0
    assert float(drawn.std()) == pytest.approx(float(field.float().std()), rel=0.05)


def test_contrast_on_constant_images_where_float32_offsets_would_miss() -> None:
    """A constant image is Contrast's fixed point (x·f + x·(1 - f) = x), so rounding alone picks
    one of two levels: the kernel must reproduce albumentations' float64 offset exactly. Every
    level as a constant image, at four magnitudes and both signs. The same offsets computed in
    float32 disagree with albumentations here, which is why `tensor_ops.contrast` keeps its N
    per-sample offsets in float64 (and only those)."""
    images = np.repeat(np.arange(256), 16 * 16).astype(np.uint8).reshape(256, 16, 16, 1)
    x = _tensor(images)
    misses = 0
    for magnitude in (0.3, 0.5, 0.7, 1.0):
        for sign in (1, -1):
            s = get_op("Contrast").strength(magnitude)
            reference = _albumentations(_one_side("Contrast", magnitude, sign), images)
            out = BATCHED["Contrast"].apply(x, s, torch.full((256,), float(sign)), Draws(0))
            _assert_close("Contrast", _hwc(out), reference)
            f = 1.0 + sign * s
            offset = x.mean(dim=(1, 2, 3)) * float(np.float32(1.0 - f))  # float32 throughout
            naive = (x * float(np.float32(f)) + offset.view(-1, 1, 1, 1)).clamp(0, 255).floor()
            misses += int((_hwc(naive) != reference).sum())
    assert misses > 0


def test_magnitude_zero_is_the_identity_where_the_op_table_promises_it(images) -> None:
    x = _tensor(images)
    for name, op in OPS.items():
        if op.identity_at_zero:
            signs = torch.ones(len(x), dtype=torch.float64)
            out = BATCHED[name].apply(x.clone(), op.strength(0.0), signs, Draws(0))
            assert torch.equal(out, x), name


# ---------------------------------------------------------------- the whole pipeline


MIXED = Policy((
    SubPolicy((Op("Rotate", 0.6, 0.7), Op("Solarize", 0.5, 0.5))),
    SubPolicy((Op("Cutout", 0.5, 0.6), Op("Brightness", 0.7, 0.8))),
    SubPolicy((Op("GaussianNoise", 0.5, 0.6), Op("Equalize", 0.0, 0.5))),
    SubPolicy((Op("TranslateY", 0.4, 0.9), Op("Contrast", 0.8, 0.6))),
))


def _statistics(out: np.ndarray, source: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image statistics of augmented images against their sources."""
    flat = out.reshape(len(out), -1).astype(np.float64)
    return {"mean": flat.mean(1), "std": flat.std(1), "zeros": (flat == 0).mean(1),
            "unchanged": (out == source).reshape(len(out), -1).mean(1),
            "mirrored": (out == source[:, :, ::-1]).reshape(len(out), -1).mean(1)}


def assert_same_distribution(batched: np.ndarray, reference: np.ndarray,
                             source: np.ndarray) -> None:
    """The batched path's images (NCHW) and albumentations' (NHWC) from the same sources: each
    per-image statistic has the same distribution (two-sample KS, p > 0.001) and the same mean
    within 4 standard errors."""
    ours = _statistics(batched.transpose(0, 2, 3, 1), source)
    theirs = _statistics(reference, source)
    for key in ours:
        a, b = ours[key], theirs[key]
        assert ks_2samp(a, b).pvalue > 1e-3, key
        error = np.sqrt(a.var() / len(a) + b.var() / len(b))
        assert abs(a.mean() - b.mean()) <= 4 * error + 1e-9, key


def test_the_pipeline_matches_albumentations_in_distribution() -> None:
    """One policy (crop and flip included) over 1,536 real images through both paths: each
    per-image statistic has the same distribution (two-sample KS test, p > 0.001) and the same
    mean within 4 standard errors."""
    rgb, _ = _real_images(384, seed=1)
    source = np.tile(rgb, (4, 1, 1, 1))
    base = BaseAug(crop=True, crop_padding=4, flip=True)
    pipe = build_pipeline(MIXED, base, 32, seed=0)
    reference = np.stack([pipe(image=i)["image"] for i in source])
    batched_pipe, draws = BatchedPipeline(MIXED, base, 32), Draws(0)
    x = torch.from_numpy(source).permute(0, 3, 1, 2).contiguous()
    batched = torch.cat([batched_pipe(x[i:i + 128], draws) for i in range(0, len(x), 128)])
    assert_same_distribution(batched.numpy(), reference, source)


# ---------------------------------------------------------------- determinism, dtypes, devices


def _batch(n: int = 64) -> torch.Tensor:
    rgb, _ = _real_images(n)
    return torch.from_numpy(rgb).permute(0, 3, 1, 2).contiguous()


def test_same_seed_same_batch_another_seed_another() -> None:
    pipe, x = BatchedPipeline(MIXED, BaseAug(), 32), _batch()
    first, again = pipe(x, Draws(7)), pipe(x, Draws(7))
    assert first.dtype == torch.uint8 and first.shape == x.shape
    assert torch.equal(first, again)
    assert not torch.equal(first, pipe(x, Draws(8)))
    assert torch.equal(x, _batch())  # the input is never written


def test_float_input_in_unit_range_gives_the_uint8_result_scaled() -> None:
    pipe, x = BatchedPipeline(MIXED, BaseAug(), 32), _batch()
    as_uint8 = pipe(x, Draws(3))
    as_float = pipe(x.float() / 255.0, Draws(3))
    assert as_float.dtype == torch.float32
    assert torch.equal((as_float * 255.0).round().to(torch.uint8), as_uint8)


def test_no_policy_and_no_base_leave_the_batch_alone() -> None:
    x = _batch()
    assert torch.equal(BatchedPipeline(Policy(), None, 32)(x, Draws(0)), x)


def test_every_tensor_follows_the_batch_device() -> None:
    """Run with torch's default device set to `meta`: a tensor made without naming its device
    would land there and fail against the CPU batch; the same code then serves CUDA batches."""
    every_op = Policy(tuple(SubPolicy((Op(name, 0.7, 0.8),)) for name in BATCHED))
    x = _batch(256)
    with torch.device("meta"):
        out = BatchedPipeline(every_op, BaseAug(), 32)(x, Draws(0))
    assert out.device == x.device and out.shape == x.shape


def test_a_non_batch_or_integer_tensor_is_refused() -> None:
    pipe = BatchedPipeline(MIXED, BaseAug(), 32)
    with pytest.raises(ValueError, match="N×C×32×32"):
        pipe(_batch()[0], Draws(0))
    with pytest.raises(ValueError, match=r"got shape \(64, 3, 16, 16\)"):
        pipe(_batch()[:, :, :16, :16], Draws(0))
    with pytest.raises(ValueError, match="uint8 or float"):
        pipe(_batch().long(), Draws(0))
