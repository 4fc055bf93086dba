"""A cohort: K policies' children trained together in one process, as one grouped network.

A small child leaves a GPU mostly idle: a step is a few dozen tiny kernels, and each trial
process adds its own CUDA context. A cohort trains K children in one pass: their batches are
stacked along the channels and go through `children.cohort.grouped`'s network, so every kernel
does K children's work. Each member keeps its own weights, optimizer state (the optimizer is
element-wise, so one optimizer over the grouped parameters is K optimizers), augmentation
draws (its own `aug_seed`) and batch ops; the members share the batch order, the initial
weights and dropout's stream — which is what every trial of a search shares under common
random numbers (`seed`). A member therefore trains as it would alone: the same batches, the same
initial weights, the same dropout masks (tests/children/test_cohort.py compares them).

The loop is `children.trainer`'s; `_Cohort` is its strategy: the grouped model, the members'
batches, their summed losses with the dead masked, their `TrainState`s and their failures. A
member fails alone: one whose loss turns non-finite (status `diverged`) or whose own work (its
policy's batches) raises (status `error`) is dropped: its gradients are masked from then on
(they never reach the others anyway: the groups do not mix), another member's batch stands in
for its own, and it reports its error as a lone child would raise it; the others train on
unchanged. Under fp16 each member has its own loss scale (`children.scaling.MemberScaler`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from children.batches import Batch
from children.cohort.grouped import child_state, group_models
from children.feed import Feed
from children.scaling import MemberScaler
from children.train import EpochStats, Metrics, Supervised, TrainState, child_model, summarise
from children.trainer import Saved, Step, Trainer, cpu_threads, device_of, memory_format

if TYPE_CHECKING:
    from children.datasets import Splits
    from spaces.policy import Policy
    from spaces.schema import ChildSpec, RewardSpec

__all__ = ["EpochCallback", "Failure", "train_cohort"]

EpochCallback = Callable[[list[EpochStats], list[TrainState], list[str]], None]


class Failure(str):
    """A member's error text ('' while it trains), and `status`: how it failed, `diverged` (its
    loss turned non-finite) or `error` (its own work raised)."""

    status: str

    def __new__(cls, text: str = "", status: str = "") -> Failure:
        made = super().__new__(cls, text)
        made.status = status if text else ""
        return made


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
    checkpointable state and error (a `Failure`, '' while it trains); `states` resumes a
    cohort. A member that fails is reported, not raised; when every member has failed, the
    cohort stops.
    """
    if len(aug_seeds) != len(policies) or not policies:
        raise ValueError("train_cohort needs one aug_seed per policy, and at least one policy")
    started = time.perf_counter()
    dev = device_of(device)
    total = epochs or child.epochs
    with cpu_threads(dev, threads):
        cohort = _Cohort(child, reward, splits, seed, aug_seeds, dev, total)
        trainer = Trainer(child, cohort, dev, total)
        if states is not None:
            cohort.restore(trainer, states)
        trainer.fit(lambda _epoch: policies, None if on_epoch is None else
                    lambda stats, saved: on_epoch(stats, saved, list(cohort.errors)))
    if not cohort.history[0]:
        raise ValueError(f"nothing to report: the cohort is at epoch {trainer.epoch} of {total}")
    wall = time.perf_counter() - started
    speed = trainer.images / max(trainer.seconds, 1e-9)
    out = [summarise(h, reward, speed, wall) for h in cohort.history]
    for m in out:
        m.augmentation = " and ".join(cohort.feed.paths.taken)
    return out


