"""Contrastive pre-training under a policy's views, judged by its frozen features.

`pretrain_ssl` trains the space's child trunk (its model without the final linear layer) and a
small projection head with SimCLR's NT-Xent loss (Chen et al. 2020): each image of the
pre-training pool (the train split, labels unused, and any extra unlabelled images) gives two
views, each drawn from the policy's batched pipeline after the base crop/flip, and each view
must pick its partner out of the batch's other 2N - 2 views. The policy's reward is then a
score of the frozen features (`children.probe`): a linear probe or k-NN fitted on the labelled
images of the train split and scored on the validation pool, or, without any labels,
SelfAugment's rotation prediction. The audit set keeps its meaning: the probe's accuracy on
images the reward never saw (the rotation score there when there are no labels).

Like `children.train`: `seed` fixes the initial weights, batch order and dropout (the common
random numbers of a search), `aug_seed` the views' draws; the batch's device is the only device
(views drawn there from `Draws`, the pool resident there), losses are read once per epoch, and
`on_epoch(stats, state)` receives a picklable `SSLState` to checkpoint and resume from. No Ray,
no MLflow.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from children.batches import prefetch
from children.datasets import Arrays, Splits
from children.errors import DataError, DivergedError
from children.feed import Feed
from children.models import build_model
from children.optim import amp_dtype, autocast, lr_factor, make_optimizer, needs_scaler
from children.probe import Scorer, rotated
from children.reward import first_audit_epoch, reward_from_history, val_sample
from children.tensor_aug import Draws

if TYPE_CHECKING:
    from spaces.policy import Policy
    from spaces.schema import ChildSpec, RewardSpec

__all__ = ["Encoder", "SSLEpoch", "SSLMetrics", "SSLState", "nt_xent", "pool_of",
           "pretrain_ssl", "trunk_of"]

_EVAL_BATCH = 512
_ROTATION_STREAM = 11  # seed-sequence key of the images the rotation classifier is fitted on


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """SimCLR's NT-Xent loss of N pairs of projections (row i of z1 and of z2 are two views of
    one image), and how many of the 2N views rank their partner first (0-dim tensors on the
    projections' device). Cosine similarities over `temperature`, a view never its own
    negative."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = len(z1)
    logits = (z @ z.T) / temperature
    self_pairs = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_pairs, float("-inf"))
    index = torch.arange(2 * n, device=z.device)
    target = (index + n) % (2 * n)
    loss = F.cross_entropy(logits, target)
    return loss, (logits.argmax(1) == target).sum()


def trunk_of(model: nn.Module) -> tuple[nn.Module, int]:
    """The model without its final linear layer (replaced by Identity) and the width of the
    features that layer read."""
    last = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ValueError(f"{type(model).__name__} has no linear layer to remove")
    name, linear = last[-1]
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], nn.Identity())
    return model, linear.in_features


