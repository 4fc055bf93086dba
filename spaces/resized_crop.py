"""RandomResizedCrop at its input's own size: the op `spaces.ops` builds when the images' size is
not known.

albumentations' `RandomResizedCrop` resizes its crop to a `size` fixed when it is built, and an
op of the registry may be built from its magnitude alone (`spaces.ops.build_op` without `size`).
This subclass keeps the parent's crop draw (`get_params_dependent_on_data`: up to 10 tries of an
area and a log-uniform aspect ratio, then the central crop) and resizes each crop back to the
size of the image it came from. Where the pipeline knows its image size
(`spaces.policy.build_pipeline`, exports) the op is plain `A.RandomResizedCrop`, which plain
`albumentations.load` reads; this class serialises too, but loading it needs this module
imported. Imported on first use only: albumentations pulls in torch.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.crops import functional as fcrops
from albumentations.augmentations.geometric import functional as fgeometric
from albumentations.core.type_definitions import Targets

__all__ = ["InputSizeResizedCrop"]


class InputSizeResizedCrop(A.RandomResizedCrop):
    """`A.RandomResizedCrop` whose output has the size of its input (images, masks, bounding
    boxes and keypoints; not volumes)."""

    _targets = (Targets.IMAGE, Targets.MASK, Targets.BBOXES, Targets.KEYPOINTS)

    def __init__(self, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (0.75, 4 / 3),
                 interpolation: int = cv2.INTER_LINEAR, p: float = 1.0) -> None:
        # `size` is a placeholder the parent requires; every method reading it is replaced
        super().__init__(size=(1, 1), scale=scale, ratio=ratio, interpolation=interpolation,
                         p=p)

    def get_transform_init_args(self) -> dict[str, Any]:
        return {"scale": self.scale, "ratio": self.ratio, "interpolation": self.interpolation}

    def apply(self, img: np.ndarray, crop_coords: tuple[int, int, int, int],
              **params: Any) -> np.ndarray:
        crop = fcrops.crop(img, *crop_coords)
        return fgeometric.resize(crop, tuple(params["shape"][:2]), self.interpolation)

    def apply_to_mask(self, mask: np.ndarray, crop_coords: tuple[int, int, int, int],
                      **params: Any) -> np.ndarray:
        crop = fcrops.crop(mask, *crop_coords)
        return fgeometric.resize(crop, tuple(params["shape"][:2]), self.mask_interpolation)

    def apply_to_keypoints(self, keypoints: np.ndarray, crop_coords: tuple[int, int, int, int],
                           **params: Any) -> np.ndarray:
        height, width = params["shape"][:2]
        cropped = fcrops.crop_keypoints_by_coords(keypoints, crop_coords)
        return fgeometric.keypoints_scale(cropped, width / (crop_coords[2] - crop_coords[0]),
                                          height / (crop_coords[3] - crop_coords[1]))
