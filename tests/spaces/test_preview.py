"""The preview grid: real digits images through the real training pipeline, written as PNG."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from spaces.policy import Op, Policy, SubPolicy, identity_policy
from spaces.preview import grid_shape, preview, tile_scale
from spaces.schema import BaseAug


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """Eight real 8×8 digits from scikit-learn, shown at 16×16 like the digits space does."""
    from sklearn.datasets import load_digits

    raw = load_digits().images[:8]  # float 0..16
    small = (raw * (255 / 16)).round().astype(np.uint8)
    big = np.stack([cv2.resize(im, (16, 16), interpolation=cv2.INTER_LINEAR) for im in small])
    return big[..., None]


def _invert() -> Policy:
    return Policy((SubPolicy((Op("Invert", 0.0, 1.0),)),))


def _tiles(png: np.ndarray, n: int, rows: int, h: int) -> list[list[np.ndarray]]:
    """Cut a written grid back into its tiles (downscaled to the original size)."""
    from spaces.preview import BAND, GAP

    scale = tile_scale(h)
    th = h * scale
    out = []
    for r in range(rows):
        y = GAP + r * (th + GAP) + (BAND - GAP if r > 0 else 0)
        row = []
        for k in range(n):
            x = GAP + k * (th + GAP)
            row.append(png[y:y + th:scale, x:x + th:scale])
        out.append(row)
    return out


def test_png_written_with_the_grid_size(tmp_path, digits):
    path = preview(_invert(), digits, tmp_path / "p.png", None, 16, columns=8, rows=4)
    png = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert png is not None and png.ndim == 2  # grayscale stays one channel
    assert png.shape == grid_shape(16, 16, 8, 4)
    assert tile_scale(16) >= 4  # a 16-pixel digit is enlarged to be visible
    assert png.shape[1] >= 8 * 16 * 4


def test_invert_rows_differ_and_originals_kept(tmp_path, digits):
    path = preview(_invert(), digits, tmp_path / "p.png", None, 16, columns=8, rows=3)
    tiles = _tiles(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), 8, 3, 16)
    for k in range(8):
        original = digits[k, :, :, 0]
        assert np.array_equal(tiles[0][k], original)
        assert np.array_equal(tiles[1][k], 255 - original)
        assert np.array_equal(tiles[2][k], 255 - original)


def test_identity_policy_without_base_leaves_images_alone(tmp_path, digits):
    path = preview(identity_policy(), digits, tmp_path / "p.png", None, 16, columns=8, rows=4)
    tiles = _tiles(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), 8, 4, 16)
    for row in tiles:
        for k, tile in enumerate(row):
            assert np.array_equal(tile, digits[k, :, :, 0])


def test_base_crop_moves_pixels_and_seed_reproduces(tmp_path, digits):
    base = BaseAug(crop=True, crop_padding=2, flip=False)
    a = preview(identity_policy(), digits, tmp_path / "a.png", base, 16, rows=4, seed=3)
    b = preview(identity_policy(), digits, tmp_path / "b.png", base, 16, rows=4, seed=3)
    assert a.read_bytes() == b.read_bytes()
    tiles = _tiles(cv2.imread(str(a), cv2.IMREAD_UNCHANGED), 8, 4, 16)
    moved = sum(not np.array_equal(t, digits[k, :, :, 0])
                for row in tiles[1:] for k, t in enumerate(row))
    assert moved > 0


def test_colour_images_and_fewer_images_than_columns(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    path = preview(_invert(), images, tmp_path / "c.png", None, 32, columns=8, rows=2)
    png = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert png.shape[:2] == grid_shape(32, 32, 3, 2)
    tiles = _tiles(png, 3, 2, 32)
    assert np.array_equal(tiles[0][2], images[2])
    assert np.array_equal(tiles[1][2], 255 - images[2])


@pytest.mark.parametrize("bad", [np.zeros((4, 8, 8), np.uint8), np.zeros((2, 8, 8, 3)),
                                 np.zeros((0, 8, 8, 1), np.uint8)])
def test_bad_images_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="images"):
        preview(identity_policy(), bad, tmp_path / "x.png", None, 8)


def test_import_pulls_in_neither_torch_nor_ray():
    code = ("import sys, spaces.preview; "
            "print(any(m in sys.modules for m in ('torch', 'ray')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "False"
