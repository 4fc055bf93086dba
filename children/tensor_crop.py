"""RandomResizedCrop on batches: albumentations 2.0.8's crop draw and OpenCV's uint8 resize.

`crop_boxes` draws each sample's crop as albumentations' `RandomResizedCrop` draws it
(`get_params_dependent_on_data`): up to 10 tries of a target area uniform in `scale` of the
image's and an aspect ratio r log-uniform in `ratio`, a crop round(√(area·r)) wide and
round(√(area/r)) high taken from the first try that fits, its corner at int((H - h + 1)·u),
int((W - w + 1)·u'); when no try fits, the central crop of the largest box within the ratio
range. The tries run for every
sample at once on the batch's device (20 uniforms per sample, then 2 for the corner; float32
where albumentations uses Python's float64: a crop side differs only where √ lands within float
error of a .5, the same distribution). `resized_crop` resizes each crop back to the image size
with `cv2.resize(INTER_LINEAR)`'s 8-bit arithmetic: source positions from
((d + 0.5)·crop / size − 0.5) as exact fractions, 11-bit weights, the horizontal pass exact in
integers and the vertical one as OpenCV's SIMD path computes it (each row sum shifted right by
4, multiplied by its weight keeping the high 16 bits, the two added and rounded by 2 bits):
tests/children/test_resized_crop_parity.py finds it equal to OpenCV's (5.1, x86) on every
pixel; rounding the exact weighted sum once (OpenCV's scalar code) is a level off on about 11%
of values here. All of it is plain torch, every tensor made on the batch's device; no host sync.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from spaces.ops import CROP_RATIO

if TYPE_CHECKING:
    from children.tensor_aug import Draws

__all__ = ["TRIES", "crop_boxes", "draw", "kernel", "resized_crop"]

TRIES = 10  # albumentations' tries before the central crop
_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS: weights are whole multiples of 1/2048
_ONE = 1 << _BITS

Boxes = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def crop_boxes(draws: Draws, n: int, height: int, width: int, scale: tuple[float, float],
               ratio: tuple[float, float]) -> Boxes:
    """Per sample (top, left, height, width) of a crop, int64 on the draws' device, drawn as
    albumentations' `RandomResizedCrop(scale, ratio)` draws it for a height × width image."""
    area = float(height * width)
    low, high = scale[0] * area, scale[1] * area
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    target = draws.uniform(n * TRIES).view(n, TRIES).mul_(high - low).add_(low)
    aspect = draws.uniform(n * TRIES).view(n, TRIES).mul_(log_high - log_low).add_(log_low).exp_()
    w = torch.sqrt(target * aspect).round_()
    h = torch.sqrt(target / aspect).round_()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)  # the first try that fits
    found = fits.any(1)
    fallback_h, fallback_w = _central(height, width, ratio)
    h = torch.where(found, h.gather(1, first).squeeze(1), float(fallback_h)).long()
    w = torch.where(found, w.gather(1, first).squeeze(1), float(fallback_w)).long()
    top = _corner(draws.uniform(n), height - h)
    left = _corner(draws.uniform(n), width - w)
    centre_top, centre_left = (height - fallback_h) // 2, (width - fallback_w) // 2
    return (torch.where(found, top, centre_top), torch.where(found, left, centre_left), h, w)


def _corner(u: torch.Tensor, room: torch.Tensor) -> torch.Tensor:
    """int((room + 1)·u) for u in [0, 1), kept ≤ room where float32 rounds up to it."""
    return torch.minimum((u * (room + 1).float()).floor_().long(), room)


def _central(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """albumentations' fallback crop size: the whole image, cut to the ratio range's edge."""
    aspect = width / height
    if aspect < ratio[0]:
        return round(width / ratio[0]), width
    if aspect > ratio[1]:
        return height, round(height * ratio[1])
    return height, width


def _taps(start: torch.Tensor, length: torch.Tensor, size: int, clamp_weight: bool
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per sample and output position (N×size): the two source indices and the weight of the
    second, in 1/2048ths, of `cv2.resize(INTER_LINEAR)` from `length` pixels at `start` to
    `size`. The source position ((2d + 1)·length − size) / (2·size) is exact as a fraction; its
    weight is rounded to the nearest 1/2048. Columns (`clamp_weight`) outside the crop read its
    edge pixel at full weight; rows keep their weight and read the edge row twice, as OpenCV
    does."""
    d = torch.arange(size, device=start.device)
    numerator = (2 * d + 1).unsqueeze(0) * length.unsqueeze(1) - size  # N×size
    low = torch.div(numerator, 2 * size, rounding_mode="floor")
    remainder = numerator - low * (2 * size)
    weight = torch.div(remainder * (2 * _ONE) + 2 * size, 4 * size, rounding_mode="floor")
    last = (length - 1).unsqueeze(1)
    if clamp_weight:
        outside = (low < 0) | (low >= last)
        weight = torch.where(outside, 0, weight)
    first = low.clamp(min=0).minimum(last)
    second = (low + 1).clamp(min=0).minimum(last)
    offset = start.unsqueeze(1)
    return first + offset, second + offset, weight.int()


def resized_crop(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: torch.Tensor,
                 width: torch.Tensor) -> torch.Tensor:
    """Each sample's crop (top, left, height, width: int64, N each, on x's device) resized to
    x's own H×W as `cv2.resize(crop, INTER_LINEAR)` does on uint8; float32 levels in and out.
    The horizontal pass runs on every source row (exact integers), then the two rows each
    output row reads are gathered from it: four gathers in all."""
    n, c, h, w = x.shape
    row0, row1, beta = _taps(top, height, h, clamp_weight=False)  # N×H
    col0, col1, alpha = _taps(left, width, w, clamp_weight=True)  # N×W
    levels = x.to(torch.int32)
    a = alpha.view(n, 1, 1, w)
    across = (levels.gather(3, col0.view(n, 1, 1, w).expand(n, c, h, w)).mul_(_ONE - a)
              .add_(levels.gather(3, col1.view(n, 1, 1, w).expand(n, c, h, w)).mul_(a)))
    across >>= 4  # OpenCV's SIMD vertical pass: each row sum shifted right by 4 first

    def row(index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        picked = across.gather(2, index.view(n, 1, h, 1).expand(n, c, h, w))
        return picked.mul_(weight.view(n, 1, h, 1)).bitwise_right_shift_(16)

    out = row(row0, _ONE - beta).add_(row(row1, beta)).add_(2).bitwise_right_shift_(2)
    return out.clamp_(0, 255).float()


# ---------------------------------------------------------------- the op on the batched path


def draw(draws: Draws, shape: Sequence[int], s: float) -> Boxes | tuple[()]:
    """The op's per-sample crops at strength `s` (the smallest area fraction,
    `spaces.ops.OpDef.strength`); none at 1, the whole image."""
    if s >= 1.0:
        return ()
    n, _, h, w = shape
    return crop_boxes(draws, n, h, w, (s, 1.0), CROP_RATIO)


def kernel(x: torch.Tensor, s: float, _signs: torch.Tensor, p: tuple[torch.Tensor, ...]
           ) -> torch.Tensor:
    """RandomResizedCrop at strength `s` with the crops `draw` made."""
    return x if s >= 1.0 else resized_crop(x, *p)
