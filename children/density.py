"""Density matching (Fast AutoAugment, Lim et al. 2019): score a policy without training.

The search's train split is cut into K stratified folds (`fold_rows`); a child is trained once
per fold on the rest (`fold_training_splits`, base augmentation only) and kept as `FoldModels`.
A policy is then scored by how well each fold's model classifies that fold's held-out images
under the policy: a few augmented copies of each image, augmented in batches on the model's
device (`children.tensor_aug`, falling back to the albumentations pipeline for an op without a
batched kernel) and classified in batches. A policy whose images still look like the data the
models learned from keeps their accuracy (and likelihood) high: that is the density matched.

Nothing here trains: `score_policy` is one inference pass. No Ray, no MLflow.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from children.batches import augment, channel_stats
from children.datasets import Arrays, Splits, stratified_order
from children.models import build_model
from children.tensor_aug import BatchedPipeline, Draws, choose_path
from children.train import cpu_threads

if TYPE_CHECKING:
    from spaces.policy import Policy
    from spaces.schema import BaseAug, ChildSpec, DensitySpec

__all__ = ["DensityScore", "FoldModel", "FoldModels", "fold_rows", "fold_training_splits",
           "held_out_rows", "score_policy"]

CHUNK = 256  # images augmented and classified at once (measured faster than 1024 on CPU)
_FOLD_STREAM = 11  # seed-sequence key of the fold assignment
_AUDIT_STREAM = 13  # ... of the audit images' draws


def _derived(*key: int) -> int:
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def fold_rows(y: np.ndarray, folds: int, share: float, seed: int) -> list[np.ndarray]:
    """The rows of the train split each fold holds out (sorted), stratified by label.

    Fold k holds out a window of round(share * n) rows of a stratified order, starting at
    k * n / folds: with share = 1 / folds the windows are disjoint and every row is held out
    once (K-fold); a larger share overlaps them (Fast AutoAugment holds out 40% with 5 folds).
    """
    n = len(y)
    size = max(1, round(n * share))
    order = stratified_order(y, _derived(seed, _FOLD_STREAM))
    return [np.sort(order[(round(k * n / folds) + np.arange(size)) % n]) for k in range(folds)]


def held_out_rows(spec: DensitySpec, y: np.ndarray, seed: int) -> list[np.ndarray]:
    """The train-split rows each of `spec`'s folds holds out (deterministic from the seed)."""
    return fold_rows(y, spec.folds, spec.held_out_share(), seed)


def fold_training_splits(splits: Splits, held_out: np.ndarray) -> Splits:
    """What fold model k trains on: the train split without its held-out rows, which become its
    validation pool; the audit and test sets are unchanged."""
    train = splits.train
    rest = np.setdiff1d(np.arange(len(train)), held_out)
    return Splits(Arrays(train.x[rest], train.y[rest]),
                  Arrays(train.x[held_out], train.y[held_out]), splits.audit, splits.test,
                  splits.num_classes)


@dataclass(frozen=True)
class FoldModel:
    """One fold's trained child: its held-out rows, weights (numpy, so the object store shares
    them without copies) and the input normalisation it trained with."""

    held_out: np.ndarray
    weights: dict[str, np.ndarray]
    mean: np.ndarray
    std: np.ndarray


