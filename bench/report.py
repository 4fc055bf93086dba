"""Shared by the benchmarks: machine facts, and replacing one section of docs/BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "docs" / "BENCHMARKS.md"
SHARED = ROOT.parent / "shared" / "data"
HEADER = ("# Benchmarks\n\nFigures printed by the scripts in `bench/`, measured side by side in "
          "one run on the machine named in each section. Re-run a script to refresh its "
          "section.\n")


def machine() -> str:
    """One line: CPU count, Python, key library versions, date."""
    import albumentations
    import torch

    return (f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
            f"Python {platform.python_version()}, torch {torch.__version__}, "
            f"albumentations {albumentations.__version__}, {time.strftime('%Y-%m-%d')}")


def write_section(title: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace (or append) the `## title` section of docs/BENCHMARKS.md."""
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def cifar_images(n: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """`n` real 32x32 RGB images: CIFAR-10 from ../shared/data, else upscaled sklearn digits."""
    rng = np.random.default_rng(seed)
    path = SHARED / "cifar10_small.npz"
    if path.exists():
        x = np.load(path)["x_train"]
        return x[rng.permutation(len(x))[:n]], "CIFAR-10 (cifar10_small.npz)"
    from sklearn.datasets import load_digits

    d = load_digits().images
    big = (np.kron(d, np.ones((4, 4))) * (255 / 16)).astype(np.uint8)
    rgb = np.repeat(big[..., None], 3, axis=-1)
    return rgb[rng.permutation(len(rgb))[:n]], "sklearn digits upscaled to 32x32 RGB"


_SPLITS: dict[str, Any] = {}


def cached_splits(space: Any, data: str | None) -> Any:
    """The space's splits (`children.datasets.make_splits`, seed 0), loaded once per process
    for each dataset spec and data path (a bench's workers train many children on them)."""
    from children.datasets import load_dataset, make_splits

    key = f"{data}:{space.dataset.model_dump_json()}"
    if key not in _SPLITS:
        _SPLITS[key] = make_splits(load_dataset(space.dataset, data=data, download=False),
                                   space.dataset, seed=0)
    return _SPLITS[key]
