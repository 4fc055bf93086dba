"""The one training loop: a lone child, a cohort of K children and contrastive pre-training.

`Trainer` owns what every training run does alike (after timm's train.py and Lightning's
Trainer): the device and torch's CPU threads, the optimizer (fused on CUDA), autocast and the
loss scaling (`children.scaling`: a GradScaler for one model, one scale per member for a
cohort), the learning-rate schedule, the epoch loop, the per-epoch tally of losses and hits kept
on the device and read once per epoch, divergence, the evaluation loop, snapshot and restore.
What differs is a `Strategy` beside it (after a LightningModule): the model and its data, the
epoch's batches, a step's loss, what an epoch scores and what a snapshot adds.
`children.train` (a child), `children.cohort` (K children as one grouped network) and
`children.ssl` (contrastive pre-training) are the three strategies.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from children.batches import prefetch
from children.errors import DivergedError
from children.optim import amp_dtype, autocast, lr_factor, make_optimizer, needs_scaler

if TYPE_CHECKING:
    from children.feed import Feed
    from spaces.schema import ChildSpec

__all__ = ["EVAL_BATCH", "Saved", "Step", "Strategy", "Trained", "Trainer", "cpu_copy",
           "cpu_threads", "device_of", "memory_format"]

EVAL_BATCH = 512  # images per forward pass when scoring


def device_of(device: str | None) -> torch.device:
    """The run's device: the one named, else CUDA when available, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def memory_format(dev: torch.device) -> torch.memory_format:
    """channels_last on CUDA (its convolutions' fast layout), contiguous elsewhere."""
    return torch.channels_last if dev.type == "cuda" else torch.contiguous_format


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


def cpu_copy(value: Any) -> Any:
    """`value` with every tensor in it copied to the CPU (a picklable snapshot)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: cpu_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(cpu_copy(v) for v in value)
    return value


@dataclass
class Step:
    """What a strategy's step hands the trainer, all on the device: each member's loss (K, or
    one 0-dim loss), its hits on the targets a and b (counts; b only where a batch mixed), the
    members whose gradients count (None: all), the mix weights lam (host floats, one per
    member; None: 1) and the images each member trained on."""

    loss: torch.Tensor
    hits_a: torch.Tensor
    hits_b: torch.Tensor | None = None
    kept: torch.Tensor | None = None
    lams: Sequence[float] | None = None
    images: int = 0


@dataclass
class Trained:
    """One epoch's training, per member: mean loss, accuracy on the mixed targets, and the first
    non-finite loss as (1-based step, value) or None; images per member and seconds."""

    losses: list[float]
    accuracies: list[float]
    bad: list[tuple[int, float] | None]
    images: int
    seconds: float


@dataclass
class Saved:
    """What the trainer puts into every snapshot: the epochs and steps done, the optimizer's
    state (on the CPU), the schedule and each member's loss-scaler state (None where off)."""

    epoch: int
    step: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scalers: list[dict[str, Any] | None]


class Strategy:
    """What differs between trainings. A subclass sets `model` (on the run's device) and `feed`
    before the trainer is made, and implements `batches`, `step`, `score` and `state`."""

    members = 1  # K: the children trained at once
    views = 1  # predictions per image that the train accuracy counts (contrastive: 2)
    float32_sums = False  # sum the tally in float32 as the device would (a cohort's figures)
    model: torch.nn.Module
    feed: Feed

    def scaler(self, dev: torch.device, enabled: bool) -> Any:
        """The loss scaling of this model (`children.scaling`)."""
        from children.scaling import OneScaler

        return OneScaler(enabled)

    def training(self) -> bool:
        """Whether any member still trains (a cohort whose members all failed stops)."""
        return True

    def batches(self, epoch: int, policy: Any) -> tuple[Generator[Any, None, None], bool]:
        """Epoch `epoch`'s batches (a generator: closed when the epoch stops early) and whether
        they run inline (else in the prefetch thread)."""
        raise NotImplementedError

    def step(self, batch: Any, amp: Callable[[], contextlib.AbstractContextManager]) -> Step:
        """One batch's forward pass and loss; `amp()` is the run's autocast."""
        raise NotImplementedError

    def diverged(self, epoch: int, k: int, step: int, value: float) -> None:
        """Member k's loss became `value` at `step` of `epoch` (1-based): by default a
        `DivergedError` naming both and the fix."""
        raise DivergedError(f"{self.what_diverged()} became {value} at epoch {epoch + 1}, "
                            f"step {step}; {self.fix()}")

    def what_diverged(self) -> str:
        return "loss"

    def fix(self) -> str:
        spec = self.feed.child.optimizer
        return (f"lower child.optimizer.lr (now {spec.lr:g}) or weight_decay (now "
                f"{spec.weight_decay:g})")

    def score(self, trainer: Trainer, epoch: int, trained: Trained, begun: float) -> Any:
        """The epoch's stats (its history entry, or one per member), appended to the history."""
        raise NotImplementedError

    def state(self, saved: Saved, policy: Any) -> Any:
        """A picklable snapshot: `saved` and what this strategy adds (weights, history)."""
        raise NotImplementedError


