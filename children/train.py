"""The child trainer: one function, data injected, returning a policy's reward and diagnostics.

`train_child` trains a child model on the search's train split under a policy (its augmentation,
per image through albumentations or batched on the child's device, plus batch ops) and scores it
each epoch on the validation pool (or a sample drawn afresh for the trial, DeepAugment's guard
against overfitting the validation set) and on the fixed audit set, which the reward never sees.
Two seeds keep comparisons fair: `seed` fixes the initial weights, batch order and dropout
(shared by every trial of a search: common random numbers), `aug_seed` the augmentation's own
draws (per trial). It knows nothing of Ray: progress and checkpoints leave through the
`on_epoch(stats, state)` callback, and `state` resumes a run.

`child.augmentation` chooses how batches are augmented: `batched` augments whole uint8 tensors on
the device (`children.tensor_aug`, the same meaning as the albumentations pipeline, drawn from
`aug_seed` as well), `albumentations` one image at a time in the prefetch thread, `auto` the
faster for the device. A policy with an op that has no batched kernel falls back to
albumentations, and the run says so once on stderr; `Metrics.augmentation` records the path(s)
taken.

The loop is `children.trainer`'s; what is a child's is here: `Supervised`, the scoring a lone
child and a cohort's members share (validation pool, audit set, one `EpochStats` per member),
and `_Child`, a lone child's model, batches, mixed cross-entropy step and `TrainState`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from children.datasets import Arrays, Splits
from children.errors import DataError, DivergedError
from children.feed import Feed, PathLog, PerImage
from children.models import build_model
from children.reward import first_audit_epoch, pack_hits, reward_from_history, val_sample
from children.trainer import (
    EVAL_BATCH,
    Saved,
    Step,
    Strategy,
    Trained,
    Trainer,
    cpu_copy,
    cpu_threads,
    device_of,
    memory_format,
)

if TYPE_CHECKING:
    from spaces.policy import Policy
    from spaces.schema import ChildSpec, RewardSpec

__all__ = ["DivergedError", "EpochStats", "Metrics", "PathLog", "Supervised", "TrainState",
           "cpu_threads", "num_classes", "reward_from_history", "summarise", "train_child"]


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
    audit_hits: str = ""  # where the audit was scored: each image's correctness (pack_hits)


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


def train_child(child: ChildSpec, reward: RewardSpec, policy: Policy, splits: Splits, *,
                seed: int, aug_seed: int | None = None, threads: int | None = None,
                device: str | None = None,
                on_epoch: Callable[[EpochStats, TrainState], None] | None = None,
                state: TrainState | None = None, epochs: int | None = None,
                schedule: Callable[[int], Policy] | None = None,
                on_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
                augment: Callable[[np.ndarray], np.ndarray] | None = None,
                on_end: Callable[[Callable[[np.ndarray], np.ndarray]], None] | None = None,
                ) -> Metrics:
    """Train `child.model` under `policy` on `splits.train` and return its reward and history.

    `epochs` overrides child.epochs (the length of the learning-rate schedule); `state` continues a
    run from state.epoch; `schedule(e)` gives the policy of 0-based epoch e and overrides `policy`.
    `threads` sets torch's CPU threads (the CPUs the trial was given); `device` defaults to CUDA
    when available. `on_batch(inputs, targets)` sees every batch the model receives. On a CPU the
    same seeds and threads give the same metrics bit for bit, on a GPU up to float rounding. Raises
    DivergedError at the end of the epoch whose loss first became NaN/inf, naming that epoch and
    step (losses are read once per epoch, never per step). `aug_seed` (default: `seed`) drives the
    augmentation pipeline and the batch ops; `seed` drives everything else, a fresh validation
    sample included, so two runs with the same `seed` and different policies differ only through
    their policies' augmentation.

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
    dev = device_of(device)
    total = epochs or child.epochs
    with cpu_threads(dev, threads):
        lone = _Child(child, reward, splits, seed, seed if aug_seed is None else aug_seed, dev,
                      total, on_batch)
        lone.feed.augment = PerImage(augment) if augment is not None else None
        trainer = Trainer(child, lone, dev, total)
        if state is not None:
            lone.restore(trainer, state)
        trainer.fit(schedule or (lambda _epoch: policy),
                    None if on_epoch is None else lambda stats, st: on_epoch(stats[0], st))
        if on_end is not None:
            on_end(lambda images: lone.probabilities(trainer, images))
    history = lone.history[0]
    if not history:
        raise ValueError(f"nothing to report: the state is at epoch {trainer.epoch} of {total} "
                         f"and holds no history; pass a larger `epochs`")
    speed = trainer.images / trainer.seconds if trainer.seconds else history[-1].images_per_s
    metrics = summarise(history, reward, speed, time.perf_counter() - started)
    metrics.augmentation = " and ".join(lone.feed.paths.taken)
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


def num_classes(splits: Splits) -> int:
    """The classes a child is built for: the data's declared count, else the largest label."""
    return splits.num_classes or int(max(a.y.max(initial=0) for a in (
        splits.train, splits.val_pool, splits.audit, splits.test) if len(a))) + 1


def child_model(child: ChildSpec, splits: Splits) -> torch.nn.Module:
    """A fresh child model for `splits` (its initial weights from torch's generator)."""
    x = splits.train.x
    if len(x) == 0:
        raise DataError("the train split is empty; raise dataset.train_size")
    return build_model(child.model, num_classes(splits), x.shape[3], x.shape[1], child.width)


