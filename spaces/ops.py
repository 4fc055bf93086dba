"""The op registry: stable op names mapped to albumentations transforms.

This is the only module that builds albumentations transforms for policy ops. Every op takes a
magnitude in [0, 1] (0 = identity where the op allows it, stronger as it rises) and converts it to
albumentations units in one explicit ``magnitude -> transform`` factory, in the spirit of timm's
auto_augment tables. Policies store ops by name, so names here are a stable public format.

Conventions shared by all ops:

* Signed ops apply a *fixed* strength ``s(m)`` with a random sign (AutoAugment semantics): they
  are built as ``A.Sequential([A.OneOrOther(op(+s), op(-s), p=0.5)])`` and the op probability
  sits on the outer ``Sequential``.
* Geometric ops (``A.Affine``) fill uncovered pixels with 0 (``cv2.BORDER_CONSTANT``), as
  torchvision's AutoAugment does.
* Where the albumentations transform is not an exact identity at magnitude 0 (or rejects the
  value, e.g. ``Posterize(num_bits=8)``), the factory returns ``A.NoOp`` at that magnitude.
* Photometric strengths follow the PIL ``ImageEnhance`` factors AutoAugment uses (1 ± 0.9), via
  ``A.ColorJitter``, whose brightness/contrast/saturation are the torchvision (= PIL) formulas.
  ``A.RandomBrightnessContrast`` is not used: its "contrast" is a gain about 0, not about the mean.
* Every op works on uint8 images of shape (H, W, 3) and (H, W, 1). ``Color`` (saturation) is an
  identity on 1-channel images.
* ``RandomResizedCrop``'s output has its input's size: built with the images' ``size`` (as
  ``spaces.policy.build_pipeline`` builds it) it is plain ``A.RandomResizedCrop(size=...)``;
  built without, ``spaces.resized_crop.InputSizeResizedCrop`` (the same draw, resized back to
  each input's own size).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2

from spaces.errors import SpaceError

if TYPE_CHECKING:
    import albumentations as A
else:

    class _LazyAlbumentations:
        """albumentations, imported on first use: its import pulls in torch (~2 s), which a
        dry run or a space validation never needs."""

        def __getattr__(self, name: str) -> Any:
            import albumentations

            return getattr(albumentations, name)

    A = _LazyAlbumentations()

__all__ = ["CROP_RATIO", "OPS", "OpDef", "build_op", "get_op", "op_names"]

# AutoAugment's maxima, in albumentations units.
_MAX_SHEAR_DEG = math.degrees(math.atan(0.3))  # shear factor 0.3 ~= 16.7 degrees
_MAX_TRANSLATE = 0.33  # fraction of the image side
_MAX_ROTATE_DEG = 30.0
_MAX_ENHANCE = 0.9  # PIL ImageEnhance factor 1 +/- 0.9
_PIL_SMOOTH_WEIGHT = 13.0  # PIL's SMOOTH kernel sum: Sharpness(f) == I + (f - 1) / 13 * Laplacian
_MIN_POSTERIZE_BITS = 4
_MAX_CUTOUT = 0.5  # hole side as a fraction of the image side
_MAX_NOISE_STD = 0.2  # fraction of 255
_MAX_BLUR_SIGMA = 2.0
_MIN_CROP_SCALE = 0.08  # SimCLR's (and torchvision's) smallest crop area, a fraction of the image
CROP_RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's aspect ratios (width / height), every magnitude


@dataclass(frozen=True)
class OpDef:
    """One registered op: its stable name, its flags and its magnitude -> transform factory.

    ``units`` maps a magnitude in [0, 1] to the op's strength in the units ``doc`` names
    (degrees, a fraction of the side, a factor offset, bits, a threshold, ...); ``factory`` maps
    that strength to a fresh transform with p=1 (``sized``, where set, does it knowing the
    images' (height, width)). Callers use :meth:`build`, which validates its arguments and sets
    the probability; other implementations of the op (the batched tensor path in ``children``)
    read the same :meth:`strength`, so both mean the same thing.
    """

    name: str
    has_magnitude: bool
    identity_at_zero: bool
    signed: bool
    doc: str
    factory: Callable[[float], A.BasicTransform] = field(repr=False, compare=False)
    grayscale_ok: bool = True
    units: Callable[[float], float] = field(default=lambda _m: 0.0, repr=False, compare=False)
    sized: Callable[[float, tuple[int, int]], A.BasicTransform] | None = field(
        default=None, repr=False, compare=False)

    def strength(self, magnitude: float) -> float:
        """The op's strength at ``magnitude``, in the units ``doc`` names (0.0 without one)."""
        return float(self.units(_unit_interval("magnitude", magnitude, self.name)))

    def build(self, magnitude: float, p: float,
              size: tuple[int, int] | None = None) -> A.BasicTransform:
        """Return a new transform applying this op at ``magnitude`` with probability ``p``.

        ``size``: the images' (height, width), where the pipeline knows it; an op that resizes
        (RandomResizedCrop) is then plain albumentations, so an export loads without augsearch.
        Raises SpaceError when either value is not a number in [0, 1]. A new instance is built on
        every call, because seeded Composes that share transform instances interfere.
        """
        strength = self.strength(magnitude)
        prob = _unit_interval("p", p, self.name)
        sized = self.sized is not None and size is not None
        transform = self.sized(strength, _size(size)) if sized else self.factory(strength)
        transform.p = prob
        return transform


def _unit_interval(what: str, value: object, op: str) -> float:
    """Check ``0 <= value <= 1`` (rejecting NaN, bools and non-numbers) and return it as float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SpaceError(f"{what} must be a number in [0, 1], but got {what}={value!r} (op {op})")
    if not 0.0 <= value <= 1.0:  # also false for NaN
        raise SpaceError(f"`0 <= {what} <= 1` must hold, but got {what}={value} (op {op})")
    return float(value)


def _size(size: object) -> tuple[int, int]:
    """``size`` as (height, width), both positive whole numbers."""
    if (not isinstance(size, tuple | list) or len(size) != 2
            or not all(isinstance(v, numbers.Integral) and v > 0 for v in size)):
        raise SpaceError(f"size must be (height, width), two positive whole numbers, but got "
                         f"size={size!r}")
    return int(size[0]), int(size[1])


def _signed(make: Callable[[float], A.BasicTransform], strength: float) -> A.BasicTransform:
    """Apply ``make(+strength)`` or ``make(-strength)`` with equal chance (AutoAugment sign).

    `OneOrOther` draws the sign with one `random()` call (`OneOf` would pay numpy's weighted
    `choice`); the outer `Sequential` carries the op's probability.
    """
    return A.Sequential([A.OneOrOther(make(strength), make(-strength), p=0.5)], p=1.0)


def _affine(**kwargs: object) -> A.BasicTransform:
    """An ``A.Affine`` with a fixed geometry, constant-0 borders and p=1."""
    return A.Affine(border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0, **kwargs)


def _jitter(
    brightness: float = 1.0, contrast: float = 1.0, saturation: float = 1.0
) -> A.BasicTransform:
    """A ``ColorJitter`` with fixed factors; the defaults are neutral (exact identity), hue off."""
    return A.ColorJitter(
        brightness=(brightness, brightness),
        contrast=(contrast, contrast),
        saturation=(saturation, saturation),
        hue=(0.0, 0.0),
        p=1.0,
    )


def _identity(_s: float) -> A.BasicTransform:
    return A.NoOp(p=1.0)


# Factories: strength (in the units of the op's doc, from its `units`) -> transform.


def _shear_x(degrees: float) -> A.BasicTransform:
    return _signed(lambda s: _affine(shear={"x": (s, s), "y": (0.0, 0.0)}), degrees)


def _shear_y(degrees: float) -> A.BasicTransform:
    return _signed(lambda s: _affine(shear={"x": (0.0, 0.0), "y": (s, s)}), degrees)


def _translate_x(fraction: float) -> A.BasicTransform:
    return _signed(lambda t: _affine(translate_percent={"x": (t, t), "y": (0.0, 0.0)}), fraction)


def _translate_y(fraction: float) -> A.BasicTransform:
    return _signed(lambda t: _affine(translate_percent={"x": (0.0, 0.0), "y": (t, t)}), fraction)


def _rotate(degrees: float) -> A.BasicTransform:
    return _signed(lambda d: _affine(rotate=(d, d)), degrees)


def _brightness(offset: float) -> A.BasicTransform:
    return _signed(lambda s: _jitter(brightness=1.0 + s), offset)


def _color(offset: float) -> A.BasicTransform:
    return _signed(lambda s: _jitter(saturation=1.0 + s), offset)


def _contrast(offset: float) -> A.BasicTransform:
    return _signed(lambda s: _jitter(contrast=1.0 + s), offset)


def _sharpness(alpha: float) -> A.BasicTransform:
    # Sharpen's kernel is I + alpha * Laplacian at lightness 1, which is PIL's Sharpness with
    # factor 1 + 13 * alpha. It cannot blur (alpha >= 0), so the op is unsigned.
    return A.Sharpen(alpha=(alpha, alpha), lightness=(1.0, 1.0), method="kernel", p=1.0)


def _posterize(bits: float) -> A.BasicTransform:
    if bits >= 8:  # albumentations rejects num_bits=8, which would keep every bit anyway
        return A.NoOp(p=1.0)
    return A.Posterize(num_bits=int(bits), p=1.0)


def _solarize(threshold: float) -> A.BasicTransform:
    if threshold >= 1.0:  # threshold 1.0 would still invert pixels equal to 255
        return A.NoOp(p=1.0)
    return A.Solarize(threshold_range=(threshold, threshold), p=1.0)


def _auto_contrast(_s: float) -> A.BasicTransform:
    return A.AutoContrast(cutoff=0, method="cdf", p=1.0)


def _equalize(_s: float) -> A.BasicTransform:
    return A.Equalize(mode="cv", by_channels=True, p=1.0)


def _invert(_s: float) -> A.BasicTransform:
    return A.InvertImg(p=1.0)


def _cutout(side: float) -> A.BasicTransform:
    if side == 0.0:
        return A.NoOp(p=1.0)
    return A.CoarseDropout(
        num_holes_range=(1, 1),
        hole_height_range=(side, side),
        hole_width_range=(side, side),
        fill=0,
        p=1.0,
    )


def _horizontal_flip(_s: float) -> A.BasicTransform:
    return A.HorizontalFlip(p=1.0)


def _vertical_flip(_s: float) -> A.BasicTransform:
    return A.VerticalFlip(p=1.0)


def _gaussian_noise(std: float) -> A.BasicTransform:
    if std == 0.0:
        return A.NoOp(p=1.0)
    return A.GaussNoise(std_range=(std, std), mean_range=(0.0, 0.0), per_channel=True, p=1.0)


def _gaussian_blur(sigma: float) -> A.BasicTransform:
    if sigma == 0.0:
        return A.NoOp(p=1.0)
    return A.GaussianBlur(blur_limit=0, sigma_limit=(sigma, sigma), p=1.0)


def _resized_crop(scale: float, size: tuple[int, int] | None = None) -> A.BasicTransform:
    """A crop of ``scale``..1 of the area at an aspect ratio in ``CROP_RATIO`` (albumentations'
    draw: 10 tries, then the central crop), resized bilinearly to ``size``, or back to the
    input's own size without one. NoOp at scale 1: the whole image (square images would get it
    anyway; a non-square one may otherwise lose a column to rounding)."""
    if scale >= 1.0:
        return A.NoOp(p=1.0)
    if size is None:
        from spaces.resized_crop import InputSizeResizedCrop

        return InputSizeResizedCrop(scale=(scale, 1.0), ratio=CROP_RATIO, p=1.0)
    return A.RandomResizedCrop(size=size, scale=(scale, 1.0), ratio=CROP_RATIO,
                               interpolation=cv2.INTER_LINEAR, p=1.0)


def _op(
    name: str,
    factory: Callable[[float], A.BasicTransform],
    doc: str,
    units: Callable[[float], float] | None = None,
    *,
    signed: bool = False,
) -> OpDef:
    """An op with a magnitude converted by `units`; without `units`, an op with no magnitude."""
    return OpDef(
        name=name,
        has_magnitude=units is not None,
        identity_at_zero=units is not None,
        signed=signed,
        doc=doc,
        factory=factory,
        units=units or (lambda _m: 0.0),
    )


def _scaled(limit: float) -> Callable[[float], float]:
    """Magnitude m -> m * limit: strength grows linearly from 0 (identity) to `limit`."""
    return lambda m: limit * m


def _posterize_bits(m: float) -> float:
    return float(8 - round((8 - _MIN_POSTERIZE_BITS) * m))


def _solarize_threshold(m: float) -> float:
    return 1.0 - m


def _crop_scale(m: float) -> float:
    """The smallest crop area: 1 (the whole image) at m = 0, SimCLR's 0.08 at m = 1."""
    return _MIN_CROP_SCALE + (1.0 - _MIN_CROP_SCALE) * (1.0 - m)


