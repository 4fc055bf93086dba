"""The augmentations a found policy must beat: what users get without a search.

`none` trains without any augmentation; `cropflip` with the space's base crop/flip only;
`cutout` adds Cutout (DeVries & Taylor 2017) to that crop/flip: one square hole of side half the
image (16 px on CIFAR-10), filled with 0, on every image, the baseline Fast AutoAugment and
others report their gains against. It is augsearch's own `Cutout` op at magnitude 1 and
probability 1 (`A.CoarseDropout`, one 0.5 H × 0.5 W hole, fill 0; the batched path's kernel
means the same), so the trainer builds, seeds and runs it as it does any policy. One difference
from the paper: the hole lies wholly inside the image (as in albumentations), where DeVries &
Taylor centre it anywhere and clip it at the border, so theirs hides less on average.
`randaugment`, `trivialaugment` and `autoaugment` add torchvision's RandAugment(2, 9),
TrivialAugmentWide and AutoAugment's CIFAR-10 policy on top of the same base crop/flip, as in
their papers (without their Cutout). Each is a per-image function, uint8 H×W×C in and out, the
form `children.train.train_child(augment=...)` takes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from search.errors import SearchError
from spaces.policy import Op, Policy, SubPolicy, build_pipeline, identity_policy
from spaces.schema import BaseAug

ImageFn = Callable[[np.ndarray], np.ndarray]

NO_AUGMENTATION = BaseAug(crop=False, flip=False)
CUTOUT = Policy((SubPolicy((Op("Cutout", 1.0, 1.0),)),), provenance={"baseline": "cutout"})
"""Cutout (DeVries & Taylor 2017) as a policy: one hole of side half the image on every image."""


@dataclass(frozen=True)
class Baseline:
    """A baseline arm: the child's base augmentation, a policy on top of it (`cutout`) and, for
    torchvision's, a per-image op."""

    name: str
    description: str
    base: BaseAug
    torchvision: str | None = None  # "randaugment", "trivialaugment", "autoaugment"
    policy: Policy = field(default_factory=identity_policy)

    def augment(self, image_size: int) -> ImageFn | None:
        """A fresh per-image function for training (None: the trainer's own pipeline, the base
        crop/flip and `policy`)."""
        if self.torchvision is None:
            return None
        base = build_pipeline(identity_policy(), self.base, image_size)
        return TorchvisionFn(base, _torchvision_transform(self.torchvision))

    def tta(self, image_size: int) -> ImageFn | None:
        """The per-image function test-time augmentation averages over (None: nothing random)."""
        if self.torchvision is not None:
            return self.augment(image_size)
        pipeline = build_pipeline(self.policy, self.base, image_size)
        return AlbumentationsFn(pipeline) if pipeline.transforms else None


BASELINES = ("none", "cropflip", "cutout", "randaugment", "trivialaugment", "autoaugment")


def baseline(name: str, base: BaseAug) -> Baseline:
    """The baseline called `name`, on top of the space's base augmentation `base`."""
    crop = f"pad {base.crop_padding} + random crop" if base.crop and base.crop_padding else ""
    flip = "horizontal flip" if base.flip else ""
    base_text = " + ".join(p for p in (crop, flip) if p) or "no base augmentation"
    table = {
        "none": Baseline("none", "no augmentation at all", NO_AUGMENTATION),
        "cropflip": Baseline("cropflip", f"the space's base: {base_text}", base),
        "cutout": Baseline("cutout", f"{base_text}, then Cutout: one hole of half the side, "
                           "fill 0, always (CoarseDropout)", base, policy=CUTOUT),
        "randaugment": Baseline("randaugment", f"{base_text}, then torchvision "
                                "RandAugment(num_ops=2, magnitude=9)", base, "randaugment"),
        "trivialaugment": Baseline("trivialaugment", f"{base_text}, then torchvision "
                                   "TrivialAugmentWide()", base, "trivialaugment"),
        "autoaugment": Baseline("autoaugment", f"{base_text}, then torchvision "
                                "AutoAugment(AutoAugmentPolicy.CIFAR10)", base, "autoaugment"),
    }
    if name not in table:
        raise SearchError(f"unknown baseline '{name}'; choose from: {', '.join(BASELINES)} "
                          f"(comma-separated)")
    return table[name]


def parse_baselines(text: str | list[str] | tuple[str, ...]) -> list[str]:
    """Baseline names from `a,b,c` (or a list): checked, deduplicated, in the given order."""
    names = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for raw in names:
        name = raw.strip().lower()
        if not name:
            continue
        if name not in BASELINES:
            raise SearchError(f"unknown baseline '{raw.strip()}'; choose from: "
                              f"{', '.join(BASELINES)} (comma-separated)")
        if name not in out:
            out.append(name)
    return out


def _torchvision_transform(name: str) -> Any:
    from torchvision.transforms import v2

    if name == "randaugment":
        return v2.RandAugment(num_ops=2, magnitude=9)
    if name == "trivialaugment":
        return v2.TrivialAugmentWide()
    return v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)


class AlbumentationsFn:
    """An albumentations pipeline as a per-image function, reseedable like the trainer's own."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.pipeline(image=image)["image"]

    def set_random_seed(self, seed: int) -> None:
        self.pipeline.set_random_seed(seed)


class TorchvisionFn:
    """Base crop/flip (albumentations), then a torchvision v2 transform on a uint8 C×H×W tensor.

    torchvision draws from torch's global RNG, which the trainer seeds every epoch; the op runs
    with one intra-op thread (a thread-local setting): on tiny images more threads only wait on
    each other, 30-80x slower on a busy 2-core machine. Grayscale (1-channel) images work.
    """

    def __init__(self, base: Any, transform: Any) -> None:
        self.base = base
        self.transform = transform

    def __call__(self, image: np.ndarray) -> np.ndarray:
        import torch

        image = self.base(image=image)["image"]
        if image.ndim == 2:
            image = image[..., None]
        tensor = torch.from_numpy(np.array(image, dtype=np.uint8, order="C")).permute(2, 0, 1)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            out = self.transform(tensor)
        finally:
            torch.set_num_threads(threads)
        return out.permute(1, 2, 0).numpy()

    def set_random_seed(self, seed: int) -> None:
        self.base.set_random_seed(seed)
