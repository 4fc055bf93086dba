"""Training batches: augmentation, normalisation, batch ops, and a background producer.

Two paths make the same batches. `training_batches` passes each image through the policy's
albumentations pipeline (uint8 HWC in, uint8 HWC out) and normalises the batch with numpy;
`tensor_batches` augments a whole uint8 N×C×H×W tensor at once on the child's device
(`children.tensor_aug`) and normalises it there, from a train split kept on that device. Both then
apply the policy's batch ops (sample pairing, mixup, cutmix) with the same draws and the one
implementation of `children.batch_ops`. `prefetch` runs CPU work in one background thread so it
overlaps the training step (OpenCV and torch release the GIL).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from children.batch_ops import apply_mix, draw_mix, plans_on

if TYPE_CHECKING:
    from spaces.policy import BatchOps

T = TypeVar("T")


@dataclass(frozen=True)
class Batch:
    """A training batch: float32 N×C×H×W inputs (a numpy array, or a tensor already on the
    child's device) and two label sets mixed as lam·a + (1−lam)·b (numpy arrays, or int64
    tensors on the inputs' device)."""

    x: Any
    y_a: Any
    y_b: Any
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


def mix_batch(x: Any, y: np.ndarray, ops: BatchOps, rng: np.random.Generator) -> Batch:
    """Apply the policy's batch ops to a normalised float batch (in place on `x` where they can).

    `x` is a numpy array or a torch tensor (on any device); either is mixed by
    `children.batch_ops.apply_mix` (a numpy array through a tensor sharing its memory) with the
    draws of `draw_mix` from `rng`, so both paths mix alike.
    """
    plan = draw_mix(len(x), x.shape[2], x.shape[3], ops, rng)
    if isinstance(x, np.ndarray):
        x = apply_mix(torch.from_numpy(x), plan).numpy()
    else:
        x = apply_mix(x, plan)
    y_b = y if plan.perm is None else y[plan.perm]
    return Batch(x, y, y_b, plan.lam)


def tensor_batches(
    images: Any, y: Any, order: np.ndarray, batch_size: int, pipeline: Any,
    ops: BatchOps, mean: Any, std: Any, draws: Any, rng: np.random.Generator,
    device: Any,
) -> Iterator[Batch]:
    """The batched path: rows `order` of uint8 N×C×H×W `images` augmented on `device` by
    `pipeline(x, draws)` (a `children.tensor_aug.BatchedPipeline`), normalised and mixed.

    Give `images` on `device` (a run keeps its train split there), with `y` an int64 tensor
    there too and `mean`/`std` tensors there: then the epoch's batch order and the batch ops'
    plans cross from the host once each, before the first batch, and nothing comes back. Host
    `images` are moved a batch at a time, and a numpy `y` gives numpy labels. `rng` draws the
    batch ops as `training_batches` does (`draw_mix`, the epoch's plans in batch order: the same
    draws). Never writes to `images`.
    """
    dev = torch.device(device)
    mean_t = torch.as_tensor(mean, device=dev).view(1, -1, 1, 1)  # no copy when already there
    std_t = torch.as_tensor(std, device=dev).view(1, -1, 1, 1)
    starts = range(0, len(order), batch_size)
    plans = [draw_mix(len(order[s:s + batch_size]), *images.shape[2:], ops, rng) for s in starts]
    moved = plans_on(plans, dev)
    rows = torch.as_tensor(order, device=images.device)
    pin = images.device.type == "cpu" and dev.type == "cuda"
    for b, start in enumerate(starts):
        index = rows[start:start + batch_size]
        x = images.index_select(0, index)
        x = (x.pin_memory() if pin else x).to(dev, non_blocking=True)
        x = apply_mix(pipeline(x, draws).float().sub_(mean_t).div_(std_t), moved[b])
        if isinstance(y, np.ndarray):
            y_a = y[order[start:start + batch_size]]
            perm = plans[b].perm
        else:
            y_a, perm = y.index_select(0, index.to(y.device)), moved[b].perm
        yield Batch(x, y_a, y_a if perm is None else y_a[perm], plans[b].lam)


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
