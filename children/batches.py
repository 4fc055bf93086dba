"""Training batches: the policy's albumentations pipeline per image, normalisation, batch ops.

Each image of a batch goes through the pipeline (uint8 HWC in, uint8 HWC out), the batch is
normalised with the train split's per-channel mean and std, then the policy's batch ops
(sample pairing, mixup, cutmix) mix it. `prefetch` runs this in one background thread so it
overlaps the training step (OpenCV and torch release the GIL).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    from spaces.policy import BatchOps

T = TypeVar("T")


@dataclass(frozen=True)
class Batch:
    """A training batch: float32 N×C×H×W inputs and two label sets mixed as lam·a + (1−lam)·b."""

    x: np.ndarray
    y_a: np.ndarray
    y_b: np.ndarray
    lam: float


def channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (float32, in 0..255 units) of uint8 N×H×W×C images."""
    channels = x.shape[-1]
    total = np.zeros(channels)
    squares = np.zeros(channels)
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk].reshape(-1, channels).astype(np.float64)
        total += part.sum(0)
        squares += (part * part).sum(0)
    count = max(1, x.size // channels)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    return mean.astype(np.float32), np.where(std > 1e-3, std, 1.0).astype(np.float32)


def normalize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """uint8 N×H×W×C -> contiguous float32 N×C×H×W, standardised per channel."""
    out = (x.astype(np.float32) - mean) / std
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def augment(images: np.ndarray, pipeline: Any) -> np.ndarray:
    """Apply the albumentations pipeline to each image of a (writable) uint8 N×H×W×C batch."""
    if pipeline is None or not pipeline.transforms:
        return images
    out = np.empty_like(images)
    shape = images.shape[1:]
    for i, image in enumerate(images):
        result = pipeline(image=image)["image"]
        if result.size != out[i].size:
            raise ValueError(f"the augmentation pipeline returned an image of shape "
                             f"{result.shape}, expected {shape}; policy ops must keep the size")
        out[i] = result.reshape(shape)
    return out


def mix_batch(x: np.ndarray, y: np.ndarray, ops: BatchOps, rng: np.random.Generator) -> Batch:
    """Apply the policy's batch ops to a normalised float batch (in place on `x`).

    Sample pairing (Inoue 2018) averages each image with probability `sample_pairing` with a random
    other image of the batch and keeps its own label. Mixup and cutmix (one of the two per batch
    when both are on) mix a permuted batch in with lam ~ Beta(alpha, alpha).
    """
    n = len(x)
    if ops.sample_pairing > 0 and n > 1:
        chosen = np.flatnonzero(rng.random(n) < ops.sample_pairing)
        if len(chosen):
            partners = rng.integers(0, n, size=len(chosen))
            x[chosen] = 0.5 * (x[chosen] + x[partners])
    modes = [(name, alpha) for name, alpha in (("mixup", ops.mixup_alpha),
                                                ("cutmix", ops.cutmix_alpha)) if alpha > 0]
    if not modes or n < 2:
        return Batch(x, y, y, 1.0)
    name, alpha = modes[int(rng.integers(len(modes)))]
    lam = float(rng.beta(alpha, alpha))
    perm = rng.permutation(n)
    if name == "mixup":
        x = lam * x + (1.0 - lam) * x[perm]
    else:
        height, width = x.shape[2:]
        cut_h, cut_w = int(height * np.sqrt(1.0 - lam)), int(width * np.sqrt(1.0 - lam))
        cy, cx = int(rng.integers(height)), int(rng.integers(width))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
        x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
    return Batch(x.astype(np.float32, copy=False), y, y[perm], lam)


def training_batches(
    x: np.ndarray, y: np.ndarray, order: np.ndarray, batch_size: int, pipeline: Any,
    ops: BatchOps, mean: np.ndarray, std: np.ndarray, rng: np.random.Generator,
) -> Iterator[Batch]:
    """Batches of `order` (indices into x, y): augmented, normalised, mixed. Never writes to x."""
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        images = augment(x[index], pipeline)  # fancy indexing copies: safe for read-only x
        yield mix_batch(normalize(images, mean, std), y[index], ops, rng)


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


def prefetch(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Produce `items` in a background thread, `depth` ahead; re-raises the producer's errors.

    Close the returned generator (contextlib.closing) to stop the producer early.
    """
    buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as err:  # handed to the consumer, which re-raises it
            put(_Failure(err))

    worker = threading.Thread(target=produce, name="augsearch-batches", daemon=True)
    worker.start()
    try:
        while True:
            item = buffer.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        worker.join()