class Supervised(Strategy):
    """A classifier's strategy, for one child or a cohort's K members: the scoring of an epoch
    (the validation pool where the reward reads it, each audit image's correctness in the
    reward's epochs, one `EpochStats` per member) and each member's history. A subclass sets
    the model and feed, and says how its model predicts (`predict`: N×K classes)."""

    def __init__(self, reward: RewardSpec, splits: Splits, seed: int, total: int) -> None:
        self.reward, self.splits, self.total = reward, splits, total
        self.val_index = val_sample(splits.val_pool, reward, seed)
        self.history: list[list[EpochStats]] = [[] for _ in range(self.members)]

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's predicted classes (N×K) of normalised images `x`."""
        raise NotImplementedError

    def correct(self, trainer: Trainer, data: Arrays, index: np.ndarray | None
                ) -> torch.Tensor:
        """Each image's top-1 correctness per member (N×K bool, on the device), no
        augmentation."""
        x, y = self.feed.evaluation_set(data, index)
        out = trainer.evaluate(trainer.chunks(x), self.predict)
        if out is None:
            return torch.zeros(0, self.members, dtype=torch.bool, device=trainer.dev)
        return out == y.view(-1, 1)

    def score(self, trainer: Trainer, epoch: int, trained: Trained, begun: float
              ) -> list[EpochStats]:
        k, splits = self.members, self.splits
        val = [math.nan] * k
        if self.reward.scored(epoch, self.total):
            n = len(splits.val_pool) if self.val_index is None else len(self.val_index)
            counts = self.correct(trainer, splits.val_pool, self.val_index).sum(0).tolist()
            val = [c / max(n, 1) for c in counts]
        hits = None
        if len(splits.audit) and epoch >= first_audit_epoch(self.reward, self.total):
            hits = self.correct(trainer, splits.audit, None).cpu().numpy()
        speed = trained.images / max(trained.seconds, 1e-9)
        stats = [EpochStats(epoch + 1, trained.losses[m], trained.accuracies[m], val[m],
                            math.nan if hits is None else float(hits[:, m].mean()),
                            time.perf_counter() - begun, speed,
                            "" if hits is None else pack_hits(hits[:, m])) for m in range(k)]
        for m, s in enumerate(stats):
            self.history[m].append(s)
        return stats


class _Child(Supervised):
    """One child: its model, its batches (inline on an accelerator's batched path, else made in
    the prefetch thread), its mixed cross-entropy step and its `TrainState`."""

    def __init__(self, child: ChildSpec, reward: RewardSpec, splits: Splits, seed: int,
                 aug_seed: int, dev: torch.device, total: int,
                 on_batch: Callable[[torch.Tensor, torch.Tensor], None] | None) -> None:
        self.child, self.seed, self.aug_seed, self.dev = child, seed, aug_seed, dev
        self.on_batch = on_batch
        self.memory = memory_format(dev)
        torch.manual_seed(seed)
        self.model = child_model(child, splits).to(dev, memory_format=self.memory)
        self.feed = Feed(child, splits, seed, dev, self.memory)
        super().__init__(reward, splits, seed, total)

    def batches(self, epoch: int, policy: Policy) -> tuple[Iterator[Any], bool]:
        path, batches = self.feed.batches(epoch, policy, self.aug_seed)
        return batches, path == "batched" and self.dev.type != "cpu"

    def step(self, batch: Any, amp: Callable[[], Any]) -> Step:
        x = batch.x if isinstance(batch.x, torch.Tensor) else torch.from_numpy(batch.x)
        x = x.to(self.dev, non_blocking=True, memory_format=self.memory)
        y_a = torch.as_tensor(batch.y_a).to(self.dev, non_blocking=True)
        y_b = torch.as_tensor(batch.y_b).to(self.dev, non_blocking=True)
        if self.on_batch is not None:
            self.on_batch(x, y_a)
        smoothing, lam = self.child.optimizer.label_smoothing, batch.lam
        with amp():
            out = self.model(x)
            loss = F.cross_entropy(out, y_a, label_smoothing=smoothing)
            if lam < 1.0:
                loss = lam * loss + (1.0 - lam) * F.cross_entropy(
                    out, y_b, label_smoothing=smoothing)
        pred = out.detach().argmax(1)
        return Step(loss, (pred == y_a).sum(), (pred == y_b).sum() if lam < 1.0 else None,
                    lams=[lam], images=len(batch.y_a))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).argmax(1).view(-1, 1)

    def state(self, saved: Saved, policy: Policy | None) -> TrainState:
        return TrainState(
            epoch=saved.epoch, step=saved.step, model=cpu_copy(self.model.state_dict()),
            optimizer=saved.optimizer, scheduler=saved.scheduler,
            rng={"seed": self.seed, "aug_seed": self.aug_seed, "torch": torch.get_rng_state()},
            history=list(self.history[0]), policy=policy, scaler=saved.scalers[0])

    def restore(self, trainer: Trainer, state: TrainState) -> None:
        self.model.load_state_dict(state.model)
        trainer.restore(state.epoch, state.step, state.optimizer, [state.scaler])
        self.history = [list(state.history)]

    def probabilities(self, trainer: Trainer, images: np.ndarray) -> np.ndarray:
        """Softmax class probabilities (float32 N×classes) of uint8 N×H×W×C images."""
        def chunks() -> Iterable[torch.Tensor]:
            for start in range(0, len(images), EVAL_BATCH):
                chunk = images[start:start + EVAL_BATCH].transpose(0, 3, 1, 2).copy()
                yield self.feed.normalised(torch.from_numpy(chunk).to(self.dev,
                                                                      non_blocking=True))

        out = trainer.evaluate(chunks(), self.model)
        if out is None:
            return np.zeros((0, 0), dtype=np.float32)
        return torch.softmax(out.float(), 1).cpu().numpy()
