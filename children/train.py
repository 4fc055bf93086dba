"""The child trainer: one function, data injected, returning a policy's reward and diagnostics.

`train_child` trains a child model on the search's train split under a policy (its augmentation,
per image through albumentations or batched on the child's device, plus batch ops) and scores it
each epoch on the validation pool (or a sample drawn afresh for the trial, DeepAugment's guard
against overfitting the validation set) and on the fixed audit set, which the reward never sees.
Two seeds keep comparisons fair: `seed` fixes the initial weights, batch order and dropout
(shared by every trial of a search: common random numbers), `aug_seed` the augmentation's own
draws (per trial). It knows nothing of Ray: progress and checkpoints leave through the
`on_epoch(stats, state)` callback, and `state` resumes a run.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from children.batches import Batch, prefetch
from children.datasets import Arrays, Splits
from children.errors import DataError, DivergedError
from children.feed import Feed, PathLog, PerImage
from children.models import build_model
from children.optim import amp_dtype, autocast, lr_factor, make_optimizer
from children.reward import first_audit_epoch, reward_from_history, val_sample

if TYPE_CHECKING:
    from spaces.policy import Policy
    from spaces.schema import ChildSpec, OptimizerSpec, RewardSpec

__all__ = ["DivergedError", "EpochStats", "Metrics", "TrainState", "reward_from_history",
           "train_child"]

_EVAL_BATCH = 512


@dataclass
class EpochStats:
    """One epoch: train loss/accuracy on augmented batches, val and audit accuracy, speed."""

    epoch: int  # 1-based: epochs completed
    train_loss: float
    train_accuracy: float
    val_accuracy: float
    audit_accuracy: float  # NaN when the audit set is empty or not scored this epoch
    seconds: float  # the whole epoch, evaluation included
    images_per_s: float  # training images per second (augmentation and step)


@dataclass
class Metrics:
    """What a trained child says about its policy: the reward and diagnostics."""

    reward: float
    val_accuracy: float
    audit_accuracy: float
    train_accuracy: float
    train_val_gap: float
    history: list[EpochStats]
    images_per_s: float
    wall_seconds: float
    epochs: int
    reward_epochs: list[int] = field(default_factory=list)  # the epochs the reward averages
    note: str = ""  # set when the train−val gap filter left no epoch and the last one was used
    augmentation: str = ""  # the path(s) training batches took: batched, albumentations or both


@dataclass
class TrainState:
    """A picklable snapshot after `epoch` epochs, to checkpoint and resume (PBT's exploit)."""

    epoch: int
    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    history: list[EpochStats]
    policy: Policy | None = None
    scaler: dict[str, Any] | None = None


def train_child(
    child: ChildSpec,
    reward: RewardSpec,
    policy: Policy,
    splits: Splits,
    *,
    seed: int,
    aug_seed: int | None = None,
    threads: int | None = None,
    device: str | None = None,
    on_epoch: Callable[[EpochStats, TrainState], None] | None = None,
    state: TrainState | None = None,
    epochs: int | None = None,
    schedule: Callable[[int], Policy] | None = None,
    on_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
    augment: Callable[[np.ndarray], np.ndarray] | None = None,
    on_end: Callable[[Callable[[np.ndarray], np.ndarray]], None] | None = None,
) -> Metrics:
    """Train `child.model` under `policy` on `splits.train` and return its reward and history.

    `epochs` overrides child.epochs (the length of the learning-rate schedule); `state` continues
    a run from state.epoch; `schedule(e)` gives the policy of 0-based epoch e and overrides
    `policy`. `threads` sets torch's CPU threads (the CPUs the trial was given); `device` defaults
    to CUDA when available. `on_batch(inputs, targets)` sees every batch the model receives.
    Same seed, same device and threads give the same metrics. Raises DivergedError at the end of
    the epoch whose loss first became NaN/inf, naming that epoch and step (losses are read from
    the device once per epoch, never per step). `aug_seed` (default: `seed`) drives the
    augmentation pipeline and the batch ops; `seed` drives everything else, a fresh validation
    sample included, so two runs with the same `seed` and different policies differ only
    through their policies' augmentation.

    `child.augmentation` chooses how batches are augmented: `batched` augments whole uint8
    tensors on `device` (`children.tensor_aug`, the same meaning as the albumentations pipeline,
    drawn from `aug_seed` as well), `albumentations` one image at a time in the prefetch thread,
    `auto` the faster for the device. A policy with an op that has no batched kernel falls back
    to albumentations, and the run says so once on stderr; `Metrics.augmentation` records the
    path(s) taken.

    `augment(image)` (uint8 H×W×C in and out) replaces the policy's albumentations pipeline,
    base crop/flip included, for augmentations that are not augsearch policies (torchvision's
    RandAugment, a plain albumentations file); the policy's batch ops still apply. It is reseeded
    each epoch through its `set_random_seed(seed)` when it has one. It runs in the prefetch
    thread: one that draws from torch's global RNG (torchvision transforms) interleaves with the
    training step's dropout, so such runs are reproducible only up to that interleaving.
    `on_end(predict)` is called once after the last epoch; `predict(images)` gives the trained
    model's class probabilities (float32 N×classes) for uint8 N×H×W×C images, normalised as in
    training (test-time augmentation uses it).
    """
    started = time.perf_counter()
    total = epochs or child.epochs
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with cpu_threads(dev, threads):
        run = _Run(child, splits, seed, dev, total, seed if aug_seed is None else aug_seed)
        run.feed.augment = PerImage(augment) if augment is not None else None
        if state is not None:
            run.restore(state)
        val_index = val_sample(splits.val_pool, reward, run.seed)
        images, train_seconds = 0, 0.0
        for epoch in range(run.epoch, total):
            begun = time.perf_counter()
            current = schedule(epoch) if schedule is not None else policy
            loss, accuracy, seen, seconds = run.train_epoch(epoch, current, on_batch)
            val = (run.accuracy(splits.val_pool, val_index) if reward.scored(epoch, total)
                   else math.nan)
            audit = (run.accuracy(splits.audit, None) if len(splits.audit)
                     and epoch >= first_audit_epoch(reward, total) else math.nan)
            stats = EpochStats(epoch + 1, loss, accuracy, val, audit,
                               time.perf_counter() - begun, seen / seconds)
            run.history.append(stats)
            images += seen
            train_seconds += seconds
            if on_epoch is not None:
                on_epoch(stats, run.snapshot(current))
        if on_end is not None:
            on_end(run.probabilities)
    if not run.history:
        raise ValueError(f"nothing to report: the state is at epoch {run.epoch} of {total} and "
                         f"holds no history; pass a larger `epochs`")
    speed = images / train_seconds if train_seconds else run.history[-1].images_per_s
    metrics = summarise(run.history, reward, speed, time.perf_counter() - started)
    metrics.augmentation = " and ".join(run.paths.taken)
    return metrics


def summarise(history: list[EpochStats], reward: RewardSpec, speed: float, wall: float
              ) -> Metrics:
    """A finished run's Metrics: its reward (`reward_from_history`) and last epoch's figures."""
    value, used, note = reward_from_history(history, reward)
    last = history[-1]
    return Metrics(
        reward=value, val_accuracy=last.val_accuracy, audit_accuracy=last.audit_accuracy,
        train_accuracy=last.train_accuracy,
        train_val_gap=last.train_accuracy - last.val_accuracy, history=list(history),
        images_per_s=speed, wall_seconds=wall, epochs=last.epoch, reward_epochs=used, note=note,
    )


@contextlib.contextmanager
def cpu_threads(dev: torch.device, threads: int | None) -> Iterator[None]:
    """cv2 single-threaded (one image at a time) and torch on `threads` CPUs; restored after."""
    import cv2

    cv2_before, torch_before = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(1)
    if dev.type == "cpu" and threads:
        torch.set_num_threads(max(1, int(threads)))
    try:
        yield
    finally:
        cv2.setNumThreads(cv2_before)
        torch.set_num_threads(torch_before)


def num_classes(splits: Splits) -> int:
    """The classes a child is built for: the data's declared count, else the largest label."""
    return splits.num_classes or int(max(a.y.max(initial=0) for a in (
        splits.train, splits.val_pool, splits.audit, splits.test) if len(a))) + 1


class _Run:
    """The mutable parts of one training run; `train_child` is its only user."""

    def __init__(self, child: ChildSpec, splits: Splits, seed: int, dev: torch.device,
                 total_epochs: int, aug_seed: int) -> None:
        self.child, self.splits, self.seed, self.dev = child, splits, seed, dev
        self.aug_seed = aug_seed
        x = splits.train.x
        if len(x) == 0:
            raise DataError("the train split is empty; raise dataset.train_size")
        torch.manual_seed(seed)
        model = build_model(child.model, num_classes(splits), x.shape[3], x.shape[1],
                            child.width)
        self.cuda = dev.type == "cuda"
        self.memory = torch.channels_last if self.cuda else torch.contiguous_format
        self.model = model.to(dev, memory_format=self.memory)
        self.optimizer = make_optimizer(child.optimizer, self.model, fused=self.cuda)
        self.amp_dtype = amp_dtype(dev)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.cuda and self.amp_dtype != torch.bfloat16)
        self.feed = Feed(child, splits, seed, dev, self.memory)
        self.steps_per_epoch = self.feed.steps_per_epoch
        self.total_steps = self.steps_per_epoch * total_epochs
        self.epoch, self.step = 0, 0
        self.history: list[EpochStats] = []

    @property
    def paths(self) -> PathLog:
        return self.feed.paths

    def restore(self, state: TrainState) -> None:
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        for group in self.optimizer.param_groups:  # as made here, whichever device saved it
            group["fused"] = self.cuda or None
        if state.scaler is not None:
            self.scaler.load_state_dict(state.scaler)
        self.epoch, self.step = state.epoch, state.step
        self.history = list(state.history)

    def snapshot(self, policy: Policy | None) -> TrainState:
        model = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        optimizer = _cpu_copy(self.optimizer.state_dict())
        return TrainState(
            epoch=self.epoch, step=self.step, model=model, optimizer=optimizer,
            scheduler={"kind": self.child.schedule, "step": self.step, "total": self.total_steps},
            rng={"seed": self.seed, "aug_seed": self.aug_seed, "torch": torch.get_rng_state()},
            history=list(self.history), policy=policy,
            scaler=self.scaler.state_dict() if self.scaler.is_enabled() else None,
        )

    def batches(self, epoch: int, policy: Policy) -> tuple[str, Iterator[Batch]]:
        """Epoch `epoch`'s path and batches; seeds torch's generator for the epoch (dropout)."""
        return self.feed.batches(epoch, policy, self.aug_seed)

    def train_epoch(
        self, epoch: int, policy: Policy, on_batch: Callable[..., None] | None
    ) -> tuple[float, float, int, float]:
        """Train one epoch; returns mean loss, accuracy, images seen and seconds taken.

        Losses and hit counts stay on the device until the epoch ends and are read once then;
        a NaN/inf loss raises DivergedError there, naming its epoch and step. The albumentations
        path (CPU work) and the batched path on the CPU make batches in the prefetch thread;
        on an accelerator the batched path runs inline (its kernels launch asynchronously).
        """
        start = time.perf_counter()
        path, batches = self.batches(epoch, policy)
        self.model.train()
        tally = _Tally()
        inline = path == "batched" and self.dev.type != "cpu"
        with contextlib.closing(batches if inline else prefetch(batches)) as stream:
            for batch in stream:
                tally.add(batch, *self._step(batch, on_batch))
        loss, accuracy = tally.read(epoch, self.child.optimizer, self.steps_per_epoch)
        self.epoch = epoch + 1
        return loss, accuracy, tally.seen, time.perf_counter() - start

    def _step(self, batch: Batch, on_batch: Callable[..., None] | None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimiser step; returns the loss and the hits on y_a and y_b, on the device."""
        x = batch.x if isinstance(batch.x, torch.Tensor) else torch.from_numpy(batch.x)
        x = x.to(self.dev, non_blocking=True, memory_format=self.memory)
        y_a = torch.as_tensor(batch.y_a).to(self.dev, non_blocking=True)
        y_b = torch.as_tensor(batch.y_b).to(self.dev, non_blocking=True)
        if on_batch is not None:
            on_batch(x, y_a)
        lr = self.child.optimizer.lr * lr_factor(self.child.schedule, self.step, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        smoothing = self.child.optimizer.label_smoothing
        with autocast(self.dev, self.amp_dtype):
            out = self.model(x)
            loss = F.cross_entropy(out, y_a, label_smoothing=smoothing)
            if batch.lam < 1.0:
                loss = batch.lam * loss + (1.0 - batch.lam) * F.cross_entropy(
                    out, y_b, label_smoothing=smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        pred = out.detach().argmax(1)
        hits_a = (pred == y_a).sum()
        hits_b = (pred == y_b).sum() if batch.lam < 1.0 else hits_a
        return loss.detach(), hits_a, hits_b

    @torch.inference_mode()
    def accuracy(self, data: Arrays, index: np.ndarray | None) -> float:
        """Top-1 accuracy on `data` (or its rows `index`), no augmentation; counted on the
        device and read once."""
        self.model.eval()
        x, y = self.feed.evaluation_set(data, index)
        correct = torch.zeros((), dtype=torch.long, device=self.dev)
        for start in range(0, len(x), _EVAL_BATCH):
            with autocast(self.dev, self.amp_dtype):
                pred = self.model(x[start:start + _EVAL_BATCH]).argmax(1)
            correct += (pred == y[start:start + _EVAL_BATCH]).sum()
        return int(correct) / max(len(x), 1)

    @torch.inference_mode()
    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax class probabilities (float32 N×classes) of uint8 N×H×W×C images."""
        self.model.eval()
        parts = []
        for start in range(0, len(images), _EVAL_BATCH):
            chunk = images[start:start + _EVAL_BATCH].transpose(0, 3, 1, 2).copy()
            x = self.feed.normalised(torch.from_numpy(chunk).to(self.dev, non_blocking=True))
            with autocast(self.dev, self.amp_dtype):
                out = self.model(x)
            parts.append(torch.softmax(out.float(), 1))
        if not parts:
            return np.zeros((0, 0), dtype=np.float32)
        return torch.cat(parts).cpu().numpy()


class _Tally:
    """An epoch's per-step losses and hits, kept on the device until `read`."""

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.hits: list[torch.Tensor] = []
        self.lams: list[float] = []
        self.seen = 0

    def add(self, batch: Batch, loss: torch.Tensor, hits_a: torch.Tensor,
            hits_b: torch.Tensor) -> None:
        self.losses.append(loss.float())
        self.hits += [hits_a, hits_b]
        self.lams.append(batch.lam)
        self.seen += len(batch.y_a)

    def read(self, epoch: int, spec: OptimizerSpec, steps: int) -> tuple[float, float]:
        """Mean loss over `steps` and the lam-weighted accuracy, from one device read; raises
        DivergedError at the first non-finite loss."""
        if not self.losses:
            return 0.0, 0.0
        table = torch.cat([torch.stack(self.losses), torch.stack(self.hits).float()]).tolist()
        losses, hits = table[:len(self.losses)], table[len(self.losses):]
        loss_sum = correct = 0.0
        for i, (value, lam) in enumerate(zip(losses, self.lams, strict=True)):
            if not math.isfinite(value):
                raise DivergedError(
                    f"loss became {value} at epoch {epoch + 1}, step {i + 1}; lower "
                    f"child.optimizer.lr (now {spec.lr:g}) or weight_decay (now "
                    f"{spec.weight_decay:g})")
            loss_sum += value
            right = lam * hits[2 * i]
            if lam < 1.0:
                right += (1.0 - lam) * hits[2 * i + 1]
            correct += right
        return loss_sum / max(1, steps), correct / max(self.seen, 1)


def _cpu_copy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _cpu_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu_copy(v) for v in value)
    return value
