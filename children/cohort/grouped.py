"""K child models of one architecture as one network: a cohort trained in one pass.

A small child leaves a GPU idle: each step is a few dozen tiny kernels, and the time goes to
launching them. `group_models(models)` builds one network that holds K children side by side,
each in its own block of channels: every convolution becomes a grouped convolution (groups x K),
every batch norm holds K children's channels (its statistics stay per child, since batch norm
is per channel), every linear layer a batched product over the K children, and dropout draws one
mask that all K children share. The cohort's input is the K children's batches stacked along
the channels (N x K*C x H x W); its output is N x K x classes. A child's slice of the grouped
network computes what the child computes alone: the same outputs, the same gradients
(tests/children/test_grouped.py).

Dropout's shared mask is the mask each child would draw alone when the K children share torch's
random stream, which is the case in a search under common random numbers (every trial starts
from the same seed). `child_state(grouped, k)` gives child k's `state_dict` in its own layout
(for checkpoints, and to compare with a child trained alone).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GroupedDropout", "GroupedLinear", "child_state", "group_models"]

_CHANNELWISE = (nn.ReLU, nn.GELU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                nn.AdaptiveMaxPool2d, nn.Flatten, nn.Identity, nn.Sequential)


class GroupedLinear(nn.Module):
    """K linear layers (in -> out) applied to N x (K*in) inputs, giving N x (K*out)."""

    def __init__(self, layers: list[nn.Linear]) -> None:
        super().__init__()
        self.k, self.out_features = len(layers), layers[0].out_features
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))
        has_bias = layers[0].bias is not None
        self.bias = (nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))
                     if has_bias else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        out = torch.einsum("nki,koi->nko", x.reshape(n, self.k, -1), self.weight)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(n, self.k * self.out_features)


class GroupedDropout(nn.Module):
    """Dropout on N x (K*f) inputs with one N x f mask shared by the K children."""

    def __init__(self, k: int, p: float) -> None:
        super().__init__()
        self.k, self.p = k, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        n = x.shape[0]
        view = x.reshape(n, self.k, -1)
        mask = F.dropout(torch.ones_like(view[:, 0]), self.p, True)  # a child's own draws
        return (view * mask.unsqueeze(1)).reshape(x.shape)


def _grouped_conv(convs: list[nn.Conv2d]) -> nn.Conv2d:
    c, k = convs[0], len(convs)
    out = nn.Conv2d(c.in_channels * k, c.out_channels * k, c.kernel_size, c.stride, c.padding,
                    c.dilation, c.groups * k, c.bias is not None, c.padding_mode)
    with torch.no_grad():
        out.weight.copy_(torch.cat([m.weight for m in convs]))
        if c.bias is not None:
            out.bias.copy_(torch.cat([m.bias for m in convs]))
    return out


def _grouped_norm(norms: list[nn.BatchNorm2d]) -> nn.BatchNorm2d:
    b, k = norms[0], len(norms)
    out = nn.BatchNorm2d(b.num_features * k, b.eps, b.momentum, b.affine,
                         b.track_running_stats)
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            if getattr(b, name, None) is not None:
                getattr(out, name).copy_(torch.cat([getattr(m, name) for m in norms]))
        if b.num_batches_tracked is not None:
            out.num_batches_tracked.copy_(b.num_batches_tracked)
    return out


def _grouped(modules: list[nn.Module]) -> nn.Module:
    """One module of the grouped network from the K children's modules at the same place."""
    first = modules[0]
    if isinstance(first, nn.Conv2d):
        return _grouped_conv(modules)  # type: ignore[arg-type]
    if isinstance(first, nn.BatchNorm2d):
        return _grouped_norm(modules)  # type: ignore[arg-type]
    if isinstance(first, nn.Linear):
        return GroupedLinear(modules)  # type: ignore[arg-type]
    if isinstance(first, nn.Dropout):
        return GroupedDropout(len(modules), first.p)
    slots = first._modules
    own = bool(first._parameters) or bool(first._buffers)
    if own or (not slots and not isinstance(first, _CHANNELWISE)):
        raise ValueError(f"a cohort cannot group {type(first).__name__} layers (only "
                         f"convolutions, batch norms, linear layers, dropout and channel-wise "
                         f"layers); train this child model alone (search.cohort: 1)")
    shell = copy.copy(first)  # the container's own forward, with grouped children
    shell._modules = {name: None if sub is None else _grouped([m._modules[name] for m in modules])
                      for name, sub in slots.items()}
    return shell


def group_models(models: list[nn.Module]) -> nn.Module:
    """One network computing the K `models` (one architecture) side by side.

    Raises ValueError for an architecture with a layer that mixes channels other than those
    named above, or for models of different shapes.
    """
    if not models:
        raise ValueError("a cohort needs at least one model")
    shapes = [[tuple(p.shape) for p in m.state_dict().values()] for m in models]
    if any(s != shapes[0] for s in shapes):
        raise ValueError("a cohort's models must share one architecture and shape")
    grouped = _grouped([copy.deepcopy(m) for m in models])
    return grouped.train(models[0].training)


def child_state(grouped: nn.Module, k: int, count: int) -> dict[str, torch.Tensor]:
    """Child k's state_dict (of `count` grouped children) in a lone child's layout."""
    out = {}
    for name, value in grouped.state_dict().items():
        if value.ndim == 0:  # num_batches_tracked: shared
            out[name] = value.clone()
        elif name.endswith(("weight", "bias")) and _is_grouped_linear(grouped, name):
            out[name] = value[k].clone()
        else:
            size = value.shape[0] // count
            out[name] = value[k * size:(k + 1) * size].clone()
    return out


def _is_grouped_linear(grouped: nn.Module, name: str) -> bool:
    owner = grouped.get_submodule(name.rsplit(".", 1)[0]) if "." in name else grouped
    return isinstance(owner, GroupedLinear)
