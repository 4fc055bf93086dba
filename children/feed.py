"""What a training run feeds its model: the data on its device, and each epoch's batches.

`Feed` holds one run's data side: the train split's normalisation (on the host and on the
device), the train split kept on the device for the batched path, the validation and audit sets
normalised once on the device, and, per epoch and policy, the batches with the path they take
(`children.tensor_aug.choose_path`). A lone child (`children.train`) and a cohort of children
(`children.cohort`) read their batches from it alike: the batch order and torch's draws
(dropout) come from the common `seed`, the augmentation and the batch ops from each policy's
`aug_seed`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from children.batches import Batch, channel_stats, tensor_batches, training_batches
from children.datasets import Arrays, Splits
from children.tensor_aug import BatchedPipeline, Draws, PathChoice, choose_path

if TYPE_CHECKING:
    from spaces.policy import Policy
    from spaces.schema import ChildSpec

__all__ = ["Feed", "PathLog", "PerImage"]


class PathLog:
    """The augmentation paths a run's epochs took; a fallback is announced once per reason."""

    def __init__(self) -> None:
        self.taken: list[str] = []
        self._told: set[str] = set()

    def take(self, choice: PathChoice) -> str:
        if choice.path not in self.taken:
            self.taken.append(choice.path)
        if choice.reason and choice.reason not in self._told:
            self._told.add(choice.reason)
            print(f"[augsearch] note: this policy's batches run through albumentations, one image "
                  f"at a time: {choice.reason}", file=sys.stderr, flush=True)
        return choice.path


class PerImage:
    """A plain per-image function behind the albumentations call convention `augment` uses."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray]) -> None:
        self.fn = fn
        self.transforms = (fn,)  # non-empty: batches.augment applies it

    def __call__(self, *, image: np.ndarray) -> dict[str, np.ndarray]:
        return {"image": self.fn(image)}

    def set_random_seed(self, seed: int) -> None:
        reseed = getattr(self.fn, "set_random_seed", None)
        if reseed is not None:
            reseed(seed)


class Feed:
    """One run's data on `dev`, and its batches per epoch and policy."""

    def __init__(self, child: ChildSpec, splits: Splits, seed: int, dev: torch.device,
                 memory: torch.memory_format = torch.contiguous_format) -> None:
        x = splits.train.x
        self.child, self.splits, self.seed, self.dev, self.memory = child, splits, seed, dev, memory
        self.mean, self.std = channel_stats(x)
        # made on the device once: the batched path's and evaluation's normalisation
        self.mean_t = torch.as_tensor(self.mean, device=dev).view(1, -1, 1, 1)
        self.std_t = torch.as_tensor(self.std, device=dev).view(1, -1, 1, 1)
        self.batch_size = min(child.batch_size, len(x))
        self.steps_per_epoch = len(x) // self.batch_size  # drop the ragged last batch
        self.augment: PerImage | None = None
        self.paths = PathLog()
        self._pipelines: dict[Any, Any] = {}  # (kind, policy) -> pipeline
        self._train: tuple[torch.Tensor, torch.Tensor] | None = None
        self._eval: dict[tuple[int, int], tuple[Any, torch.Tensor, torch.Tensor]] = {}

    def pipeline(self, policy: Policy) -> Any:
        """The albumentations pipeline of `policy` (made once per policy), or `augment`."""
        if self.augment is not None:
            return self.augment
        from spaces.policy import build_pipeline

        return self._cached("albumentations", policy, lambda: build_pipeline(
            policy, self.child.base_augmentation, self.splits.train.x.shape[1]))

    def batched(self, policy: Policy) -> BatchedPipeline | None:
        """The policy's batched pipeline (made once per policy); None when a per-image
        `augment` function replaces the policy."""
        if self.augment is not None:
            return None
        return self._cached("batched", policy, lambda: BatchedPipeline(
            policy, self.child.base_augmentation, self.splits.train.x.shape[1]))

    def _cached(self, kind: str, policy: Policy, make: Callable[[], Any]) -> Any:
        key = (kind, policy)
        if key not in self._pipelines:
            if len(self._pipelines) >= 64:  # PBT changes policies: keep the recent ones
                self._pipelines.pop(next(iter(self._pipelines)))
            self._pipelines[key] = make()
        return self._pipelines[key]

    def train_split(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The train split on the device for the whole run (batched path): uint8 N×C×H×W
        images and int64 labels, moved there once."""
        if self._train is None:
            # C-ordered copies: never views of the (possibly read-only, shared) split
            x = torch.from_numpy(self.splits.train.x.transpose(0, 3, 1, 2).copy())
            y = torch.tensor(self.splits.train.y, dtype=torch.long)
            self._train = (x.to(self.dev), y.to(self.dev))
        return self._train

    def order(self, epoch: int) -> np.ndarray:
        """Epoch `epoch`'s batch order (the common seed's), and torch's draws seeded for it."""
        shuffle_seed, _, _, torch_seed = (
            np.random.SeedSequence((self.seed, epoch)).generate_state(4))
        torch.manual_seed(int(torch_seed))
        order = np.random.default_rng(shuffle_seed).permutation(len(self.splits.train))
        return order[:self.steps_per_epoch * self.batch_size]

    def batches(self, epoch: int, policy: Policy, aug_seed: int,
                order: np.ndarray | None = None) -> tuple[str, Iterator[Batch]]:
        """Epoch `epoch`'s path and batches under `policy`, its draws from `aug_seed`; `order`
        (default: `self.order(epoch)`, which seeds torch for the epoch)."""
        order = self.order(epoch) if order is None else order
        _, pipeline_seed, mix_seed, _ = np.random.SeedSequence((aug_seed, epoch)).generate_state(4)
        mix_rng = np.random.default_rng(mix_seed)
        batched = self.batched(policy)
        path = self.paths.take(choose_path(self.child.augmentation, self.dev, batched))
        if path == "batched":
            images, labels = self.train_split()
            return path, tensor_batches(images, labels, order, self.batch_size, batched,
                                        policy.batch, self.mean_t, self.std_t,
                                        Draws(int(pipeline_seed), self.dev), mix_rng, self.dev)
        pipeline = self.pipeline(policy)
        pipeline.set_random_seed(int(pipeline_seed))
        train = self.splits.train
        return path, training_batches(train.x, train.y, order, self.batch_size, pipeline,
                                      policy.batch, self.mean, self.std, mix_rng)

    def evaluation_set(self, data: Arrays, index: np.ndarray | None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """`data` (or its rows `index`) normalised as in training, on the device: made at its
        first scoring and kept for the run."""
        key = (id(data), id(index))
        if key not in self._eval:
            rows = slice(None) if index is None else index
            x = torch.from_numpy(data.x[rows].transpose(0, 3, 1, 2).copy())
            x = self.normalised(x.to(self.dev))
            y = torch.tensor(data.y[rows], dtype=torch.long).to(self.dev)
            self._eval[key] = ((data, index), x, y)  # holds data and index: their ids stay theirs
        return self._eval[key][1:]

    def normalised(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 N×C×H×W on the device -> float32, standardised as the model trains on."""
        return x.float().sub_(self.mean_t).div_(self.std_t).contiguous(
            memory_format=self.memory)
