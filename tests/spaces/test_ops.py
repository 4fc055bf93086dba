"""Contract tests for the op registry: every op, on RGB and grayscale images of two sizes."""

from __future__ import annotations

import math

import albumentations as A
import cv2
import numpy as np
import pytest
from sklearn.datasets import load_digits

from spaces.errors import SpaceError
from spaces.ops import OPS, OpDef, build_op, get_op, op_names

ALL_OPS = list(OPS)
MAGNITUDE_OPS = [name for name, op in OPS.items() if op.has_magnitude]
SIGNED_OPS = [name for name, op in OPS.items() if op.signed]
# Ops whose output depends only on the magnitude (and, if signed, the sign): no random sampling.
DETERMINISTIC_UNSIGNED = ["Sharpness", "Posterize", "Solarize", "GaussianBlur"]
# Saturation has no meaning on one channel: the op is a documented identity there.
COLOR_ONLY = {"Color"}
SIZES = [(32, 32), (17, 23)]
CHANNELS = [3, 1]
SEEDS = range(4)


def _digit_images(height: int, width: int, channels: int) -> list[np.ndarray]:
    """Three real handwritten digits upscaled to (height, width); RGB versions get a colour tint
    and gradients so that saturation, hue-free colour ops and geometry all have an effect."""
    digits = load_digits().images[:3]  # 8x8 floats in 0..16
    out = []
    ys, xs = np.mgrid[0:height, 0:width]
    for i, digit in enumerate(digits):
        gray = cv2.resize((digit * (255 / 16)).astype(np.float32), (width, height))
        if channels == 1:
            img = gray[..., None]
        else:
            r = 0.6 * gray + 100 * xs / max(width - 1, 1)
            g = 0.8 * gray + 40 * i
            b = 0.5 * gray + 120 * ys / max(height - 1, 1)
            img = np.stack([r, g, b], axis=-1)
        out.append(np.clip(np.rint(img), 0, 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def images() -> dict[tuple[int, int, int], list[np.ndarray]]:
    return {(h, w, c): _digit_images(h, w, c) for h, w in SIZES for c in CHANNELS}


def _apply(transform: A.BasicTransform, image: np.ndarray, seed: int) -> np.ndarray:
    return A.Compose([transform], seed=seed, strict=True)(image=image)["image"]


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


shape_params = pytest.mark.parametrize(
    "shape", [(h, w, c) for h, w in SIZES for c in CHANNELS], ids=lambda s: "x".join(map(str, s))
)


def _skip_unsupported(name: str, channels: int) -> None:
    if channels == 1 and not OPS[name].grayscale_ok:
        pytest.skip(f"{name} does not support 1-channel images")


# --- registry ------------------------------------------------------------------------------------


def test_registry_holds_the_stable_op_names_in_order() -> None:
    # Policies store ops by name: renaming or dropping one breaks saved policies.
    assert op_names() == [
        "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
        "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
        "Invert", "Cutout", "HorizontalFlip", "VerticalFlip", "GaussianNoise", "GaussianBlur",
        "RandomResizedCrop",
    ]  # fmt: skip
    assert all(isinstance(op, OpDef) and op.name == name for name, op in OPS.items())
    assert all(op.doc for op in OPS.values())


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        OPS["Mine"] = OPS["Rotate"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        OPS["Rotate"].signed = False  # type: ignore[misc]


def test_flags_match_the_op_families() -> None:
    no_magnitude = {n for n, op in OPS.items() if not op.has_magnitude}
    assert no_magnitude == {
        "Identity", "AutoContrast", "Equalize", "Invert", "HorizontalFlip", "VerticalFlip",
    }  # fmt: skip
    assert set(SIGNED_OPS) == {
        "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
        "Contrast",
    }  # fmt: skip
    assert not any(OPS[n].signed for n in no_magnitude)


def test_get_op_and_build_op_find_registered_ops() -> None:
    assert get_op("Rotate") is OPS["Rotate"]
    assert isinstance(build_op("Rotate", 0.5, 0.25), A.Sequential)
    assert build_op("Rotate", 0.5, 0.25).p == 0.25


@pytest.mark.parametrize(("typo", "suggestion"), [("Rotat", "Rotate"), ("equalise", "Equalize")])
def test_unknown_op_lists_known_ops_and_suggests_the_closest(typo: str, suggestion: str) -> None:
    with pytest.raises(SpaceError) as info:
        get_op(typo)
    message = str(info.value)
    assert message.startswith(f"unknown op '{typo}'; known ops: AutoContrast, Brightness, Color, ")
    assert ", ".join(sorted(OPS)) in message
    assert message.endswith(f"did you mean '{suggestion}'?")
    with pytest.raises(SpaceError, match=f"did you mean '{suggestion}'"):
        build_op(typo, 0.5, 1.0)


@pytest.mark.parametrize("name", ["Kaleidoscope", "", None])
def test_unknown_op_without_a_close_name_makes_no_suggestion(name: object) -> None:
    with pytest.raises(SpaceError, match="known ops: AutoContrast") as info:
        get_op(name)  # type: ignore[arg-type]
    assert "did you mean" not in str(info.value)


# --- argument validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("magnitude", "p", "expected"),
    [
        (1.3, 0.5, "`0 <= magnitude <= 1` must hold, but got magnitude=1.3 (op Rotate)"),
        (-0.1, 0.5, "`0 <= magnitude <= 1` must hold, but got magnitude=-0.1 (op Rotate)"),
        (math.nan, 0.5, "`0 <= magnitude <= 1` must hold, but got magnitude=nan (op Rotate)"),
        (0.5, 1.5, "`0 <= p <= 1` must hold, but got p=1.5 (op Rotate)"),
        (0.5, -1, "`0 <= p <= 1` must hold, but got p=-1 (op Rotate)"),
        (0.5, math.inf, "`0 <= p <= 1` must hold, but got p=inf (op Rotate)"),
        (True, 0.5, "magnitude must be a number in [0, 1], but got magnitude=True (op Rotate)"),
        ("0.5", 0.5, "magnitude must be a number in [0, 1], but got magnitude='0.5' (op Rotate)"),
        (0.5, None, "p must be a number in [0, 1], but got p=None (op Rotate)"),
    ],
)
def test_bad_magnitude_or_probability_raise_invariant_errors(
    magnitude: object, p: object, expected: str
) -> None:
    with pytest.raises(SpaceError) as info:
        OPS["Rotate"].build(magnitude, p)  # type: ignore[arg-type]
    assert str(info.value) == expected


def test_bounds_ints_and_numpy_scalars_are_accepted() -> None:
    for magnitude, p in [(0, 1), (1, 0), (np.float32(0.5), np.float64(0.5))]:
        assert build_op("Rotate", magnitude, p).p == float(p)


@pytest.mark.parametrize("name", ALL_OPS)
def test_build_returns_a_fresh_instance_with_the_probability(name: str) -> None:
    first, second = OPS[name].build(0.5, 0.3), OPS[name].build(0.5, 0.3)
    assert first is not second
    assert first.p == second.p == 0.3
    # Nested transforms must not be shared either: seeded Composes sharing them interfere.
    children = getattr(first, "transforms", [])
    assert all(a is not b for a, b in zip(children, getattr(second, "transforms", []), strict=True))


# --- behaviour on images -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_OPS)
@shape_params
def test_shape_dtype_and_range_kept_at_magnitude_0_and_1(name: str, shape, images) -> None:
    _skip_unsupported(name, shape[2])
    for image in images[shape]:
        before = image.copy()
        for magnitude in (0.0, 1.0):
            out = _apply(build_op(name, magnitude, 1.0), image, seed=0)
            assert out.shape == image.shape
            assert out.dtype == np.uint8
            assert 0 <= out.min() <= out.max() <= 255
        assert np.array_equal(image, before)  # the input is never modified in place


@pytest.mark.parametrize("name", [n for n in ALL_OPS if OPS[n].identity_at_zero])
@shape_params
def test_identity_at_magnitude_zero(name: str, shape, images) -> None:
    _skip_unsupported(name, shape[2])
    for image in images[shape]:
        for seed in SEEDS:
            assert np.array_equal(_apply(build_op(name, 0.0, 1.0), image, seed), image)


@pytest.mark.parametrize("name", [n for n in ALL_OPS if not OPS[n].identity_at_zero])
def test_ops_not_flagged_identity_change_images_at_zero(name: str, images) -> None:
    image = images[(32, 32, 3)][0]
    assert _mad(_apply(build_op(name, 0.0, 1.0), image, 0), image) > 0.5


@pytest.mark.parametrize("name", [n for n in ALL_OPS if not OPS[n].has_magnitude])
def test_ops_without_magnitude_ignore_it(name: str, images) -> None:
    image = images[(17, 23, 3)][1]
    at_zero = _apply(build_op(name, 0.0, 1.0), image, seed=5)
    assert np.array_equal(_apply(build_op(name, 1.0, 1.0), image, seed=5), at_zero)


@pytest.mark.parametrize("name", MAGNITUDE_OPS)
@shape_params
def test_strength_rises_with_magnitude(name: str, shape, images) -> None:
    _skip_unsupported(name, shape[2])
    strength = {}
    for magnitude in (0.3, 1.0):
        strength[magnitude] = np.mean(
            [
                _mad(_apply(build_op(name, magnitude, 1.0), image, seed), image)
                for image in images[shape]
                for seed in SEEDS
            ]
        )
    if shape[2] == 1 and name in COLOR_ONLY:
        assert strength[0.3] == strength[1.0] == 0.0
    else:
        assert 0.0 < strength[0.3] < strength[1.0]


@pytest.mark.parametrize("name", SIGNED_OPS)
def test_signed_ops_apply_a_fixed_strength_with_either_sign(name: str, images) -> None:
    image = images[(32, 32, 3)][2]
    outputs = {_apply(build_op(name, 1.0, 1.0), image, seed).tobytes() for seed in range(16)}
    assert len(outputs) == 2


@pytest.mark.parametrize("name", DETERMINISTIC_UNSIGNED)
def test_unsigned_ops_apply_one_fixed_strength(name: str, images) -> None:
    image = images[(32, 32, 3)][2]
    outputs = {_apply(build_op(name, 0.8, 1.0), image, seed).tobytes() for seed in range(8)}
    assert len(outputs) == 1


@pytest.mark.parametrize("name", ALL_OPS)
@shape_params
def test_deterministic_under_a_seed(name: str, shape, images) -> None:
    _skip_unsupported(name, shape[2])
    image = images[shape][0]
    runs = []
    for _ in range(2):
        compose = A.Compose([build_op(name, 0.7, 0.6)], seed=11, strict=True)
        runs.append([compose(image=image)["image"] for _ in range(6)])
    assert all(np.array_equal(a, b) for a, b in zip(*runs, strict=True))


@pytest.mark.parametrize("name", ALL_OPS)
@shape_params
def test_probability_zero_is_identity(name: str, shape, images) -> None:
    _skip_unsupported(name, shape[2])
    for image in images[shape]:
        for seed in SEEDS:
            assert np.array_equal(_apply(build_op(name, 1.0, 0.0), image, seed), image)


@pytest.mark.parametrize("name", [n for n in ALL_OPS if n != "Identity"])
def test_probability_half_applies_sometimes(name: str, images) -> None:
    image = images[(32, 32, 3)][0]
    changed = [
        not np.array_equal(_apply(build_op(name, 1.0, 0.5), image, seed), image)
        for seed in range(24)
    ]
    assert 0 < sum(changed) < len(changed)


@pytest.mark.parametrize("name", ALL_OPS)
@pytest.mark.parametrize("magnitude", [0.0, 0.6])
def test_serialization_round_trip_reproduces_outputs(name: str, magnitude: float, images) -> None:
    original = A.Compose([build_op(name, magnitude, 0.7)], seed=3, strict=True)
    serialized = A.to_dict(original)
    assert serialized["transform"]["transforms"][0]["p"] == 0.7  # p sits on the outer transform
    reloaded = A.from_dict(serialized)
    reloaded.set_random_seed(3)  # the seed is not serialized
    assert A.to_dict(reloaded) == serialized
    for image in (images[(17, 23, 3)][0], images[(17, 23, 1)][1]):
        for _ in range(4):
            expected = original(image=image)["image"]
            assert np.array_equal(reloaded(image=image)["image"], expected)


# --- strengths: the magnitude -> units map other implementations share ---------------------------


@pytest.mark.parametrize(("name", "at_one"), [
    ("ShearX", math.degrees(math.atan(0.3))), ("TranslateY", 0.33), ("Rotate", 30.0),
    ("Brightness", 0.9), ("Sharpness", 0.9 / 13), ("Posterize", 4.0), ("Solarize", 0.0),
    ("Cutout", 0.5), ("GaussianNoise", 0.2), ("GaussianBlur", 2.0), ("RandomResizedCrop", 0.08),
])
def test_strength_is_the_documented_maximum_at_one_and_identity_at_zero(name, at_one) -> None:
    op = get_op(name)
    assert op.strength(1.0) == pytest.approx(at_one)
    identity = {"Posterize": 8.0, "Solarize": 1.0, "RandomResizedCrop": 1.0}.get(name, 0.0)
    assert op.strength(0.0) == identity


def test_built_transforms_carry_the_strength() -> None:
    rotate = build_op("Rotate", 0.5, 1.0).transforms[0].transforms[0]
    assert rotate.rotate == (15.0, 15.0)
    bits = int(get_op("Posterize").strength(0.5))
    assert build_op("Posterize", 0.5, 1.0).num_bits == (bits, bits) == (6, 6)
    with pytest.raises(SpaceError, match="magnitude"):
        get_op("Rotate").strength(1.5)
