"""A cohort's network two ways: `children.cohort.grouped` (grouped convolutions) against
`torch.func.stack_module_state` + `functional_call` + `vmap`, for K children of one architecture.

Prints, side by side in one run (two passes each, interleaved: the machine is shared), the images
per second of a training step (forward, K cross-entropies, backward, SGD with momentum) on the
CPU, and how far each network's eval-mode outputs lie from each child's own, in float32 and
float64. It decided `children/cohort/` (docs/DESIGN.md): vmap was no faster and no more exact, so
the grouped network stays. Prints only; `python bench/cohort_vmap.py [threads]`.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from children.cohort.grouped import group_models  # noqa: E402
from children.models import build_model  # noqa: E402


def children(name, k, c, size, width, classes=10):
    torch.manual_seed(0)
    out = []
    for _ in range(k):
        out.append(build_model(name, classes, c, size, width))
    return out


def grouped_setup(models):
    net = group_models(models).to(next(models[0].parameters()).dtype)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    k = len(models)

    def step(xs, y):
        x = torch.cat(list(xs), 1)  # N×K·C×H×W
        out = net(x).view(len(y), k, -1)
        loss = sum(F.cross_entropy(out[:, j], y) for j in range(k))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return out

    def forward(xs):
        net.eval()
        with torch.no_grad():
            o = net(torch.cat(list(xs), 1)).view(xs.shape[1], len(models), -1)
        net.train()
        return o.permute(1, 0, 2)
    return step, forward


def vmap_setup(models):
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    opt = torch.optim.SGD(list(params.values()), lr=0.01, momentum=0.9)

    def f(p, b, x):
        return functional_call(base, (p, b), (x,))

    batched = vmap(f, in_dims=(0, 0, 0), randomness="same")

    def step(xs, y):
        out = batched(params, buffers, xs)  # K×N×classes
        loss = sum(F.cross_entropy(out[j], y) for j in range(len(models)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return out

    def forward(xs):
        base.eval()
        with torch.no_grad():
            o = batched(params, buffers, xs)
        base.train()
        return o
    return step, forward


def timed(step, xs, y, reps):
    step(xs, y)  # warm up
    start = time.perf_counter()
    for _ in range(reps):
        step(xs, y)
    return (time.perf_counter() - start) / reps


def exactness(models, forward, xs, dtype):
    ms = [copy.deepcopy(m).to(dtype).eval() for m in models]
    fwd = forward_of(ms, forward)
    with torch.no_grad():
        alone = torch.stack([m(x.to(dtype)) for m, x in zip(ms, xs, strict=True)])
        return float((fwd(xs.to(dtype)) - alone).abs().max())


def forward_of(ms, kind):
    return (grouped_setup if kind == "grouped" else vmap_setup)(ms)[1]


def main():
    rows = []
    for name, c, size, width, n in (("basiccnn", 1, 16, 16, 64), ("basiccnn", 3, 32, 32, 128),
                                     ("resnet_fast", 3, 32, 16, 128)):
        for k in (2, 4, 8):
            models = children(name, k, c, size, width)
            g = torch.Generator().manual_seed(1)
            xs = torch.randn(k, n, c, size, size, generator=g)
            y = torch.randint(0, 10, (n,), generator=g)
            reps = 8
            tg = timed(grouped_setup(copy.deepcopy(models))[0], xs, y, reps)
            tv = timed(vmap_setup(copy.deepcopy(models))[0], xs, y, reps)
            tg2 = timed(grouped_setup(copy.deepcopy(models))[0], xs, y, reps)  # ABBA order
            tv2 = timed(vmap_setup(copy.deepcopy(models))[0], xs, y, reps)
            g_ips, v_ips = k * n / ((tg + tg2) / 2), k * n / ((tv + tv2) / 2)
            e32 = [exactness(models, kind, xs, torch.float32) for kind in ("grouped", "vmap")]
            e64 = [exactness(models, kind, xs, torch.float64) for kind in ("grouped", "vmap")]
            rows.append((f"{name} {c}x{size} w{width} N={n}", k, g_ips, v_ips, e32, e64))
            print(f"| {rows[-1][0]} | {k} | {g_ips:.0f} | {v_ips:.0f} | {v_ips / g_ips:.2f} | "
                  f"{e32[0]:.1e} / {e32[1]:.1e} | {e64[0]:.1e} / {e64[1]:.1e} |", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print("| children | K | grouped images/s | vmap images/s | vmap / grouped | max |Δ| vs alone "
          "fp32 (grouped / vmap) | fp64 (grouped / vmap) |")
    print("|---|---|---|---|---|---|---|")
    main()