class _Cohort(Supervised):
    """The cohort's strategy: K members' grouped model, batches, losses, states and failures."""

    float32_sums = True  # a cohort's figures as its device accumulators summed them

    def __init__(self, child: ChildSpec, reward: RewardSpec, splits: Splits, seed: int,
                 aug_seeds: list[int], dev: torch.device, total: int) -> None:
        self.child, self.seed, self.dev = child, seed, dev
        self.aug_seeds, self.members = list(aug_seeds), len(aug_seeds)
        self.memory = memory_format(dev)
        torch.manual_seed(seed)  # every member's initial weights: the lone child's
        one = child_model(child, splits)
        self.model = group_models([one] * self.members).to(dev, memory_format=self.memory)
        self.feed = Feed(child, splits, seed, dev, self.memory)
        super().__init__(reward, splits, seed, total)
        self.errors = [Failure()] * self.members
        self._alive = torch.ones(self.members, dtype=torch.bool, device=dev)
        self._lam: torch.Tensor | None = None
        self._lam_host: list[float] = []

    def scaler(self, dev: torch.device, enabled: bool) -> MemberScaler:
        return MemberScaler(self.members, dev, enabled)

    def training(self) -> bool:
        return not all(self.errors)

    def fail(self, k: int, text: str, status: str) -> None:
        """Drop member k (its first failure is the one it reports)."""
        if not self.errors[k]:
            self.errors[k] = Failure(" ".join(text.split()), status)
            self._alive[k].fill_(False)

    def diverged(self, epoch: int, k: int, step: int, value: float) -> None:
        self.fail(k, f"{self.what_diverged()} became {value} at epoch {epoch + 1}, step "
                     f"{step}; {self.fix()}", "diverged")

    # ------------------------------------------------------------ batches

    def batches(self, epoch: int, policies: list[Policy]) -> tuple[Iterator[Any], bool]:
        """Each step's K batches: one order for all, each member's own augmentation and mix;
        inline (the members' streams are advanced together)."""
        order = self.feed.order(epoch)  # seeds torch's draws (dropout) for the epoch
        self._alive = torch.tensor([not e for e in self.errors], device=self.dev)
        streams = [None if self.errors[k] else self._stream(k, epoch, p, order)
                   for k, p in enumerate(policies)]
        return self._steps(streams), True

    def _stream(self, k: int, epoch: int, policy: Policy, order: np.ndarray
                ) -> Iterator[Batch] | None:
        try:
            return iter(self.feed.batches(epoch, policy, self.aug_seeds[k], order)[1])
        except Exception as err:  # member k's own failure: dropped and reported, not raised
            self.fail(k, f"{type(err).__name__}: {err}", "error")
            return None

    def _steps(self, streams: list[Iterator[Batch] | None]) -> Iterator[list[Batch]]:
        """The members' batches step by step; a failed member's slot takes a live member's
        batch (its outputs are masked), and the epoch ends early if none is left."""
        while True:
            got: list[Batch | None] = []
            for k, stream in enumerate(streams):
                got.append(None if stream is None else self._next(k, stream))
                if got[-1] is None:
                    streams[k] = None
            live = [b for b in got if b is not None]
            if not live or any(b is _END for b in live):
                return
            yield [live[0] if b is None else b for b in got]

    def _next(self, k: int, stream: Iterator[Batch]) -> Any:
        try:
            return next(stream)
        except StopIteration:
            return _END
        except Exception as err:  # member k's own failure: dropped and reported, not raised
            self.fail(k, f"{type(err).__name__}: {err}", "error")
            return None

    # ------------------------------------------------------------ the step

    def step(self, batches: list[Batch], amp: Callable[[], Any]) -> Step:
        parts = [b.x if isinstance(b.x, torch.Tensor) else torch.from_numpy(b.x)
                 for b in batches]
        x = torch.cat([p.to(self.dev, non_blocking=True) for p in parts], 1)
        x = x.contiguous(memory_format=self.memory)
        y_a = torch.as_tensor(batches[0].y_a).to(self.dev, non_blocking=True)
        y_b = torch.stack([torch.as_tensor(b.y_b).to(self.dev, non_blocking=True)
                           for b in batches])
        lams = [b.lam for b in batches]
        lam = self._mix_weights(lams)
        with amp():
            out = self.model(x).view(len(y_a), self.members, -1).float()
            loss = _member_losses(out, y_a, y_b, lam, self.child.optimizer.label_smoothing)
        pred = out.detach().argmax(2)  # N×K
        return Step(loss, (pred == y_a[:, None]).sum(0), (pred == y_b.T).sum(0),
                    self._alive & torch.isfinite(loss), lams, len(batches[0].y_a))

    def _mix_weights(self, lams: list[float]) -> torch.Tensor:
        """The members' mix weights (K) on the device, updated by scalar fills where they
        changed: no host-to-device copy (a pageable copy would wait for the stream) per step."""
        if self._lam is None:
            self._lam = torch.ones(self.members, device=self.dev)
            self._lam_host = [1.0] * self.members
        for k, value in enumerate(lams):
            if value != self._lam_host[k]:
                self._lam[k].fill_(value)
                self._lam_host[k] = value
        return self._lam

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x.repeat(1, self.members, 1, 1).contiguous(memory_format=self.memory))
        return out.view(len(x), self.members, -1).argmax(2)

    # ------------------------------------------------------------ state

    def state(self, saved: Saved, policies: list[Policy]) -> list[TrainState]:
        """Each member's state in a lone child's layout; member 0's also carries the cohort's
        optimizer state (one optimizer holds every member's)."""
        out = []
        for k in range(self.members):
            model = {n: v.detach().cpu() for n, v in
                     child_state(self.model, k, self.members).items()}
            out.append(TrainState(
                epoch=saved.epoch, step=saved.step, model=model,
                optimizer={"cohort": saved.optimizer} if k == 0 else {},
                scheduler=saved.scheduler,
                rng={"seed": self.seed, "aug_seed": self.aug_seeds[k],
                     "error": str(self.errors[k]), "status": self.errors[k].status},
                history=list(self.history[k]), policy=policies[k], scaler=saved.scalers[k]))
        return out

    def restore(self, trainer: Trainer, states: list[TrainState]) -> None:
        models = []
        for state in states:
            model = child_model(self.child, self.splits)
            model.load_state_dict(state.model)
            models.append(model)
        self.model.load_state_dict(group_models(models).state_dict())
        first = states[0]
        trainer.restore(first.epoch, first.step, first.optimizer["cohort"],
                        [s.scaler for s in states])
        self.history = [list(s.history) for s in states]
        self.errors = [Failure(str(s.rng.get("error", "")), str(s.rng.get("status", "diverged")))
                       for s in states]


_END = object()  # a member's stream ended with the epoch


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
