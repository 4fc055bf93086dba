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
(views drawn there from `Draws`, the pool resident there), and `on_epoch(stats, state)`
receives a picklable `SSLState` to checkpoint and resume from. The loop (optimizer, precision,
the tally read once per epoch, divergence, snapshots) is `children.trainer`'s; `_Contrastive`
is its strategy here. No Ray, no MLflow.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from children.datasets import Arrays, Splits
from children.errors import DataError
from children.feed import Feed
from children.models import build_model
from children.probe import Scorer, rotated
from children.reward import first_audit_epoch, pack_hits, reward_from_history, val_sample
from children.tensor_aug import Draws
from children.trainer import (
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

__all__ = ["Encoder", "SSLEpoch", "SSLMetrics", "SSLState", "nt_xent", "pool_of",
           "pretrain_ssl", "trunk_of", "untrained_scores"]

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
    audit_hits: str = ""  # a probe's audit: each audit image's correctness (pack_hits)


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
    started = time.perf_counter()
    dev = device_of(device)
    total = epochs or child.epochs
    with cpu_threads(dev, threads):
        run = _Contrastive(child, reward, splits, seed, dev, total,
                           seed if aug_seed is None else aug_seed)
        trainer = Trainer(child, run, dev, total)
        if state is not None:
            run.restore(trainer, state)
        trainer.fit(lambda _epoch: policy, on_epoch)
    if not run.history:
        raise ValueError(f"nothing to report: the state is at epoch {trainer.epoch} of {total}; "
                         f"pass a larger `epochs`")
    speed = trainer.images / trainer.seconds if trainer.seconds else run.history[-1].images_per_s
    return _summary(run.history, reward, speed, time.perf_counter() - started)


def _summary(history: list[SSLEpoch], reward: RewardSpec, speed: float, wall: float
             ) -> SSLMetrics:
    value, used, _ = reward_from_history(history, reward)
    last = history[-1]
    return SSLMetrics(value, last.val_accuracy, last.audit_accuracy, last.train_accuracy,
                      last.probe_accuracy, last.knn_accuracy, last.rotation_accuracy,
                      list(history), speed, wall, last.epoch, used)


def untrained_scores(child: ChildSpec, reward: RewardSpec, splits: Splits, seed: int,
                     device: str = "cpu") -> dict[str, Any]:
    """The floor: the scores (the reward's on the validation pool, the audit's, and probe,
    k-NN and rotation) of the trunk as `pretrain_ssl(seed=seed)` builds it before its first
    step (the same initial weights, batch norm at its initial statistics in eval mode), through
    the same scoring as a pre-training's last epoch. A policy's reward shows learning only
    above it."""
    dev = device_of(device)
    with cpu_threads(dev, 1):
        run = _Contrastive(child, reward, splits, seed, dev, 1, seed)
        return run.scores(Trainer(child, run, dev, 1), 0)  # epoch 0 of 1: every score


class _Contrastive(Strategy):
    """Contrastive pre-training's strategy: the encoder, the pairs of views, the NT-Xent step,
    the frozen features' scores and `SSLState`."""

    views = 2  # the train accuracy counts both views of each image

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
        self.memory = memory_format(dev)
        torch.manual_seed(seed)
        classes = max(2, splits.num_classes or 2)
        trunk, width = trunk_of(build_model(child.model, classes, pool.x.shape[3],
                                            pool.x.shape[1], child.width))
        model = Encoder(trunk, width, self.spec.hidden_dim or width, self.spec.projection_dim)
        self.model = model.to(dev, memory_format=self.memory)
        self.feed = Feed(child, replace(splits, train=pool), seed, dev, self.memory)
        if self.feed.batch_size < 2:
            raise DataError("contrastive pre-training needs batches of at least 2 images; "
                            "raise child.batch_size")
        self.history: list[SSLEpoch] = []
        self.scorer_parts = self._scoring_sets(splits, seed)

    # ------------------------------------------------------------ state

    def state(self, saved: Saved, policy: Policy | None) -> SSLState:
        return SSLState(saved.epoch, saved.step, cpu_copy(self.model.state_dict()),
                        saved.optimizer, list(self.history), saved.scalers[0])

    def restore(self, trainer: Trainer, state: SSLState) -> None:
        self.model.load_state_dict(state.model)
        trainer.restore(state.epoch, state.step, state.optimizer, [state.scaler])
        self.history = list(state.history)

    # ------------------------------------------------------------ training

    def batches(self, epoch: int, policy: Policy) -> tuple[Iterator[Any], bool]:
        """The epoch's pairs of views: inline on an accelerator, in the prefetch thread on the
        CPU."""
        return self.views_of(epoch, policy), self.dev.type != "cpu"

    def views_of(self, epoch: int, policy: Policy
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
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

    def step(self, batch: tuple[torch.Tensor, torch.Tensor], amp: Callable[[], Any]) -> Step:
        v1, v2 = batch
        with amp():
            z = self.model(torch.cat([v1, v2]))
        loss, hits = nt_xent(z[:len(v1)], z[len(v1):], self.spec.temperature)
        return Step(loss, hits, images=len(v1))

    def what_diverged(self) -> str:
        return "the contrastive loss"

    def fix(self) -> str:
        return (f"lower child.optimizer.lr (now {self.child.optimizer.lr:g}) or raise "
                f"reward.ssl.temperature (now {self.spec.temperature:g})")

    # ------------------------------------------------------------ scoring

    def score(self, trainer: Trainer, epoch: int, trained: Trained, begun: float) -> SSLEpoch:
        scores = self.scores(trainer, epoch)
        stats = SSLEpoch(epoch + 1, trained.losses[0], trained.accuracies[0],
                         images_per_s=trained.images / max(trained.seconds, 1e-9), **scores)
        stats.seconds = time.perf_counter() - begun
        self.history.append(stats)
        return stats

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

    def embed(self, trainer: Trainer, data: Arrays, index: np.ndarray | None,
              rotate: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen trunk features (float32, eval mode) of `data` (rows `index`), with its labels,
        or with `rotate` of its images under the 4 rotations, with rotation labels."""
        x, y = self.feed.evaluation_set(data, index)
        if rotate:
            x, y = rotated(x)
        out = trainer.evaluate(trainer.chunks(x), lambda c: self.model.trunk(c).float())
        return (torch.zeros(0, 0, device=self.dev) if out is None else out), y

    def scores(self, trainer: Trainer, epoch: int) -> dict[str, Any]:
        """This epoch's scores as SSLEpoch fields: the reward's on the validation pool where
        the reward reads it, the audit score (and, for a probe's, each audit image's
        correctness) in the reward's epochs, every score available at the last epoch."""
        p = self.scorer_parts
        names: list[str] = []
        if self.reward.scored(epoch, self.total):
            names.append(self.spec.score)
        if len(self.splits.audit) and epoch >= first_audit_epoch(self.reward, self.total):
            names.append("audit")
        if epoch == self.total - 1:
            names += [n for n in ("probe", "knn", "rotation") if n not in names
                      and (n == "rotation" or p["labelled"] is not None)]
        scorer = Scorer(lambda d, i: self.embed(trainer, d, i),
                        lambda d, i: self.embed(trainer, d, i, rotate=True), p["labelled"],
                        p["val"], p["audit"], p["rotation_fit"],
                        max(2, self.splits.num_classes or 2), self.spec)
        read, hits = scorer.read_with_hits(names)
        out: dict[str, Any] = {"val_accuracy": read.get(self.spec.score, math.nan),
                               "audit_accuracy": read.get("audit", math.nan),
                               "audit_hits": "" if hits is None else pack_hits(hits)}
        out.update({f"{n}_accuracy": read[n] for n in ("probe", "knn", "rotation") if n in read})
        return out