@dataclass(frozen=True)
class FoldModels:
    """The K fold models of a search, and how to rebuild each as a network."""

    model: str
    width: int
    num_classes: int
    channels: int
    image_size: int
    folds: tuple[FoldModel, ...]

    @classmethod
    def from_states(cls, child: ChildSpec, splits: Splits, held_out: list[np.ndarray],
                    states: list[dict[str, Any]]) -> FoldModels:
        """Fold models from their trained state dicts (`TrainState.model`), in fold order."""
        x = splits.train.x
        folds = []
        for rows, state in zip(held_out, states, strict=True):
            mean, std = channel_stats(np.delete(x, rows, axis=0))
            weights = {k: v.detach().cpu().numpy().copy() for k, v in state.items()}
            folds.append(FoldModel(rows, weights, mean, std))
        num_classes = splits.num_classes or int(splits.train.y.max()) + 1
        return cls(child.model, child.width, num_classes, x.shape[3], x.shape[1], tuple(folds))

    def network(self, k: int, device: torch.device) -> torch.nn.Module:
        """Fold k's model for inference on `device`: eval mode, each batch norm that follows a
        convolution folded into it, channels-last memory (together about twice the images/s
        of the plain model on one CPU thread; the same outputs up to float rounding)."""
        net = build_model(self.model, self.num_classes, self.channels, self.image_size,
                          self.width)
        net.load_state_dict({k: torch.tensor(v) for k, v in self.folds[k].weights.items()})
        return fold_batch_norms(net.eval()).to(device, memory_format=torch.channels_last)


def fold_batch_norms(module: torch.nn.Module) -> torch.nn.Module:
    """Fold every BatchNorm2d that directly follows a Conv2d in a Sequential into the
    convolution (eval mode only: the running statistics become the conv's weights and bias)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for child in module.children():
        fold_batch_norms(child)
    if isinstance(module, torch.nn.Sequential):
        for i in range(len(module) - 1):
            conv, norm = module[i], module[i + 1]
            if isinstance(conv, torch.nn.Conv2d) and isinstance(norm, torch.nn.BatchNorm2d):
                module[i], module[i + 1] = fuse_conv_bn_eval(conv, norm), torch.nn.Identity()
    return module


@dataclass(frozen=True)
class DensityScore:
    """A policy's density-matching score and what it rests on."""

    reward: float  # mean over folds of the score (accuracy, or -NLL)
    fold_rewards: list[float]
    accuracy: float  # held-out accuracy under the policy, mean over folds
    nll: float  # held-out negative log-likelihood of the true class, mean over folds
    audit_accuracy: float  # audit images under the policy, each scored by one fold model
    images: int  # images augmented and classified
    seconds: float
    cpu_seconds: float  # this process's CPU time (all its threads) while scoring
    augmentation: str  # the path the images took: batched or albumentations


@dataclass
class _Sums:
    correct: float = 0.0
    nll: float = 0.0
    n: int = 0

    def accuracy(self) -> float:
        return self.correct / self.n if self.n else math.nan


class _Augmenter:
    """The policy's training augmentation (base crop/flip first) on uint8 N×C×H×W batches:
    batched on the device, or per image through albumentations when an op has no kernel."""

    def __init__(self, policy: Policy, base: BaseAug | None, image_size: int, setting: str,
                 device: torch.device) -> None:
        self.policy, self.base, self.size, self.device = policy, base, image_size, device
        self.batched = BatchedPipeline(policy, base, image_size)
        self.path = choose_path(setting, device, self.batched).path

    def stream(self, seed: int) -> Any:
        """The random source of one pass: batched draws, or a seeded albumentations pipeline."""
        if self.path == "batched":
            return Draws(seed, self.device)
        from spaces.policy import build_pipeline

        return build_pipeline(self.policy, self.base, self.size, seed=seed)

    @property
    def home(self) -> torch.device:
        """Where the images to augment live: the device (batched), else the host."""
        return self.device if self.path == "batched" else torch.device("cpu")

    def __call__(self, x: torch.Tensor, source: Any) -> torch.Tensor:
        """uint8 N×C×H×W on `home` -> augmented, on the device."""
        if self.path == "batched":
            return self.batched(x, source)
        images = augment(np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy()), source)
        return torch.from_numpy(images).permute(0, 3, 1, 2).to(self.device)


@torch.inference_mode()
def _score(net: torch.nn.Module, fold: FoldModel, data: Arrays, rows: np.ndarray, copies: int,
           aug: _Augmenter, seed: int) -> _Sums:
    """`copies` augmented passes over `rows` of `data`, classified by `net`; the sums are read
    from the device once."""
    sums = _Sums()
    if len(rows) == 0:
        return sums
    nll, correct = _classified(net, fold, data, rows, copies, aug, seed)
    table = torch.cat([torch.stack(nll), torch.stack(correct).float()]).tolist()
    for chunk_nll, chunk_correct in zip(table[:len(nll)], table[len(nll):], strict=True):
        sums.nll -= chunk_nll
        sums.correct += chunk_correct
    sums.n = len(rows) * copies
    return sums


