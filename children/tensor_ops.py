"""The policy ops as batched tensor kernels that do what albumentations 2.0.8 does to uint8 images.

Every kernel takes a float32 N×C×H×W batch holding whole numbers in [0, 255] (a uint8 image as
floats) and per-sample parameters already drawn (a sign, a hole, a noise field), and returns the
same kind of batch: the arithmetic, the order of roundings and the truncations are albumentations'
and OpenCV's on uint8 images, so an op here and the op table's albumentations transform give the
same image (exactly where both sides are exact; `tests/children/test_tensor_parity.py` pins each
op's tolerance where OpenCV uses fixed-point arithmetic). Kernels are device-agnostic: every
tensor they make is made on the input's device, and per-sample parameters must already be there
(`tests/children/test_device_purity.py` runs them on a batch on the `meta` device). Per-pixel
work is float32 (or int64 where an exact sum needs it); the only float64 is host-side, cached per
strength (the affine grids, the blur matrix), and `contrast`'s N per-sample offsets. The
histograms (Equalize, AutoContrast) count with an int64 `scatter_add_`, exact in any order: no
kernel scatter-adds floats, an accumulation whose order a GPU may vary from run to run.

All of it is plain torch. kornia has equivalents for the warp (`warp_affine`) and the filters
(`filter2d`, `filter2d_separable`) that reach the same parity, but these kernels are faster on one
core (bench/aug_throughput.py measures both); kornia's colour, equalisation, posterisation and
sharpness ops follow PIL or torchvision float semantics, not albumentations'.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

__all__ = [
    "affine_grid",
    "affine_matrices",
    "auto_contrast",
    "blur",
    "brightness",
    "contrast",
    "cutout",
    "cutout_size",
    "equalize",
    "gaussian_kernel",
    "gray",
    "invert",
    "noise",
    "posterize",
    "sample",
    "saturation",
    "sharpen",
    "shift",
    "solarize",
    "translate",
]

_MAX = 255.0
_GRAY = (9798, 19235, 3735)  # OpenCV's RGB->gray weights in 15-bit fixed point (sum 2**15)
_GRAY_SHIFT = 15


def _column(values: torch.Tensor, like: torch.Tensor, dtype: torch.dtype | None = None
            ) -> torch.Tensor:
    """Per-sample values (already on the batch's device) shaped N×1×1×1, in `like`'s dtype."""
    return values.to(dtype or like.dtype).reshape(-1, 1, 1, 1)


# ---------------------------------------------------------------- geometry


def shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor,
          flip: torch.Tensor | None = None) -> torch.Tensor:
    """Move each image by whole pixels (dy, dx) with zero fill, after an optional h-flip.

    Output pixel (y, x) reads input (y - dy, x' - dx), x' = W-1-x for flipped samples, else x.
    Pad-and-random-crop is a shift by (pad - offset), and an integer translation is a shift, so
    both are exact copies, as OpenCV's are.
    """
    n, c, h, w = x.shape
    dev = x.device
    rows = torch.arange(h, device=dev).unsqueeze(0) - dy.long().unsqueeze(1)  # N×H
    cols = torch.arange(w, device=dev).unsqueeze(0).expand(n, w)
    if flip is not None:
        cols = torch.where(flip.bool().unsqueeze(1), (w - 1) - cols, cols)
    cols = cols - dx.long().unsqueeze(1)  # N×W
    inside = ((rows >= 0) & (rows < h)).unsqueeze(2) & ((cols >= 0) & (cols < w)).unsqueeze(1)
    index = rows.clamp(0, h - 1).unsqueeze(2) * w + cols.clamp(0, w - 1).unsqueeze(1)  # N×H×W
    out = x.flatten(2).gather(2, index.flatten(1).unsqueeze(1).expand(n, c, h * w))
    return out.view(n, c, h, w) * inside.unsqueeze(1).to(x.dtype)


def translate(x: torch.Tensor, pixels: torch.Tensor, axis: int) -> torch.Tensor:
    """Move each image by whole `pixels` along `axis` (2: down, 3: right) with zero fill."""
    n, c, h, w = x.shape
    size = x.shape[axis]
    source = torch.arange(size, device=x.device).unsqueeze(0) - pixels.long().unsqueeze(1)
    inside = ((source >= 0) & (source < size)).to(x.dtype)
    shape = (n, 1, size, 1) if axis == 2 else (n, 1, 1, size)
    index = source.clamp(0, size - 1).view(shape).expand(n, c, h, w)
    return x.gather(axis, index) * inside.view(shape)


def affine_matrices(height: int, width: int, rotate: torch.Tensor, shear_x: torch.Tensor,
                    shear_y: torch.Tensor) -> torch.Tensor:
    """Forward pixel matrices (N×2×3, float64) of albumentations' `Affine` about the centre.

    albumentations composes centre · shear · rotate · centre⁻¹ with the centre at
    (W/2 - 0.5, H/2 - 0.5), a rotation [[cos, sin], [-sin, cos]] of `rotate % 360` degrees and
    the shear angles negated; this is the same product, per sample.
    """
    r = torch.deg2rad(rotate.double() % 360.0)
    cos, sin = torch.cos(r), torch.sin(r)
    tx = torch.tan(torch.deg2rad(-shear_x.double()))
    ty = torch.tan(torch.deg2rad(-shear_y.double()))
    # shear @ rotate
    a, b = cos - tx * sin, sin + tx * cos
    c, d = ty * cos - sin, ty * sin + cos
    cx, cy = width / 2 - 0.5, height / 2 - 0.5
    row0 = torch.stack([a, b, cx - a * cx - b * cy], -1)
    row1 = torch.stack([c, d, cy - c * cx - d * cy], -1)
    return torch.stack([row0, row1], 1)


def sample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """`cv2.warpAffine`'s pixels (bilinear, constant 0 border, rounded): reads at `grid`
    (N×H×W×2 in [-1, 1], the corner pixels' centres at ±1 as OpenCV places them)."""
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.round_().clamp_(0.0, _MAX)


@functools.lru_cache(maxsize=256)
def affine_grid(height: int, width: int, rotate: float, shear_x: float, shear_y: float,
                device: torch.device) -> torch.Tensor:
    """The sampling grid (1×H×W×2) of one albumentations `Affine`, for `sample`."""
    one = torch.ones(1, dtype=torch.float64, device="cpu")
    m = affine_matrices(height, width, one * rotate, one * shear_x, one * shear_y)
    theta = _normalised_inverse(m, height, width).float()
    return F.affine_grid(theta, [1, 1, height, width], align_corners=True).to(device)


def _normalised_inverse(m: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The inverse of forward pixel matrices m (N×2×3), in `affine_grid`'s [-1, 1] coordinates."""
    a, b, tx = m[:, 0].unbind(1)
    c, d, ty = m[:, 1].unbind(1)
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    itx, ity = -(ia * tx + ib * ty), -(ic * tx + id_ * ty)
    # pixel p = (u + 1)(size - 1)/2 for normalised u; conjugate the inverse by that map
    sx, sy = (w - 1) / 2.0, (h - 1) / 2.0
    row0 = torch.stack([ia, ib * sy / sx, (ia * sx + ib * sy + itx - sx) / sx], -1)
    row1 = torch.stack([ic * sx / sy, id_, (ic * sx + id_ * sy + ity - sy) / sy], -1)
    return torch.stack([row0, row1], 1)


# ---------------------------------------------------------------- colour (ColorJitter on uint8)


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """ColorJitter brightness: albucore's float32 table x·f, clipped, truncated to uint8.

    `factor`: per sample, float32 (albucore rounds the factor to float32 itself).
    """
    f = _column(factor.float(), x)
    return (x * f).clamp_(0.0, _MAX).floor_()


def gray(x: torch.Tensor) -> torch.Tensor:
    """`cv2.cvtColor(RGB2GRAY)` on uint8: fixed-point weights, rounded; N×1×H×W (1 channel: x).

    The weighted sum stays below 2**24, so float32 holds it exactly.
    """
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    total = (r * _GRAY[0]).add_(g * _GRAY[1]).add_(b * _GRAY[2]).add_(1 << (_GRAY_SHIFT - 1))
    return total.div_(1 << _GRAY_SHIFT).floor_().unsqueeze(1)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """ColorJitter contrast: albucore's float32 table x·f + offset, clipped, truncated, where
    offset = mean(gray)·(1 - f) is numpy's float64 product rounded once to float32.

    `factor`: per sample, float64 (N values). The offset is the one float64 computation left on
    a device, on N values per batch, never per pixel: computed in float32 it lands an ulp off
    often enough to move pixels by a level (a pixel equal to its image's grey mean sits exactly
    on a truncation boundary; tests/children/test_tensor_parity.py pins such images). The grey
    sum is exact in int64 and every per-pixel step is float32.
    """
    f = factor.double()
    total = gray(x).to(torch.int32).sum(dim=(1, 2, 3))  # int64, exact
    mean = total.double() / float(x.shape[2] * x.shape[3])
    offset = _column((mean * (1.0 - f)).float(), x)
    return (x * _column(f.float(), x)).add_(offset).clamp_(0.0, _MAX).floor_()


_FIXED = 44  # binary places of saturation's exact fixed-point sums


def saturation(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """ColorJitter saturation: `cv2.addWeighted(x, α, gray, β)` (identity on 1 channel), with
    OpenCV's float32 weights per sample: α = float32(f), β = float32(1 - f) (computed from the
    float64 f, so not 1 - α).

    OpenCV computes fma(x, α, float32(gray·β)) in float32 and rounds half to even: one rounding
    of the exact sum. Plain float32 rounds twice (a level off on up to 2% of pixels); the exact
    sum fits int64 fixed point with 44 binary places (for the op table's f, 0.1 to 1.9: x·α needs
    8 + 24 bits; gray·β is a float32 product, a whole number of 2^-44 for any |β| >= 2^-21, and a
    smaller β cannot move a pixel) and stays below 2^53, so its one conversion to float32 is the
    fused result.
    """
    if x.shape[1] == 1:
        return x
    part = gray(x) * _column(beta.float(), x)  # float32: OpenCV's rounded gray·β
    scale = float(2 ** _FIXED)
    a = (_column(alpha.float(), x) * scale).long()  # exact: a power-of-two scale
    exact = (x.long() * a).add_((part * scale).long())
    return (exact.float() * (1.0 / scale)).round_().clamp_(0.0, _MAX)


# ---------------------------------------------------------------- filters


def sharpen(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """`A.Sharpen(method="kernel", lightness=1)`: filter2D with (1-a)·I + a·[-1.., 9, -1..].

    That kernel is (1 + 9a)·I - a·box3x3; the box sum is separable, which makes this 3x
    faster than a 3x3 convolution on CPU. Reflect-101 borders, as OpenCV's default.
    """
    h, w = x.shape[2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    rows = padded[:, :, 0:h].add(padded[:, :, 1:h + 1]).add_(padded[:, :, 2:h + 2])
    box = rows[..., 0:w].add(rows[..., 1:w + 1]).add_(rows[..., 2:w + 2])
    out = padded[:, :, 1:h + 1, 1:w + 1] * (1.0 + 9.0 * alpha)
    return out.sub_(box, alpha=alpha).round_().clamp_(0.0, _MAX)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """albumentations' 1-D Gaussian for `blur_limit=0`: size int(3.5σ)·2 + 1, normalised."""
    size = int(sigma * 3.5) * 2 + 1
    grid = torch.arange(size, dtype=torch.float64, device="cpu") - size // 2
    kernel = torch.exp(-0.5 * (grid / sigma) ** 2)
    return kernel / kernel.sum()


@functools.lru_cache(maxsize=32)
def _blur_matrix(sigma: float, size: int, device: torch.device) -> torch.Tensor:
    """The 1-D blur along an axis of `size` pixels as a size×size matrix.

    Row i holds the kernel centred on i, its taps beyond the edge folded back as OpenCV's
    default border (reflect-101: ...2 1 | 0 1 2 ... n-1 | n-2 ...) reads them.
    """
    kernel = gaussian_kernel(sigma)
    radius = len(kernel) // 2
    matrix = torch.zeros(size, size, dtype=torch.float64, device="cpu")
    for i in range(size):
        for tap, weight in enumerate(kernel.tolist()):
            j = abs(i + tap - radius)
            j = 2 * (size - 1) - j if j > size - 1 else j
            matrix[i, j] += weight
    return matrix.float().to(device)


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """`A.GaussianBlur(sigma)`: `cv2.sepFilter2D` with `gaussian_kernel(sigma)`, rounded.

    Two matrix products (columns, then rows), several times faster on CPU than a 15-tap
    convolution.
    """
    h, w = x.shape[2:]
    if int(sigma * 3.5) >= min(h, w):  # the kernel's radius (gaussian_kernel)
        raise ValueError(f"GaussianBlur sigma {sigma:g} needs images larger than {h}x{w}")
    rows, cols = _blur_matrix(sigma, h, x.device), _blur_matrix(sigma, w, x.device)
    return torch.matmul(torch.matmul(rows, x), cols.T).round_().clamp_(0.0, _MAX)


# ---------------------------------------------------------------- tone


def posterize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Keep the top `bits` bits of each value (uint8 & mask)."""
    step = float(2 ** (8 - bits))
    return torch.floor(x / step).mul_(step)


def solarize(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Invert values >= threshold·255 (albumentations' uint8 table)."""
    cut = math.ceil(threshold * _MAX)  # whole values: i >= t·255 exactly when i >= ceil(t·255)
    return torch.where(x >= cut, _MAX - x, x)


def invert(x: torch.Tensor) -> torch.Tensor:
    return _MAX - x


def _cumulative(x: torch.Tensor, skip_top: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (sample, channel) cumulative 256-bin histograms (N·C×256, int64), with the value 255
    left out when `skip_top`, and the values as indices (N·C×H·W)."""
    values = x.reshape(x.shape[0] * x.shape[1], -1).long()
    hist = torch.zeros(len(values), 256, dtype=torch.long, device=x.device)
    hist.scatter_add_(1, values, torch.ones(1, dtype=torch.long, device=x.device
                                            ).expand_as(values))
    if skip_top:
        hist[:, 255] = 0
    return hist.cumsum_(1), values


def _apply_lut(x: torch.Tensor, lut: torch.Tensor, values: torch.Tensor,
               keep: torch.Tensor) -> torch.Tensor:
    """Each (sample, channel) row's lut applied to its values; rows `keep` left alone."""
    identity = torch.arange(256, device=x.device, dtype=lut.dtype).expand_as(lut)
    return torch.where(keep, identity, lut).gather(1, values).view_as(x)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """`cv2.equalizeHist` on each channel (A.Equalize mode "cv", by channels).

    OpenCV: with i the lowest value present, lut[j] = round(float32(cdf[j] - cdf[i]) ·
    float32(255 / (total - cdf[i]))); a constant channel stays as it is.
    """
    cdf, values = _cumulative(x)
    total = cdf[:, 255:]
    lowest = x.flatten(2).amin(2).long().view(-1, 1)
    at_lowest = cdf.gather(1, lowest)
    scale = torch.full_like(total, 255, dtype=torch.float32) / (total - at_lowest).float()
    lut = (cdf - at_lowest).float().mul_(scale).round_().clamp_(0.0, _MAX)
    return _apply_lut(x, lut, values, at_lowest == total)


def auto_contrast(x: torch.Tensor) -> torch.Tensor:
    """`A.AutoContrast(cutoff=0, method="cdf")` per channel.

    Its histogram spans `[0, 255)` (`cv2.calcHist` excludes the upper bound), so 255s are not
    counted. With lo the lowest value counted, lut = round(255 · (cdf - cdf[lo]) / (cdf[254] -
    cdf[lo])) in float32, clipped: values above the highest counted one (255 among them) map to
    255. A channel with fewer than two distinct counted values is left alone.
    """
    cdf, values = _cumulative(x, skip_top=True)
    counted = torch.where(x < _MAX, x, _MAX).flatten(2).amin(2).long().view(-1, 1)
    at_lo, at_hi = cdf.gather(1, counted.clamp_(max=254)), cdf[:, 254:255]
    span = (at_hi - at_lo).float()
    lut = (cdf - at_lo).float().mul_(255.0).div_(span).round_().clamp_(0.0, _MAX)
    return _apply_lut(x, lut, values, at_hi == at_lo)


# ---------------------------------------------------------------- dropout, noise


def cutout_size(fraction: float, height: int, width: int) -> tuple[int, int]:
    """A.CoarseDropout's hole for a side `fraction` of the image: int(side · fraction)."""
    return int(height * fraction), int(width * fraction)


def cutout(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: int,
           width: int) -> torch.Tensor:
    """Zero one `height`×`width` hole per sample at (top, left) (A.CoarseDropout, fill 0)."""
    _, _, h, w = x.shape
    dev = x.device
    rows = torch.arange(h, device=dev).unsqueeze(0) - top.long().unsqueeze(1)
    cols = torch.arange(w, device=dev).unsqueeze(0) - left.long().unsqueeze(1)
    hole = ((rows >= 0) & (rows < height)).unsqueeze(2) & ((cols >= 0) & (cols < width)
                                                           ).unsqueeze(1)
    return x * (~hole).unsqueeze(1).to(x.dtype)


def noise(x: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """A.GaussNoise's addition on uint8: the noise truncated toward 0, added, clipped."""
    return (x + torch.trunc(field.to(x.dtype))).clamp_(0.0, _MAX)
