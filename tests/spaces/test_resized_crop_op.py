"""RandomResizedCrop in the op table: its magnitude map, the two albumentations forms (plain,
with the pipeline's image size; `InputSizeResizedCrop`, without), and exports that load with
plain albumentations. tests/spaces/test_ops.py runs it through every op's contract;
tests/children/test_resized_crop_parity.py holds the batched path to it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest

from spaces.drawn import Draw, DrawnOp
from spaces.errors import SpaceError
from spaces.ops import CROP_RATIO, build_op, get_op
from spaces.policy import Op, Policy, SubPolicy, build_pipeline, export_albumentations
from spaces.resized_crop import InputSizeResizedCrop
from spaces.schema import BaseAug

NAME = "RandomResizedCrop"


def _image(h: int = 32, w: int = 32, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)


def test_the_magnitude_sets_the_smallest_crop_area_linearly() -> None:
    op = get_op(NAME)
    assert op.has_magnitude and op.identity_at_zero and not op.signed and op.grayscale_ok
    assert [op.strength(m) for m in (0.0, 0.5, 1.0)] == pytest.approx([1.0, 0.54, 0.08])
    assert op.strength(0.0) == 1.0 and op.strength(1.0) == pytest.approx(0.08, abs=1e-12)
    built = build_op(NAME, 0.5, 0.3)
    assert isinstance(built, InputSizeResizedCrop) and built.p == 0.3
    assert built.scale == pytest.approx((0.54, 1.0)) and built.ratio == CROP_RATIO
    assert built.interpolation == cv2.INTER_LINEAR
    sized = build_op(NAME, 1.0, 1.0, size=(24, 32))
    assert type(sized) is A.RandomResizedCrop and sized.size == (24, 32)
    assert sized.scale == pytest.approx((0.08, 1.0)) and sized.ratio == CROP_RATIO
    assert isinstance(build_op(NAME, 0.0, 1.0), A.NoOp)
    assert isinstance(build_op(NAME, 0.0, 1.0, size=(32, 32)), A.NoOp)


def test_a_size_is_two_positive_whole_numbers() -> None:
    for bad in ((32,), (0, 32), (32.0, 32), "32x32"):
        with pytest.raises(SpaceError, match="size must be \\(height, width\\)"):
            build_op(NAME, 0.5, 1.0, size=bad)  # type: ignore[arg-type]
    assert isinstance(build_op("Rotate", 0.5, 1.0, size=(32, 32)), A.Sequential)  # unused


@pytest.mark.parametrize(("h", "w", "channels"), [(32, 32, 3), (17, 23, 1)])
def test_without_a_size_the_crop_keeps_each_inputs_size_and_equals_the_plain_form(
        h, w, channels) -> None:
    image = _image(h, w, channels)
    plain = A.Compose([build_op(NAME, 1.0, 1.0, size=(h, w))], seed=5, strict=True)
    input_sized = A.Compose([build_op(NAME, 1.0, 1.0)], seed=5, strict=True)
    outs = [(plain(image=image)["image"], input_sized(image=image)["image"]) for _ in range(8)]
    assert all(a.shape == b.shape == image.shape and np.array_equal(a, b) for a, b in outs)
    assert sum(not np.array_equal(b, image) for _, b in outs) >= 7
    other = _image(20, 12, channels)  # another size through the same transform
    assert input_sized(image=other)["image"].shape == other.shape


def test_masks_and_keypoints_follow_as_in_the_plain_form() -> None:
    image = np.zeros((32, 32, 3), np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    image[10:20, 12:22], mask[10:20, 12:22] = 255, 1
    points = A.KeypointParams(format="xy", remove_invisible=False)
    pipes = [A.Compose([build_op(NAME, 0.3, 1.0, size)], seed=2, strict=True,
                       keypoint_params=points) for size in (None, (32, 32))]
    for _ in range(5):
        ours, plain = (p(image=image, mask=mask, keypoints=[(16.0, 15.0)]) for p in pipes)
        assert ours["mask"].shape == (32, 32) and ours["mask"].any()
        assert np.array_equal(ours["mask"], plain["mask"])
        assert np.array_equal(ours["keypoints"], plain["keypoints"])
        assert np.array_equal(ours["image"], plain["image"])


def test_a_policy_with_the_crop_exports_for_plain_albumentations(tmp_path: Path) -> None:
    """Sub-policies and ops drawn per image: the export holds plain `RandomResizedCrop`s of the
    space's image size, loads in a process without augsearch and equals the training
    pipeline."""
    subs = Policy((SubPolicy((Op(NAME, 1.0, 0.8), Op("Brightness", 0.4, 0.8))),))
    drawn = Policy(draw=Draw((DrawnOp(NAME, (0.0, 1.0), 1.0), DrawnOp("Invert", (0.0, 0.0),
                                                                        0.5)), n=2, levels=3))
    for k, policy in enumerate((subs, drawn)):
        path = export_albumentations(policy, BaseAug(crop=True, crop_padding=4, flip=True), 32,
                                     tmp_path / f"best_policy{k}.json")
        assert "InputSizeResizedCrop" not in path.read_text()
        assert '"__class_fullname__": "RandomResizedCrop"' in path.read_text()
        code = ("import os, sys, numpy as np; os.environ['NO_ALBUMENTATIONS_UPDATE']='1'\n"
                "import albumentations as A\n"
                f"t = A.load({str(path)!r}, data_format='json')\n"
                "img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)\n"
                "outs = [t(image=img)['image'] for _ in range(20)]\n"
                "assert all(o.shape == img.shape and o.dtype == np.uint8 for o in outs)\n"
                "print(sum(int((o != img).any()) for o in outs))\n"
                "print('spaces' in sys.modules)\n")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=tmp_path, timeout=120)
        assert proc.returncode == 0, proc.stderr
        changed, leaked = proc.stdout.split()
        assert int(changed) >= 15 and leaked == "False"
        loaded = A.load(str(path), data_format="json")
        assert A.to_dict(loaded) == A.to_dict(build_pipeline(policy, BaseAug(crop=True,
                                                             crop_padding=4, flip=True), 32))
