"""Scores of frozen features: a linear probe, k-nearest neighbours and rotation prediction.

A self-supervised encoder (`children.ssl`) is judged by what its frozen features allow: a linear
classifier fitted on a few labelled images (the standard linear evaluation), a k-NN vote among
them (no fitting at all), or, without any labels, how well a linear classifier tells which of
four rotations (0/90/180/270 degrees) an image was given (SelfAugment, Reed et al. 2021). All
three run on the features' device from tensors already there: no host sync until the caller
reads the returned 0-dim tensors (an accuracy), once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ROTATIONS", "Scorer", "fit_linear", "knn_accuracy", "linear_accuracy", "rotated"]

ROTATIONS = 4  # 0, 90, 180, 270 degrees
_PROBE_LR = 0.1
_PROBE_DECAY = 1e-4
_KNN_TEMPERATURE = 0.07  # InstDisc's weighted vote, as SimCLR's and MoCo's monitors use


def _standardiser(x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Standardise features by the fitting set's mean and spread (made once, on its device)."""
    mean = x.mean(0, keepdim=True)
    std = x.std(0, keepdim=True, unbiased=False).clamp_min(1e-6)
    return lambda f: (f - mean) / std


def fit_linear(x: torch.Tensor, y: torch.Tensor, classes: int, steps: int
               ) -> Callable[[torch.Tensor], torch.Tensor]:
    """A multinomial logistic regression fitted on frozen features `x` (float N×D) and labels
    `y` (int64 N), full batch, `steps` Adam steps from zero weights (deterministic: no random
    draw); returns a function giving the predicted classes of other features."""
    scale = _standardiser(x)
    xs = scale(x.float())
    weight = torch.zeros(x.shape[1], classes, device=x.device, requires_grad=True)
    bias = torch.zeros(classes, device=x.device, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=_PROBE_LR, weight_decay=_PROBE_DECAY)
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.cross_entropy(xs @ weight + bias, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    w, b = weight.detach(), bias.detach()
    return lambda f: (scale(f.float()) @ w + b).argmax(1)


def linear_accuracy(train: tuple[torch.Tensor, torch.Tensor], tests: list[tuple[torch.Tensor,
                    torch.Tensor]], classes: int, steps: int) -> list[torch.Tensor]:
    """Accuracy (0-dim tensors on the features' device) of a linear probe fitted on `train`
    (features, labels), on each of `tests`."""
    predict = fit_linear(*train, classes, steps)
    return [(predict(f) == y).float().mean() if len(y) else _nan(f) for f, y in tests]


def knn_accuracy(train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor,
                 torch.Tensor], classes: int, k: int, chunk: int = 1024) -> torch.Tensor:
    """Weighted k-NN accuracy (cosine similarity, votes exp(sim / 0.07)) of `test` among
    `train` (features, labels), a 0-dim tensor on their device."""
    bank, labels = F.normalize(train[0].float(), dim=1), train[1]
    k = min(k, len(labels))
    correct = torch.zeros((), device=bank.device)
    feats, truth = test
    for start in range(0, len(truth), chunk):
        sims = F.normalize(feats[start:start + chunk].float(), dim=1) @ bank.T
        top, index = sims.topk(k, dim=1)
        # a dense one-hot sum, not a float scatter_add_ (whose CUDA atomics add in any order)
        onehot = F.one_hot(labels[index], classes).float()  # chunk x k x classes
        votes = ((top / _KNN_TEMPERATURE).exp().unsqueeze(2) * onehot).sum(1)
        correct += (votes.argmax(1) == truth[start:start + chunk]).sum()
    return correct / max(len(truth), 1)


def rotated(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of N×C×H×W `x` under each of the 4 rotations (4N images, rotation-major)
    and the rotation labels 0..3, made on `x`'s device."""
    images = torch.cat([torch.rot90(x, r, (2, 3)) for r in range(ROTATIONS)])
    labels = torch.arange(ROTATIONS, device=x.device).repeat_interleave(len(x))
    return images, labels


def _nan(like: torch.Tensor) -> torch.Tensor:
    return torch.full((), float("nan"), device=like.device)


Embed = Callable[..., tuple[torch.Tensor, torch.Tensor]]  # (data, rows) -> features, labels


class Scorer:
    """The scores of one encoder state, computed on demand and read from the device once.

    `embed(data, rows)` gives frozen features and labels of `data` (rows `rows`, all for None);
    `embed_rotated(data, rows)` the features of its images under the 4 rotations, with rotation
    labels. `labelled` is the probe's fitting set (None: no labels), `val` (data, rows) the
    validation pool, `audit` the audit set, `rotation_fit` (data, rows) the unlabelled images
    the rotation classifier is fitted on. Scores: `probe` and `knn` (labelled → validation
    pool), `rotation` (fitted on `rotation_fit`, scored on the validation pool), and `audit`:
    the probe on the audit set, or the rotation score there when there are no labels.
    """

    def __init__(self, embed: Embed, embed_rotated: Embed, labelled: Any, val: tuple[Any, Any],
                 audit: Any, rotation_fit: tuple[Any, Any], classes: int, spec: Any) -> None:
        self.embed, self.embed_rotated = embed, embed_rotated
        self.labelled, self.val, self.audit = labelled, val, audit
        self.rotation_fit, self.classes, self.spec = rotation_fit, classes, spec
        self._cache: dict[str, Any] = {}

    def _get(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def _probe(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return self._get("probe_fit", lambda: fit_linear(
            *self.embed(self.labelled, None), self.classes, self.spec.probe_steps))

    def _rotation(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return self._get("rotation_fit", lambda: fit_linear(
            *self.embed_rotated(*self.rotation_fit), ROTATIONS, self.spec.probe_steps))

    def score(self, name: str) -> torch.Tensor:
        """One score as a 0-dim tensor on the features' device (not read)."""
        if name == "probe":
            feats, y = self.embed(*self.val)
            return (self._probe()(feats) == y).float().mean()
        if name == "knn":
            return knn_accuracy(self.embed(self.labelled, None), self.embed(*self.val),
                                self.classes, self.spec.knn_k)
        if name == "rotation":
            feats, y = self.embed_rotated(*self.val)
            return (self._rotation()(feats) == y).float().mean()
        if name == "audit":
            if self.labelled is None:
                feats, y = self.embed_rotated(self.audit, None)
                return (self._rotation()(feats) == y).float().mean()
            return self.audit_hits().float().mean()
        raise ValueError(f"unknown score {name!r}; use probe, knn, rotation or audit")

    def audit_hits(self) -> torch.Tensor | None:
        """Each audit image's correctness under the probe (bool, on the device); None without
        labels (the rotation audit scores 4 rotated copies of each image)."""
        if self.labelled is None:
            return None

        def hits() -> torch.Tensor:
            feats, y = self.embed(self.audit, None)
            return self._probe()(feats) == y

        return self._get("audit_hits", hits)

    def read(self, names: list[str]) -> dict[str, float]:
        """The named scores, read from the device in one transfer."""
        return self.read_with_hits(names)[0]

    def read_with_hits(self, names: list[str]) -> tuple[dict[str, float], np.ndarray | None]:
        """The named scores and, where `audit` is one of them and a probe scores it, each
        audit image's correctness: all read from the device in one transfer."""
        if not names:
            return {}, None
        hits = self.audit_hits() if "audit" in names else None
        scores = torch.stack([self.score(n).float() for n in names])
        table = scores if hits is None else torch.cat([scores, hits.float()])
        values = table.tolist()
        read = dict(zip(names, values[:len(names)], strict=True))
        return read, None if hits is None else np.asarray(values[len(names):]) > 0.5