class Trainer:
    """One training run of a `Strategy`'s model on `dev` for `total_epochs` epochs."""

    def __init__(self, child: ChildSpec, strategy: Strategy, dev: torch.device,
                 total_epochs: int) -> None:
        self.child, self.strategy, self.dev = child, strategy, dev
        self.total_epochs = total_epochs
        self.model = strategy.model
        self.cuda = dev.type == "cuda"
        self.optimizer = make_optimizer(child.optimizer, self.model, fused=self.cuda)
        self.amp = amp_dtype(dev)
        self.scaler = strategy.scaler(dev, needs_scaler(dev, self.amp))
        self.steps_per_epoch = strategy.feed.steps_per_epoch
        self.total_steps = self.steps_per_epoch * total_epochs
        self.epoch, self.step = 0, 0
        self.images, self.seconds = 0, 0.0  # member-images trained on, and the time it took

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.dev, self.amp)

    # ------------------------------------------------------------ the loop

    def fit(self, policy_at: Callable[[int], Any],
            on_epoch: Callable[[Any, Any], None] | None = None) -> None:
        """Train from the current epoch to the last: each epoch under `policy_at(epoch)`, scored
        by the strategy, handed with a snapshot to `on_epoch(stats, state)`."""
        for epoch in range(self.epoch, self.total_epochs):
            if not self.strategy.training():
                break
            begun = time.perf_counter()
            policy = policy_at(epoch)
            trained = self.train_epoch(epoch, policy)
            stats = self.strategy.score(self, epoch, trained, begun)
            if on_epoch is not None:
                on_epoch(stats, self.snapshot(policy))

    def train_epoch(self, epoch: int, policy: Any) -> Trained:
        """One epoch of every member. Losses and hits stay on the device until the epoch ends and
        are read once then; a member whose loss turned non-finite is the strategy's to handle
        (`Strategy.diverged`: by default, raise)."""
        start = time.perf_counter()
        batches, inline = self.strategy.batches(epoch, policy)
        self.model.train()
        tally = _Tally(self.strategy.members, self.strategy.float32_sums)
        with contextlib.closing(batches if inline else prefetch(batches)) as stream:
            for batch in stream:
                tally.add(self._step(batch))
        trained = tally.read(self.steps_per_epoch, self.strategy.views,
                             time.perf_counter() - start)
        for k, bad in enumerate(trained.bad):
            if bad is not None:
                self.strategy.diverged(epoch, k, *bad)
        self.epoch = epoch + 1
        self.images += trained.images * self.strategy.members
        self.seconds += trained.seconds
        return trained

    def _step(self, batch: Any) -> Step:
        lr = self.child.optimizer.lr * lr_factor(self.child.schedule, self.step, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        step = self.strategy.step(batch, self.autocast)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.backward_step(step.loss, step.kept, self.model, self.optimizer)
        self.step += 1
        return step

    # ------------------------------------------------------------ evaluation

    def evaluate(self, chunks: Iterable[torch.Tensor],
                 forward: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor | None:
        """`forward` of each chunk of inputs in eval mode, under autocast and without
        gradients, concatenated on the device (None for no chunk)."""
        self.model.eval()
        parts = []
        with torch.no_grad():
            for chunk in chunks:
                with self.autocast():
                    parts.append(forward(chunk))
        return torch.cat(parts) if parts else None

    @staticmethod
    def chunks(x: torch.Tensor) -> Iterator[torch.Tensor]:
        """`x` in evaluation batches."""
        for start in range(0, len(x), EVAL_BATCH):
            yield x[start:start + EVAL_BATCH]

    # ------------------------------------------------------------ snapshots

    def snapshot(self, policy: Any) -> Any:
        """The strategy's picklable state after the epochs done."""
        saved = Saved(self.epoch, self.step, cpu_copy(self.optimizer.state_dict()),
                      {"kind": self.child.schedule, "step": self.step,
                       "total": self.total_steps}, self.scaler.state_dicts())
        return self.strategy.state(saved, policy)

    def restore(self, epoch: int, step: int, optimizer: dict[str, Any],
                scalers: list[dict[str, Any] | None]) -> None:
        """Continue after `epoch` epochs and `step` steps from a snapshot's optimizer and
        scaler states (the strategy restores its weights)."""
        # a copy: torch loads CPU tensors without copying and then updates them in place
        self.optimizer.load_state_dict(copy.deepcopy(optimizer))
        for group in self.optimizer.param_groups:  # as made here, whichever device saved it
            group["fused"] = self.cuda or None
        self.scaler.load_state_dicts(scalers)
        self.epoch, self.step = epoch, step


class _Tally:
    """An epoch's per-step losses and hits of K members, kept on the device until `read`."""

    def __init__(self, k: int, float32_sums: bool) -> None:
        self.k, self.float32_sums = k, float32_sums
        self.losses: list[torch.Tensor] = []
        self.hits: list[torch.Tensor] = []
        self.lams: list[Sequence[float]] = []
        self.images = 0

    def add(self, step: Step) -> None:
        self.losses.append(step.loss.detach().float().reshape(self.k))
        b = step.hits_a if step.hits_b is None else step.hits_b
        self.hits.append(torch.stack([step.hits_a.reshape(self.k), b.reshape(self.k)]))
        self.lams.append([1.0] * self.k if step.lams is None else list(step.lams))
        self.images += step.images

    def read(self, steps: int, views: int, seconds: float) -> Trained:
        """Each member's mean loss over `steps` and lam-weighted accuracy over the images ×
        `views`, from one device read."""
        n, k = len(self.losses), self.k
        if not n:
            return Trained([0.0] * k, [0.0] * k, [None] * k, 0, seconds)
        table = torch.cat([torch.stack(self.losses).flatten(),
                           torch.stack(self.hits).float().flatten()]).tolist()
        losses = np.array(table[:n * k], dtype=np.float32).reshape(n, k)
        hits = np.array(table[n * k:], dtype=np.float32).reshape(n, 2, k)
        lams = np.array(self.lams, dtype=np.float64)
        sums = _float32_sums if self.float32_sums else _float64_sums
        means, correct = sums(losses, hits, lams, max(1, steps))
        bad: list[tuple[int, float] | None] = []
        for j in range(k):
            rows = np.flatnonzero(~np.isfinite(losses[:, j]))
            bad.append(None if not len(rows) else (int(rows[0]) + 1, float(losses[rows[0], j])))
        return Trained(means, [c / max(self.images * views, 1) for c in correct], bad,
                       self.images, seconds)


def _float64_sums(losses: np.ndarray, hits: np.ndarray, lams: np.ndarray, steps: int
                  ) -> tuple[list[float], list[float]]:
    """Per member: the mean loss over `steps`, summed in float64 in step order, and the sum of
    lam·hits_a + (1 − lam)·hits_b (hits_b only where lam < 1), likewise."""
    means, correct = [], []
    for j in range(losses.shape[1]):
        total = right = 0.0
        for i in range(len(losses)):
            total += float(losses[i, j])
            lam = float(lams[i, j])
            term = lam * float(hits[i, 0, j])
            if lam < 1.0:
                term += (1.0 - lam) * float(hits[i, 1, j])
            right += term
        means.append(total / steps)
        correct.append(right)
    return means, correct


def _float32_sums(losses: np.ndarray, hits: np.ndarray, lams: np.ndarray, steps: int
                  ) -> tuple[list[float], list[float]]:
    """Per member, in float32 step by step as a device accumulator adds them (a cohort's
    figures since it first reported them): the mean of the finite losses over `steps` (a
    non-finite one counts 0), and the sum of lam·hits_a + (1 − lam)·hits_b."""
    lam = lams.astype(np.float32)
    finite = np.where(np.isfinite(losses), losses, np.float32(0.0))
    terms = lam * hits[:, 0] + (np.float32(1.0) - lam) * hits[:, 1]
    sums = np.add.accumulate(finite, axis=0, dtype=np.float32)[-1]
    correct = np.add.accumulate(terms, axis=0, dtype=np.float32)[-1]
    return ([float(v) for v in sums / np.float32(steps)], [float(v) for v in correct])
