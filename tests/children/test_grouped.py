"""A cohort's grouped network computes what each child computes alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from children.cohort.grouped import child_state, group_models
from children.models import build_model, model_names

K = 3


def _children(name: str, seeds: list[int]) -> list[nn.Module]:
    out = []
    for seed in seeds:
        torch.manual_seed(seed)
        out.append(build_model(name, 10, 3, 16, width=4))
    return out


def _inputs(n: int = 6) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(n, 3, 16, 16, generator=g) for _ in range(K)]


@pytest.fixture
def float64():
    """Exact arithmetic: in float32 a 40-layer net amplifies summation-order differences."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.mark.parametrize("name", ["basiccnn", "resnet_fast", "wrn_40_2"])
def test_outputs_and_gradients_are_each_childs_own(name: str, float64) -> None:
    solo = _children(name, [0, 1, 2])
    grouped = group_models(solo)
    xs = _inputs()
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    torch.manual_seed(9)  # dropout: each child alone draws from this same stream
    alone = []
    for model, x in zip(solo, xs, strict=True):
        torch.manual_seed(9)
        out = model(x)
        F.cross_entropy(out, y).backward()
        alone.append(out.detach())
    torch.manual_seed(9)
    together = grouped(torch.cat(xs, 1)).view(6, K, -1)
    sum(F.cross_entropy(together[:, k], y) for k in range(K)).backward()
    for k in range(K):
        torch.testing.assert_close(together[:, k].detach(), alone[k], atol=1e-10, rtol=1e-9)
        grads = {n: p.grad for n, p in solo[k].named_parameters()}
        mine = _child_grads(grouped, k)
        assert grads.keys() == mine.keys()
        for key in grads:
            torch.testing.assert_close(mine[key], grads[key], atol=1e-10, rtol=1e-8)


def _child_grads(grouped: nn.Module, k: int) -> dict[str, torch.Tensor]:
    """Child k's parameter gradients, cut from the grouped ones like `child_state` cuts."""
    saved = {n: p.detach().clone() for n, p in grouped.named_parameters()}
    with torch.no_grad():
        for p in grouped.parameters():
            p.copy_(p.grad)
    grads = {n: v for n, v in child_state(grouped, k, K).items()
             if n in dict(grouped.named_parameters())}
    with torch.no_grad():
        for n, p in grouped.named_parameters():
            p.copy_(saved[n])
    return grads


def test_child_state_round_trips_every_model() -> None:
    for name in model_names():
        if name.startswith("wrn_28"):
            continue  # 36M parameters x 3: slow, same layers as wrn_40_2
        solo = _children(name, [3, 4, 5])
        grouped = group_models(solo)
        for k, model in enumerate(solo):
            mine = child_state(grouped, k, K)
            theirs = model.state_dict()
            assert mine.keys() == theirs.keys()
            for key, value in theirs.items():
                assert torch.equal(mine[key], value), (name, key)


def test_batch_norm_statistics_stay_per_child() -> None:
    solo = _children("basiccnn", [0, 0, 0])  # identical children...
    grouped = group_models(solo)
    xs = _inputs()
    xs[1] = xs[1] * 5 + 3  # ...seeing different data
    grouped.train()
    grouped(torch.cat(xs, 1))
    means = [child_state(grouped, k, K)["0.1.running_mean"] for k in range(K)]
    assert not torch.allclose(means[0], means[1])
    solo[1].train()
    solo[1](xs[1])
    torch.testing.assert_close(means[1], solo[1].state_dict()["0.1.running_mean"])


def test_a_layer_that_mixes_children_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot group LayerNorm"):
        group_models([nn.Sequential(nn.LayerNorm(4)) for _ in range(2)])
    with pytest.raises(ValueError, match="one architecture"):
        group_models([nn.Linear(2, 3), nn.Linear(2, 4)])