_SHEAR_DOC = f"±{_MAX_SHEAR_DEG:.1f} degrees (Affine shear; AutoAugment shear factor 0.3)"
_TABLE = [
    OpDef("Identity", False, True, False, "no change (NoOp)", _identity),
    _op("ShearX", _shear_x, f"x-shear {_SHEAR_DOC}", _scaled(_MAX_SHEAR_DEG), signed=True),
    _op("ShearY", _shear_y, f"y-shear {_SHEAR_DOC}", _scaled(_MAX_SHEAR_DEG), signed=True),
    _op("TranslateX", _translate_x, "±0.33 of the width (Affine translate_percent)",
        _scaled(_MAX_TRANSLATE), signed=True),
    _op("TranslateY", _translate_y, "±0.33 of the height (Affine translate_percent)",
        _scaled(_MAX_TRANSLATE), signed=True),
    _op("Rotate", _rotate, "±30 degrees (Affine rotate)", _scaled(_MAX_ROTATE_DEG), signed=True),
    _op("Brightness", _brightness, "ColorJitter brightness factor 1±0.9", _scaled(_MAX_ENHANCE),
        signed=True),
    _op("Color", _color, "ColorJitter saturation factor 1±0.9 (no-op on 1 channel)",
        _scaled(_MAX_ENHANCE), signed=True),
    _op("Contrast", _contrast, "ColorJitter contrast factor 1±0.9", _scaled(_MAX_ENHANCE),
        signed=True),
    _op("Sharpness", _sharpness, "Sharpen alpha 0.9/13≈0.069, lightness 1 (PIL Sharpness 1.9)",
        _scaled(_MAX_ENHANCE / _PIL_SMOOTH_WEIGHT)),
    _op("Posterize", _posterize, "Posterize num_bits 4 (8 - round(4m) bits; NoOp at 8 bits)",
        _posterize_bits),
    _op("Solarize", _solarize, "Solarize threshold_range (0, 0): all inverted (threshold 1 - m)",
        _solarize_threshold),
    _op("AutoContrast", _auto_contrast, "AutoContrast cutoff 0 (no magnitude)"),
    _op("Equalize", _equalize, "Equalize mode cv, per channel (no magnitude)"),
    _op("Invert", _invert, "InvertImg (no magnitude)"),
    _op("Cutout", _cutout, "CoarseDropout 1 hole of 0.5 H x 0.5 W, fill 0", _scaled(_MAX_CUTOUT)),
    _op("HorizontalFlip", _horizontal_flip, "HorizontalFlip (no magnitude)"),
    _op("VerticalFlip", _vertical_flip, "VerticalFlip (no magnitude)"),
    _op("GaussianNoise", _gaussian_noise, "GaussNoise std_range (0.2, 0.2) of 255, mean 0",
        _scaled(_MAX_NOISE_STD)),
    _op("GaussianBlur", _gaussian_blur, "GaussianBlur sigma 2.0, kernel size from sigma",
        _scaled(_MAX_BLUR_SIGMA)),
    dataclasses.replace(
        _op("RandomResizedCrop", _resized_crop, "RandomResizedCrop scale (0.08, 1), ratio (3/4, "
            "4/3), resized to the input size, bilinear (scale 1 - 0.92m up to 1)", _crop_scale),
        sized=_resized_crop),
]

OPS: Mapping[str, OpDef] = types.MappingProxyType({op.name: op for op in _TABLE})
"""Read-only registry of every op, in a stable order."""


def op_names() -> list[str]:
    """Names of all registered ops, in registry order."""
    return list(OPS)


def get_op(name: str) -> OpDef:
    """Return the op called ``name``; an unknown name raises SpaceError listing the known ops."""
    op = OPS.get(name) if isinstance(name, str) else None
    if op is not None:
        return op
    known = sorted(OPS)
    message = f"unknown op {name!r}; known ops: {', '.join(known)}"
    if isinstance(name, str):
        by_lower = {k.lower(): k for k in known}
        close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
        if close:
            message += f"; did you mean {by_lower[close[0]]!r}?"
    raise SpaceError(message)


def build_op(name: str, magnitude: float, p: float,
             size: tuple[int, int] | None = None) -> A.BasicTransform:
    """Build a new transform for op ``name`` at ``magnitude`` with probability ``p`` (``size``:
    the images' (height, width) where known, `OpDef.build`)."""
    return get_op(name).build(magnitude, p, size)
