"""A cohort: K policies' children trained together in one process, as one grouped network.

A small child leaves a GPU mostly idle: a step is a few dozen tiny kernels, and each trial
process adds its own CUDA context. A cohort trains K children in one pass: their batches are
stacked along the channels and go through `children.grouped`'s network, so every kernel does K
children's work. Each member keeps its own weights, optimizer state (the optimizer is
element-wise, so one optimizer over the grouped parameters is K optimizers), augmentation
draws (its own `aug_seed`) and batch ops; the members share the batch order, the initial
weights and dropout's stream — which is what every trial of a search shares under common
random numbers (`seed`). A member therefore trains as it would alone: the same batches, the same
initial weights, the same dropout masks (tests/children/test_cohort.py compares them).

A member whose loss turns non-finite is dropped at the end of that epoch: its gradients are
masked from then on (they never reach the others anyway: the groups do not mix), and it reports
the error as a lone child would raise it.

Under fp16 (a GPU without bf16) each member has its own loss scale (`children.scaling`): a
member whose gradients overflow skips its own step and halves its own scale, and the others
step; the scales travel in the members' `TrainState.scaler`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from children.batches import Batch
from children.datasets import Arrays, Splits
from children.errors import DataError
from children.feed import Feed
from children.grouped import child_state, group_models
from children.models import build_model
from children.optim import amp_dtype, autocast, lr_factor, make_optimizer, needs_scaler
from children.reward import first_audit_epoch, val_sample
from children.scaling import MemberScaler
from children.train import EpochStats, Metrics, TrainState, cpu_threads, num_classes, summarise

if TYPE_CHECKING:
    from spaces.policy import Policy
    from spaces.schema import ChildSpec, RewardSpec

__all__ = ["train_cohort"]

_EVAL_BATCH = 512
EpochCallback = Callable[[list[EpochStats], list[TrainState], list[str]], None]


def train_cohort(
    child: ChildSpec,
    reward: RewardSpec,
    policies: list[Policy],
    splits: Splits,
    *,
    seed: int,
    aug_seeds: list[int],
    threads: int | None = None,
    device: str | None = None,
    on_epoch: EpochCallback | None = None,
    states: list[TrainState] | None = None,
    epochs: int | None = None,
) -> list[Metrics]:
    """Train one child per policy together; what `train_child` returns, per member.

    `seed` is the members' common seed (initial weights, batch order, dropout), `aug_seeds[k]`
    member k's augmentation seed. `on_epoch(stats, states, errors)` gets each member's epoch,
    checkpointable state and error text ('' while it trains); `states` resumes a cohort.
    """
    if len(aug_seeds) != len(policies) or not policies:
        raise ValueError("train_cohort needs one aug_seed per policy, and at least one policy")
    started = time.perf_counter()
    total = epochs or child.epochs
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with cpu_threads(dev, threads):
        run = _Cohort(child, splits, seed, aug_seeds, dev, total)
        if states is not None:
            run.restore(states)
        val_index = val_sample(splits.val_pool, reward, seed)
        for epoch in range(run.epoch, total):
            run.epoch_stats(epoch, policies, reward, val_index)
            if on_epoch is not None:
                on_epoch([h[-1] for h in run.history], run.snapshots(policies), list(run.errors))
    if not run.history[0]:
        raise ValueError(f"nothing to report: the cohort is at epoch {run.epoch} of {total}")
    wall = time.perf_counter() - started
    speed = run.images / max(run.seconds, 1e-9)
    out = [summarise(h, reward, speed, wall) for h in run.history]
    for m in out:
        m.augmentation = " and ".join(run.feed.paths.taken)
    return out


class _Cohort:
    """The mutable parts of one cohort's training; `train_cohort` is its only user."""

    def __init__(self, child: ChildSpec, splits: Splits, seed: int, aug_seeds: list[int],
                 dev: torch.device, total_epochs: int) -> None:
        x = splits.train.x
        if len(x) == 0:
            raise DataError("the train split is empty; raise dataset.train_size")
        self.child, self.splits, self.seed, self.dev = child, splits, seed, dev
        self.aug_seeds, self.k = list(aug_seeds), len(aug_seeds)
        torch.manual_seed(seed)  # every member's initial weights: the lone child's
        one = build_model(child.model, num_classes(splits), x.shape[3], x.shape[1], child.width)
        self.cuda = dev.type == "cuda"
        self.memory = torch.channels_last if self.cuda else torch.contiguous_format
        self.model = group_models([one] * self.k).to(dev, memory_format=self.memory)
        self.optimizer = make_optimizer(child.optimizer, self.model, fused=self.cuda)
        self.amp = amp_dtype(dev)
        self.scaler = MemberScaler(self.k, dev, needs_scaler(dev, self.amp))
        self.feed = Feed(child, splits, seed, dev, self.memory)
        self.steps_per_epoch = self.feed.steps_per_epoch
        self.total_epochs = total_epochs
        self.total_steps = self.steps_per_epoch * total_epochs
        self.epoch, self.step, self.images, self.seconds = 0, 0, 0, 0.0
        self.history: list[list[EpochStats]] = [[] for _ in range(self.k)]
        self.errors = [""] * self.k
        self._lam: torch.Tensor | None = None
        self._lam_host: list[float] = []

    # ------------------------------------------------------------ state

    def restore(self, states: list[TrainState]) -> None:
        models = []
        for state in states:
            x = self.splits.train.x
            model = build_model(self.child.model, num_classes(self.splits), x.shape[3],
                                x.shape[1], self.child.width)
            model.load_state_dict(state.model)
            models.append(model)
        self.model.load_state_dict(group_models(models).state_dict())
        # a copy: torch loads CPU tensors without copying and then updates them in place
        self.optimizer.load_state_dict(copy.deepcopy(states[0].optimizer["cohort"]))
        for group in self.optimizer.param_groups:  # as made here, whichever device saved it
            group["fused"] = self.cuda or None
        self.epoch, self.step = states[0].epoch, states[0].step
        self.history = [list(s.history) for s in states]
        self.errors = [str(s.rng.get("error", "")) for s in states]
        self.scaler.load_state_dicts([s.scaler for s in states])

    def snapshots(self, policies: list[Policy]) -> list[TrainState]:
        """Each member's state in a lone child's layout; member 0's also carries the cohort's
        optimizer state (one optimizer holds every member's)."""
        optimizer = _cpu(self.optimizer.state_dict())
        scalers = self.scaler.state_dicts()
        out = []
        for k in range(self.k):
            model = {n: v.detach().cpu() for n, v in child_state(self.model, k, self.k).items()}
            out.append(TrainState(
                epoch=self.epoch, step=self.step, model=model,
                optimizer={"cohort": optimizer} if k == 0 else {},
                scheduler={"kind": self.child.schedule, "step": self.step,
                           "total": self.total_steps},
                rng={"seed": self.seed, "aug_seed": self.aug_seeds[k], "error": self.errors[k]},
                history=list(self.history[k]), policy=policies[k], scaler=scalers[k]))
        return out

    # ------------------------------------------------------------ training

    def epoch_stats(self, epoch: int, policies: list[Policy], reward: RewardSpec,
                    val_index: np.ndarray | None) -> None:
        begun = time.perf_counter()
        loss, correct, seen, seconds = self.train_epoch(epoch, policies)
        total = self.total_epochs
        val = (self.accuracy(self.splits.val_pool, val_index) if reward.scored(epoch, total)
               else [math.nan] * self.k)
        audit = (self.accuracy(self.splits.audit, None)
                 if len(self.splits.audit) and epoch >= first_audit_epoch(reward, total)
                 else [math.nan] * self.k)
        wall = time.perf_counter() - begun
        for k in range(self.k):
            self.history[k].append(EpochStats(
                epoch + 1, loss[k], correct[k] / max(seen, 1), val[k], audit[k], wall,
                seen / max(seconds, 1e-9)))

    def _batches(self, epoch: int, policies: list[Policy]) -> Iterator[tuple[Batch, ...]]:
        """Each step's K batches: one order for all, each member's own augmentation and mix."""
        order = self.feed.order(epoch)  # seeds torch's draws (dropout) for the epoch
        streams = [self.feed.batches(epoch, p, self.aug_seeds[k], order)[1]
                   for k, p in enumerate(policies)]
        return zip(*streams, strict=True)

    def train_epoch(self, epoch: int, policies: list[Policy]
                    ) -> tuple[list[float], list[float], int, float]:
        """One epoch of every member: mean losses, correct counts, images each, seconds."""
        start = time.perf_counter()
        self.model.train()
        losses = torch.zeros(self.k, device=self.dev)
        hits = torch.zeros(self.k, device=self.dev)
        bad = torch.full((self.k,), -1, dtype=torch.long, device=self.dev)
        alive = torch.tensor([not e for e in self.errors], device=self.dev)
        seen = 0
        for batches in self._batches(epoch, policies):
            loss, correct = self._step(batches, alive)
            finite = torch.isfinite(loss)
            bad = torch.where((bad < 0) & ~finite & alive, self.step, bad)  # steps done, 1-based
            losses += torch.where(finite, loss.detach(), 0.0)
            hits += correct
            seen += len(batches[0].y_a)
        self._record_divergence(bad.tolist(), epoch)  # one read per epoch
        self.epoch = epoch + 1
        self.images += seen * self.k
        seconds = time.perf_counter() - start
        self.seconds += seconds
        steps = max(1, self.steps_per_epoch)
        return (losses / steps).tolist(), hits.tolist(), seen, seconds

    def _record_divergence(self, bad: list[int], epoch: int) -> None:
        spec = self.child.optimizer
        for k, step in enumerate(bad):
            if step >= 0 and not self.errors[k]:
                self.errors[k] = (f"loss became non-finite at epoch {epoch + 1}, step "
                                  f"{step - epoch * self.steps_per_epoch}; lower "
                                  f"child.optimizer.lr (now {spec.lr:g}) or weight_decay (now "
                                  f"{spec.weight_decay:g})")

    def _inputs(self, batches: list[Batch]) -> torch.Tensor:
        parts = [b.x if isinstance(b.x, torch.Tensor) else torch.from_numpy(b.x)
                 for b in batches]
        x = torch.cat([p.to(self.dev, non_blocking=True) for p in parts], 1)
        return x.contiguous(memory_format=self.memory)

    def _step(self, batches: list[Batch], alive: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._inputs(batches)
        y_a = torch.as_tensor(batches[0].y_a).to(self.dev, non_blocking=True)
        y_b = torch.stack([torch.as_tensor(b.y_b).to(self.dev, non_blocking=True)
                           for b in batches])
        lam = self._mix_weights([b.lam for b in batches])
        lr = self.child.optimizer.lr * lr_factor(self.child.schedule, self.step,
                                                 self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        smoothing = self.child.optimizer.label_smoothing
        with autocast(self.dev, self.amp):
            out = self.model(x).view(len(y_a), self.k, -1).float()
            loss = _member_losses(out, y_a, y_b, lam, smoothing)
        kept = alive & torch.isfinite(loss)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.loss(loss, kept).backward()
        stepped = self.scaler.unscale_(list(self.model.parameters()), kept)  # fp16: overflows
        _mask_grads(self.model, stepped)
        self.scaler.step(self.optimizer, stepped)
        self.scaler.update(kept, stepped)
        self.step += 1
        pred = out.detach().argmax(2)  # N×K
        hits = lam * (pred == y_a[:, None]).sum(0) + (1 - lam) * (pred == y_b.T).sum(0)
        return loss, hits

    def _mix_weights(self, lams: list[float]) -> torch.Tensor:
        """The members' mix weights (K) on the device, updated by scalar fills where they
        changed: no host-to-device copy (a pageable copy would wait for the stream) per step."""
        if self._lam is None:
            self._lam, self._lam_host = torch.ones(self.k, device=self.dev), [1.0] * self.k
        for k, value in enumerate(lams):
            if value != self._lam_host[k]:
                self._lam[k].fill_(value)
                self._lam_host[k] = value
        return self._lam

    # ------------------------------------------------------------ evaluation

    @torch.inference_mode()
    def accuracy(self, data: Arrays, index: np.ndarray | None) -> list[float]:
        """Each member's top-1 accuracy on `data` (or its rows `index`), read once."""
        self.model.eval()
        x, y = self.feed.evaluation_set(data, index)
        correct = torch.zeros(self.k, dtype=torch.long, device=self.dev)
        for start in range(0, len(x), _EVAL_BATCH):
            part = x[start:start + _EVAL_BATCH].repeat(1, self.k, 1, 1)
            with autocast(self.dev, self.amp):
                out = self.model(part.contiguous(memory_format=self.memory))
            pred = out.view(len(part), self.k, -1).argmax(2)
            correct += (pred == y[start:start + _EVAL_BATCH, None]).sum(0)
        return [c / max(len(x), 1) for c in correct.tolist()]


def _member_losses(out: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, lam: torch.Tensor,
                   smoothing: float) -> torch.Tensor:
    """Each member's loss (K): lam·CE(y_a) + (1 − lam)·CE(y_b) on its own outputs (N×K×C)."""
    flat = out.permute(1, 0, 2)  # K×N×C
    k, n, c = flat.shape
    ce_a = F.cross_entropy(flat.reshape(k * n, c), y_a.repeat(k), reduction="none",
                           label_smoothing=smoothing).view(k, n).mean(1)
    ce_b = F.cross_entropy(flat.reshape(k * n, c), y_b.reshape(k * n), reduction="none",
                           label_smoothing=smoothing).view(k, n).mean(1)
    return lam * ce_a + (1.0 - lam) * ce_b


def _mask_grads(model: torch.nn.Module, kept: torch.Tensor) -> None:
    """Zero the gradients of members whose loss is not kept (every grouped parameter holds the
    members one after the other along its first dimension)."""
    k = len(kept)
    for p in model.parameters():
        if p.grad is not None:
            g = p.grad.unflatten(0, (k, -1))  # a view whatever the memory format
            g.copy_(torch.where(kept.view(k, *[1] * (g.ndim - 1)), g, 0.0))


def _cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu(v) for v in value)
    return value