class Encoder(nn.Module):
    """A child trunk and SimCLR's projection head (linear, batch norm, ReLU, linear)."""

    def __init__(self, trunk: nn.Module, features: int, hidden: int, out: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = nn.Sequential(nn.Linear(features, hidden), nn.BatchNorm1d(hidden),
                                  nn.ReLU(), nn.Linear(hidden, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


@dataclass
class SSLEpoch:
    """One epoch: NT-Xent loss, contrastive accuracy (views that rank their partner first),
    the reward's score on the validation pool and the audit score (NaN where not scored), the
    other scores at the last epoch (diagnostics), speed."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_accuracy: float
    audit_accuracy: float
    probe_accuracy: float = math.nan
    knn_accuracy: float = math.nan
    rotation_accuracy: float = math.nan
    seconds: float = 0.0
    images_per_s: float = 0.0


@dataclass
class SSLMetrics:
    """What a pre-training run says about its policy's views."""

    reward: float
    val_accuracy: float
    audit_accuracy: float
    train_accuracy: float
    probe_accuracy: float
    knn_accuracy: float
    rotation_accuracy: float
    history: list[SSLEpoch]
    images_per_s: float
    wall_seconds: float
    epochs: int
    reward_epochs: list[int] = field(default_factory=list)
    augmentation: str = "batched"


@dataclass
class SSLState:
    """A picklable snapshot after `epoch` epochs (checkpoint, resume)."""

    epoch: int
    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    history: list[SSLEpoch]
    scaler: dict[str, Any] | None = None


def pool_of(splits: Splits) -> Arrays:
    """The pre-training pool: the train split (its labels unused) and the extra unlabelled
    images, if any."""
    extra = splits.unlabelled
    if extra is None or not len(extra):
        return splits.train
    return Arrays(np.concatenate([splits.train.x, extra.x]),
                  np.concatenate([splits.train.y, extra.y]))


def pretrain_ssl(child: ChildSpec, reward: RewardSpec, policy: Policy, splits: Splits, *,
                 seed: int, aug_seed: int | None = None, threads: int | None = None,
                 device: str | None = None,
                 on_epoch: Callable[[SSLEpoch, SSLState], None] | None = None,
                 state: SSLState | None = None, epochs: int | None = None) -> SSLMetrics:
    """Pre-train contrastively under `policy`'s views for `epochs` (default child.epochs) and
    score the frozen features at the reward's epochs (`reward.ssl`: probe, knn or rotation).

    The reward averages the scored epochs as a child's does (`reward_from_history`). `state`
    resumes a run; on a CPU the same seeds and threads give the same metrics bit for bit, on a
    GPU only up to float rounding (the k-NN score's float `scatter_add_` among it). Raises
    DivergedError at the end of the epoch whose loss first became NaN/inf (losses are read once
    per epoch).
    """
    from children.train import cpu_threads

    started = time.perf_counter()
    total = epochs or child.epochs
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with cpu_threads(dev, threads):
        run = _SSLRun(child, reward, splits, seed, dev, total,
                      seed if aug_seed is None else aug_seed)
        if state is not None:
            run.restore(state)
        images, train_seconds = 0, 0.0
        for epoch in range(run.epoch, total):
            begun = time.perf_counter()
            loss, accuracy, seen, seconds = run.train_epoch(epoch, policy)
            scores = run.scores(epoch)
            stats = SSLEpoch(epoch + 1, loss, accuracy, seconds=0.0, images_per_s=seen / seconds,
                             **scores)
            stats.seconds = time.perf_counter() - begun
            run.history.append(stats)
            images, train_seconds = images + seen, train_seconds + seconds
            if on_epoch is not None:
                on_epoch(stats, run.snapshot())
    if not run.history:
        raise ValueError(f"nothing to report: the state is at epoch {run.epoch} of {total}; "
                         f"pass a larger `epochs`")
    return _summary(run.history, reward, images / train_seconds if train_seconds else
                    run.history[-1].images_per_s, time.perf_counter() - started)


def _summary(history: list[SSLEpoch], reward: RewardSpec, speed: float, wall: float
             ) -> SSLMetrics:
    value, used, _ = reward_from_history(history, reward)
    last = history[-1]
    return SSLMetrics(value, last.val_accuracy, last.audit_accuracy, last.train_accuracy,
                      last.probe_accuracy, last.knn_accuracy, last.rotation_accuracy,
                      list(history), speed, wall, last.epoch, used)


class _SSLRun:
    """The mutable parts of one pre-training run; `pretrain_ssl` is its only user."""

    def __init__(self, child: ChildSpec, reward: RewardSpec, splits: Splits, seed: int,
                 dev: torch.device, total: int, aug_seed: int) -> None:
        self.child, self.reward, self.spec = child, reward, reward.contrastive()
        self.splits, self.seed, self.dev, self.total = splits, seed, dev, total
        self.aug_seed = aug_seed
        pool = pool_of(splits)
        if len(pool) < 2:
            raise DataError("the pre-training pool holds fewer than 2 images; raise "
                            "dataset.train_size or add dataset.unlabelled images")
        self.pool = pool
        self.cuda = dev.type == "cuda"
        self.memory = torch.channels_last if self.cuda else torch.contiguous_format
        torch.manual_seed(seed)
        classes = max(2, splits.num_classes or 2)
        trunk, width = trunk_of(build_model(child.model, classes, pool.x.shape[3],
                                            pool.x.shape[1], child.width))
        model = Encoder(trunk, width, self.spec.hidden_dim or width, self.spec.projection_dim)
        self.model = model.to(dev, memory_format=self.memory)
        self.optimizer = make_optimizer(child.optimizer, self.model, fused=self.cuda)
        self.amp_dtype = amp_dtype(dev)
        self.scaler = torch.amp.GradScaler("cuda", enabled=needs_scaler(dev, self.amp_dtype))
        self.feed = Feed(child, replace(splits, train=pool), seed, dev, self.memory)
        if self.feed.batch_size < 2:
            raise DataError("contrastive pre-training needs batches of at least 2 images; "
                            "raise child.batch_size")
        self.total_steps = self.feed.steps_per_epoch * total
        self.epoch, self.step = 0, 0
        self.history: list[SSLEpoch] = []
        self.scorer_parts = self._scoring_sets(splits, seed)

    # ------------------------------------------------------------ state

    def restore(self, state: SSLState) -> None:
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        for group in self.optimizer.param_groups:
            group["fused"] = self.cuda or None
        if state.scaler is not None:
            self.scaler.load_state_dict(state.scaler)
        self.epoch, self.step, self.history = state.epoch, state.step, list(state.history)

    def snapshot(self) -> SSLState:
        from children.train import _cpu_copy

        model = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        return SSLState(self.epoch, self.step, model, _cpu_copy(self.optimizer.state_dict()),
                        list(self.history),
                        self.scaler.state_dict() if self.scaler.is_enabled() else None)

    # ------------------------------------------------------------ training

    def views(self, epoch: int, policy: Policy) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Epoch `epoch`'s batches as pairs of normalised views on the device: the common
        seed's order (one move per epoch), the views' draws from `aug_seed` on the device."""
        order = self.feed.order(epoch)  # also seeds torch's draws (dropout) for the epoch
        _, pipeline_seed, _, _ = np.random.SeedSequence((self.aug_seed, epoch)).generate_state(4)
        pipeline = self.feed.batched(policy)
        if pipeline.missing:
            raise ValueError(f"ops {', '.join(pipeline.missing)} have no batched kernel; "
                             f"contrastive views are drawn on the batched path only")
        draws = Draws(int(pipeline_seed), self.dev)
        images, _ = self.feed.train_split()
        rows = torch.as_tensor(order, device=images.device)
        size = self.feed.batch_size
        for start in range(0, len(order), size):
            x = images.index_select(0, rows[start:start + size])
            yield (self.feed.normalised(pipeline(x, draws)),
                   self.feed.normalised(pipeline(x, draws)))

    def train_epoch(self, epoch: int, policy: Policy) -> tuple[float, float, int, float]:
        """One epoch; returns the mean loss, contrastive accuracy, images seen and seconds."""
        start = time.perf_counter()
        self.model.train()
        losses: list[torch.Tensor] = []
        hits: list[torch.Tensor] = []
        seen = 0
        batches = self.views(epoch, policy)
        with contextlib.closing(batches if self.dev.type != "cpu" else prefetch(batches)) as s:
            for v1, v2 in s:
                loss, hit = self._step(v1, v2)
                losses.append(loss)
                hits.append(hit)
                seen += len(v1)
        self.epoch = epoch + 1
        if not losses:
            return 0.0, 0.0, 0, time.perf_counter() - start
        table = torch.cat([torch.stack(losses).float(), torch.stack(hits).float()]).tolist()
        values = table[:len(losses)]
        for i, value in enumerate(values):
            if not math.isfinite(value):
                raise DivergedError(
                    f"the contrastive loss became {value} at epoch {epoch + 1}, step {i + 1}; "
                    f"lower child.optimizer.lr (now {self.child.optimizer.lr:g}) or raise "
                    f"reward.ssl.temperature (now {self.spec.temperature:g})")
        return (sum(values) / len(values), sum(table[len(losses):]) / max(2 * seen, 1), seen,
                time.perf_counter() - start)

    def _step(self, v1: torch.Tensor, v2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lr = self.child.optimizer.lr * lr_factor(self.child.schedule, self.step,
                                                 self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast(self.dev, self.amp_dtype):
            z = self.model(torch.cat([v1, v2]))
        loss, hits = nt_xent(z[:len(v1)], z[len(v1):], self.spec.temperature)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        return loss.detach(), hits

    # ------------------------------------------------------------ scoring

    def _scoring_sets(self, splits: Splits, seed: int) -> dict[str, Any]:
        """The sets the scores read, made once: the labelled images (None without labels), the
        validation rows, the audit set and the rows of the pool the rotation classifier is
        fitted on (a fixed draw from the common seed)."""
        labelled = splits.labelled_set()
        rng = np.random.default_rng((seed, _ROTATION_STREAM))
        count = min(self.spec.rotation_images, len(self.pool))
        rows = np.sort(rng.choice(len(self.pool), size=count, replace=False))
        return {"labelled": labelled if labelled is not None and len(labelled) else None,
                "val": (splits.val_pool, val_sample(splits.val_pool, self.reward, seed)),
                "audit": splits.audit, "rotation_fit": (self.pool, rows)}

    @torch.no_grad()
    def embed(self, data: Arrays, index: np.ndarray | None, rotate: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen trunk features (float32, eval mode) of `data` (rows `index`), with its labels,
        or with `rotate` of its images under the 4 rotations, with rotation labels."""
        self.model.eval()
        x, y = self.feed.evaluation_set(data, index)
        if rotate:
            x, y = rotated(x)
        parts = []
        for start in range(0, len(x), _EVAL_BATCH):
            with autocast(self.dev, self.amp_dtype):
                parts.append(self.model.trunk(x[start:start + _EVAL_BATCH]).float())
        return torch.cat(parts), y

    def scores(self, epoch: int) -> dict[str, float]:
        """This epoch's scores as SSLEpoch fields: the reward's on the validation pool where
        the reward reads it, the audit score in the reward's epochs, every score available at
        the last epoch."""
        p = self.scorer_parts
        names: list[str] = []
        if self.reward.scored(epoch, self.total):
            names.append(self.spec.score)
        if len(self.splits.audit) and epoch >= first_audit_epoch(self.reward, self.total):
            names.append("audit")
        if epoch == self.total - 1:
            names += [n for n in ("probe", "knn", "rotation") if n not in names
                      and (n == "rotation" or p["labelled"] is not None)]
        scorer = Scorer(self.embed, lambda d, i: self.embed(d, i, rotate=True), p["labelled"],
                        p["val"], p["audit"], p["rotation_fit"],
                        max(2, self.splits.num_classes or 2), self.spec)
        read = scorer.read(names)
        out = {"val_accuracy": read.get(self.spec.score, math.nan),
               "audit_accuracy": read.get("audit", math.nan)}
        out.update({f"{n}_accuracy": read[n] for n in ("probe", "knn", "rotation") if n in read})
        return out
