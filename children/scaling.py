"""Loss scaling, the trainer's (`children.trainer`): `OneScaler`, `torch.amp.GradScaler` for one
model (a lone child, contrastive pre-training), and `MemberScaler`, what GradScaler does for one
child done for each of a cohort's K children on its own. Each takes a step's loss(es) through
the backward pass and the optimizer's step (`backward_step`).

A cohort (`children.cohort`) trains K children as one grouped network with one optimizer; every
grouped parameter holds the members' parameters one after the other along its first dimension
(`children.cohort.grouped`). Under fp16 one shared GradScaler would skip every member's step
whenever one member's gradients overflow, and halve every member's scale. `MemberScaler` keeps one
scale per member instead: member k's loss is multiplied by its scale before the summed backward, its
gradient slices are divided by it, and a member whose gradients hold inf/nan skips that step (its
gradients masked, its parameters and optimizer state put back as they were; batch norm's running
statistics keep the forward pass's update, as under a lone child's GradScaler) and halves its scale,
while the others step. A member's scale doubles after `growth_interval` good steps in a row,
GradScaler's rule. Everything stays on the device: no host sync per step. Putting a member back
costs a copy of the parameters and the optimizer state at every step, on fp16 GPUs only.

The scales are powers of two, so scaling and unscaling are exact: in float32 a member that does not
overflow steps as it would unscaled, bit for bit (tests/children/test_member_scaling.py). One
difference from a lone child under GradScaler: AdamW's step count is one tensor per grouped
parameter, shared by the members, so a member's skipped step still advances its bias correction.

Disabled (CPU, bf16), every method is the plain path: the kept members' losses summed as they
are, the optimizer stepped, nothing copied; the members not kept (diverged, failed) still have
their gradients masked.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["MemberScaler", "OneScaler", "mask_grads"]

_INIT_SCALE = 2.0**16  # GradScaler's defaults
_GROWTH, _BACKOFF, _INTERVAL = 2.0, 0.5, 2000


class OneScaler:
    """`torch.amp.GradScaler` for one model: on where fp16 needs it (`needs_scaler`), else the
    plain step."""

    def __init__(self, enabled: bool) -> None:
        self.scaler = torch.amp.GradScaler("cuda", enabled=enabled)

    def backward_step(self, loss: torch.Tensor, kept: torch.Tensor | None,
                      model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """The backward pass of `loss` (0-dim), then the optimizer's step where the gradients
        are finite (GradScaler's rule) and the scale's update."""
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dicts(self) -> list[dict[str, Any] | None]:
        """[GradScaler's state], or [None] when off."""
        return [self.scaler.state_dict() if self.scaler.is_enabled() else None]

    def load_state_dicts(self, states: list[dict[str, Any] | None]) -> None:
        if states and states[0] is not None:
            self.scaler.load_state_dict(states[0])


class MemberScaler:
    """One loss scale and one count of good steps per member, on the cohort's device."""

    def __init__(self, k: int, device: torch.device, enabled: bool, *,
                 init_scale: float = _INIT_SCALE, growth_interval: int = _INTERVAL) -> None:
        self.k, self.enabled, self.growth_interval = k, enabled, growth_interval
        self.scale = torch.full((k,), init_scale, dtype=torch.float32, device=device)
        self.good = torch.zeros(k, dtype=torch.int32, device=device)

    def backward_step(self, losses: torch.Tensor, kept: torch.Tensor | None,
                      model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """A cohort's step: the kept members' losses (K) through one backward pass, each
        member's gradients unscaled, those of members not kept or overflowing masked, the
        optimizer stepped for the others and the scales updated. Nothing is read back."""
        kept = torch.ones_like(losses, dtype=torch.bool) if kept is None else kept
        self.loss(losses, kept).backward()
        stepped = self.unscale_(list(model.parameters()), kept)  # fp16: overflows
        mask_grads(model, stepped)
        self.step(optimizer, stepped)
        self.update(kept, stepped)

    def loss(self, losses: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """The one loss to differentiate: the kept members' losses (K), each times its scale,
        summed."""
        kept_losses = torch.where(kept, losses, 0.0)
        if self.enabled:
            kept_losses = kept_losses * self.scale
        return kept_losses.sum()

    def unscale_(self, params: list[torch.Tensor], kept: torch.Tensor) -> torch.Tensor:
        """Divide each member's gradient slices by its scale; the members still kept (K bool):
        those in `kept` whose gradients are all finite. Where the scaler is off: `kept`."""
        if not self.enabled:
            return kept
        inverse = (1.0 / self.scale).to(torch.float32)
        finite = torch.ones_like(kept)
        for p in params:
            if p.grad is None:
                continue
            g = p.grad.unflatten(0, (self.k, -1))  # member k's slice is g[k]
            g.mul_(inverse.view(self.k, *[1] * (g.ndim - 1)).to(g.dtype))
            finite &= torch.isfinite(g).flatten(1).all(1)
        return kept & finite

    def step(self, optimizer: torch.optim.Optimizer, stepped: torch.Tensor) -> None:
        """`optimizer.step()`; with the scaler on, members not `stepped` (K bool) are put back:
        their parameters and optimizer state as before the step (state the step created: zero,
        as a fresh optimizer has it)."""
        if not self.enabled:
            optimizer.step()
            return
        slots = _member_tensors(optimizer, self.k)
        before = {key: t.detach().clone() for key, t in slots.items()}
        optimizer.step()
        for key, t in _member_tensors(optimizer, self.k).items():
            view = t.detach().unflatten(0, (self.k, -1))
            keep = stepped.view(self.k, *[1] * (view.ndim - 1))
            old = before.get(key)
            view.copy_(torch.where(keep, view, 0.0 if old is None
                                   else old.unflatten(0, (self.k, -1))))

    def update(self, counted: torch.Tensor, stepped: torch.Tensor) -> None:
        """GradScaler's update per member, for the members `counted` (K bool: alive, loss
        finite): halve the scale of one that did not step and restart its count; count a good
        step, and double the scale at `growth_interval` of them."""
        if not self.enabled:
            return
        overflowed = counted & ~stepped
        good = torch.where(counted & stepped, self.good + 1, self.good)
        good = torch.where(overflowed, 0, good)
        grow = good >= self.growth_interval
        grown = self.scale * _GROWTH
        scale = torch.where(grow & torch.isfinite(grown), grown, self.scale)
        self.scale.copy_(torch.where(overflowed, self.scale * _BACKOFF, scale))
        self.good.copy_(torch.where(grow, 0, good))

    def state_dicts(self) -> list[dict[str, Any] | None]:
        """Each member's scaler state in a lone child's GradScaler layout (None when off);
        read from the device once."""
        if not self.enabled:
            return [None] * self.k
        scales, goods = self.scale.tolist(), self.good.tolist()
        return [{"scale": s, "growth_factor": _GROWTH, "backoff_factor": _BACKOFF,
                 "growth_interval": self.growth_interval, "_growth_tracker": g}
                for s, g in zip(scales, goods, strict=True)]

    def load_state_dicts(self, states: list[dict[str, Any] | None]) -> None:
        """The members' states from `state_dicts` (a lone child's GradScaler state too); a
        member without one (saved where the scaler was off) starts afresh."""
        if not self.enabled:
            return
        fresh = {"scale": _INIT_SCALE, "_growth_tracker": 0}
        rows = [s if s else fresh for s in states]
        self.scale.copy_(torch.tensor([float(r["scale"]) for r in rows]))
        self.good.copy_(torch.tensor([int(r["_growth_tracker"]) for r in rows]))


def _member_tensors(optimizer: torch.optim.Optimizer, k: int
                    ) -> dict[tuple[int, str], torch.Tensor]:
    """Every tensor the optimizer changes per member: each parameter and each of its state
    tensors of the parameter's shape (momentum, Adam's moments), keyed by (index, name)."""
    out: dict[tuple[int, str], torch.Tensor] = {}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for i, p in enumerate(params):
        out[(i, "")] = p
        for name, value in optimizer.state.get(p, {}).items():
            if isinstance(value, torch.Tensor) and value.shape == p.shape:
                out[(i, name)] = value
    return out


def mask_grads(model: torch.nn.Module, kept: torch.Tensor) -> None:
    """Zero the gradients of members whose loss is not kept (every grouped parameter holds the
    members one after the other along its first dimension)."""
    k = len(kept)
    for p in model.parameters():
        if p.grad is not None:
            g = p.grad.unflatten(0, (k, -1))  # a view whatever the memory format
            g.copy_(torch.where(kept.view(k, *[1] * (g.ndim - 1)), g, 0.0))