def _classified(net: torch.nn.Module, fold: FoldModel, data: Arrays, rows: np.ndarray,
                copies: int, aug: _Augmenter, seed: int
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each chunk's summed log-likelihood of the true class and its correct count, left on the
    device: the images, labels and normalisation are moved there once, before the loop."""
    device = aug.device
    x = data.x[rows].transpose(0, 3, 1, 2).copy()
    images = torch.from_numpy(x).to(aug.home)
    labels = torch.tensor(data.y[rows], dtype=torch.long).to(device)
    index = torch.arange(len(rows), device=aug.home).repeat(copies)  # copy-major
    targets = labels.repeat(copies)
    mean = torch.as_tensor(fold.mean, device=device).view(1, -1, 1, 1)
    std = torch.as_tensor(fold.std, device=device).view(1, -1, 1, 1)
    source = aug.stream(seed)
    nll, correct = [], []
    for start in range(0, len(index), CHUNK):
        x = aug(images.index_select(0, index[start:start + CHUNK]), source)
        x = x.float().sub_(mean).div_(std).contiguous(memory_format=torch.channels_last)
        target = targets[start:start + CHUNK]
        with _autocast(device):
            logits = net(x)
        logp = F.log_softmax(logits.float(), 1)
        nll.append(logp.gather(1, target.view(-1, 1)).sum())
        correct.append((logp.argmax(1) == target).sum())
    return nll, correct


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA; nothing elsewhere (autocast knows no `meta`)."""
    return torch.autocast("cuda") if device.type == "cuda" else contextlib.nullcontext()


def score_policy(policy: Policy, models: FoldModels, splits: Splits, spec: DensitySpec,
                 base: BaseAug | None, *, seed: int, device: str | None = None,
                 threads: int | None = None, augmentation: str = "auto") -> DensityScore:
    """Score `policy` with every fold model on that fold's held-out rows of `splits.train`.

    Each held-out image is augmented `spec.copies` times (the base crop/flip, then the policy,
    as in training); the fold's score is its model's accuracy, or -NLL of the true class, over
    those copies; the reward is the mean over folds. The audit set is split among the fold
    models (image i goes to model i mod K), each image augmented once, for the policy's audit
    accuracy. On the CPU the same seed and threads give the same score bit for bit; on a GPU,
    up to float rounding. Nothing is trained.
    """
    started, cpu = time.perf_counter(), time.process_time()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    k_folds = len(models.folds)
    with cpu_threads(dev, threads):
        aug = _Augmenter(policy, base, models.image_size, augmentation, dev)
        held, audit = [], _Sums()
        for k, fold in enumerate(models.folds):
            net = models.network(k, dev)
            held.append(_score(net, fold, splits.train, fold.held_out, spec.copies, aug,
                               _derived(seed, k)))
            part = _score(net, fold, splits.audit, np.arange(k, len(splits.audit), k_folds), 1,
                          aug, _derived(seed, _AUDIT_STREAM, k))
            audit.correct, audit.nll, audit.n = (audit.correct + part.correct,
                                                 audit.nll + part.nll, audit.n + part.n)
    accuracy = [s.accuracy() for s in held]
    nll = [s.nll / s.n for s in held]
    fold_rewards = accuracy if spec.score == "accuracy" else [-v for v in nll]
    return DensityScore(
        reward=float(np.mean(fold_rewards)), fold_rewards=[float(v) for v in fold_rewards],
        accuracy=float(np.mean(accuracy)), nll=float(np.mean(nll)),
        audit_accuracy=audit.accuracy(), images=sum(s.n for s in held) + audit.n,
        seconds=time.perf_counter() - started, cpu_seconds=time.process_time() - cpu,
        augmentation=aug.path)
