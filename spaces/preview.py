"""Preview a policy: a PNG grid of real training images and what the policy makes of them.

The first row holds the original images; every following row shows the same images passed once
more through `spaces.policy.build_pipeline`, the pipeline the children train with, so the grid
shows exactly what a child saw. Small images are enlarged with nearest-neighbour scaling so a
16×16 digit stays readable.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spaces.policy import Policy, build_pipeline

if TYPE_CHECKING:
    from spaces.schema import BaseAug

GAP = 2  # pixels between tiles and around the grid
BAND = 8  # pixels between the originals and the augmented rows
TILE_TARGET = 96  # small images are scaled up by an integer factor to about this size
BACKGROUND = 255
BAND_COLOUR = 170


def tile_scale(height: int) -> int:
    """The integer upscaling factor for images `height` pixels high (1 for large images)."""
    return max(1, math.ceil(TILE_TARGET / height)) if height < TILE_TARGET else 1


def grid_shape(height: int, width: int, columns: int, rows: int) -> tuple[int, int]:
    """Pixel (height, width) of a grid of `rows` × `columns` images of `height` × `width`."""
    scale = tile_scale(height)
    th, tw = height * scale, width * scale
    grid_h = rows * th + (rows + 1) * GAP + (BAND - GAP if rows > 1 else 0)
    return grid_h, columns * tw + (columns + 1) * GAP


def augmented_rows(
    policy: Policy, images: np.ndarray, base: BaseAug | None, image_size: int, rows: int,
    seed: int = 0,
) -> list[np.ndarray]:
    """`rows` independent passes of `images` through the policy's training pipeline."""
    pipeline = build_pipeline(policy, base, image_size, seed=seed)
    out = []
    for _ in range(rows):
        batch = np.empty_like(images)
        for i, image in enumerate(images):
            result = pipeline(image=np.ascontiguousarray(image))["image"]
            if result.size != image.size:
                raise ValueError(f"the policy's pipeline returned shape {result.shape} for an "
                                 f"image of shape {image.shape}; policy ops must keep the size")
            batch[i] = result.reshape(image.shape)
        out.append(batch)
    return out


def preview(
    policy: Policy,
    images: np.ndarray,
    path: str | Path,
    base: BaseAug | None,
    image_size: int,
    *,
    columns: int = 8,
    rows: int = 4,
    seed: int = 0,
) -> Path:
    """Write a PNG grid: originals in the first row, the policy's augmentations below.

    `images` is uint8 N×H×W×C (C = 1 or 3); the first `columns` of them are shown (all of them
    when there are fewer). `rows` counts all rows, originals included. Returns the path written.
    """
    images = _checked(images)
    if columns < 1 or rows < 1:
        raise ValueError(f"columns and rows must be >= 1, got columns={columns}, rows={rows}")
    shown = np.array(images[:columns])  # a writable copy (Ray's object store is read-only)
    grid_rows = [shown, *augmented_rows(policy, shown, base, image_size, rows - 1, seed)]
    grid = _compose(grid_rows)
    return _write_png(grid, Path(path))


def _checked(images: np.ndarray) -> np.ndarray:
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[3] not in (1, 3):
        shape = getattr(images, "shape", None)
        raise ValueError(f"images must be a uint8 array N×H×W×C with C = 1 or 3, got shape "
                         f"{shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")
    if len(images) == 0:
        raise ValueError("images is empty; pass at least one image")
    return images


def _compose(grid_rows: list[np.ndarray]) -> np.ndarray:
    n, h, w, c = grid_rows[0].shape
    scale = tile_scale(h)
    th, tw = h * scale, w * scale
    height, width = grid_shape(h, w, n, len(grid_rows))
    canvas = np.full((height, width, c), BACKGROUND, dtype=np.uint8)
    if len(grid_rows) > 1:
        top = GAP + th
        canvas[top + GAP:top + BAND - GAP] = BAND_COLOUR
    for r, batch in enumerate(grid_rows):
        y = GAP + r * (th + GAP) + (BAND - GAP if r > 0 else 0)
        for k in range(n):
            x = GAP + k * (tw + GAP)
            tile = np.repeat(np.repeat(batch[k], scale, axis=0), scale, axis=1)
            canvas[y:y + th, x:x + tw] = tile
    return canvas


def _write_png(grid: np.ndarray, path: Path) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    image = grid[:, :, 0] if grid.shape[2] == 1 else cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write the preview PNG to {path}")
    return path
