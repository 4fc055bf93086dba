"""Headroom: can any policy beyond the base beat the base under a given child? Measured per proxy.

A search can only answer "keep the base" when no policy beats crop/flip under its own child; the
right augmentation strength grows with the model and the data (RandAugment), so a proxy too
small or too short for augmentation to pay decides the search before it starts. For each proxy
of a grid (child model and width, epochs, training images), this trains the base (crop/flip),
TrivialAugment in the space's ops and a light RandAugment (N = 2, M = 0.3; search.trials.
references) under the same fresh replicates a confirmation uses, and reports each arm's margin
over the base on the audit images (what a search decides on) and on the test images, with
intervals that count the seeds and the images (`search.stats.two_way`), the CPU-seconds of a
trial, and the smallest margin the space's default confirmation could find there
(`search.stats.detectable_margin`, from the measured paired SD).

The chosen proxy is the cheapest whose headroom (the best arm beyond the base, on the audit
images) is at least 1 point with its interval above 0 and at least what the default
confirmation can detect. Every training is appended to `--records` (JSON lines), so a run can
be extended with more seeds or proxies and its table recomputed without training again.

    python bench/headroom.py cifar10 --data ../shared/data/cifar10_small.npz --seeds 3
    python bench/headroom.py digits --seeds 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.report import cached_splits, machine, write_section  # noqa: E402
from spaces.schema import Space, load_space  # noqa: E402

ARMS = ("base", "trivialaugment", "randaugment")
HEADROOM = 0.01  # the least headroom worth a search: one point
CPU_BUDGET = 180.0  # CPU-seconds a trial may cost on a 2-core machine (3 minutes)


@dataclass(frozen=True)
class Proxy:
    """A child and its budget: the search's proxy for where the user trains."""

    model: str
    width: int
    epochs: int
    images: int  # training images
    pool: int = 0  # validation pool images (0: the space's)

    @property
    def key(self) -> str:
        return f"{self.model} w{self.width}, {self.epochs} epochs, {self.images} images"

    def apply(self, space: Space) -> Space:
        changes = {"child.model": self.model, "child.width": self.width,
                   "child.epochs": self.epochs, "dataset.train_size": self.images}
        return space.replace(**changes, **({"dataset.val_pool_size": self.pool}
                                           if self.pool else {}))


GRIDS = {
    "cifar10": [Proxy("basiccnn", 16, 60, 1000), Proxy("basiccnn", 32, 100, 500),
                Proxy("resnet_fast", 8, 100, 500), Proxy("resnet_fast", 8, 60, 1000),
                Proxy("basiccnn", 32, 60, 1000)],
    "digits": [Proxy("basiccnn", 16, 150, 50), Proxy("basiccnn", 16, 150, 100, pool=550),
               Proxy("basiccnn", 32, 150, 50), Proxy("resnet_fast", 8, 100, 50)],
}


@dataclass(frozen=True)
class Job:
    space: str
    data: str | None
    proxy: Proxy
    arm: str
    replicate: int


def train(job: Job) -> dict[str, Any]:
    """One training: its audit and test images' correctness and its CPU-seconds."""
    import torch

    from children.reward import pack_hits
    from children.train import train_child
    from search.trials.config import TrialConfig, encode
    from search.trials.context import TrialContext
    from search.trials.references import policy_of
    from search.trials.seeds import trial_seeds

    torch.set_num_threads(1)
    space = job.proxy.apply(load_space(job.space))
    splits = cached_splits(space, job.data)
    config = encode(TrialConfig(reference=job.arm, replicate=job.replicate))
    common, aug = trial_seeds(TrialContext(space, 0), config)
    hits: dict[str, str] = {}

    def on_end(predict: Any) -> None:
        for name, part in (("audit", splits.audit), ("test", splits.test)):
            hits[name] = pack_hits(predict(part.x).argmax(1) == part.y)

    cpu, wall = time.process_time(), time.perf_counter()
    m = train_child(space.child, space.reward, policy_of(space, config), splits, seed=common,
                    aug_seed=aug, threads=1, on_end=on_end)
    return {"job": {**asdict(job), "proxy": asdict(job.proxy)}, "reward": m.reward,
            "audit": m.audit_accuracy, "cpu_seconds": time.process_time() - cpu,
            "wall_seconds": time.perf_counter() - wall, **{f"{k}_hits": v for k, v in hits.items()}}


# ---------------------------------------------------------------- the run


def run(jobs: list[Job], records: Path, workers: int) -> None:
    """Train what `records` lacks, appending each training as it ends."""
    done = {_job_key(r["job"]) for r in load(records)}
    todo = [j for j in jobs if _job_key({**asdict(j), "proxy": asdict(j.proxy)}) not in done]
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as ex, records.open("a", encoding="utf-8") as f:
        for k, rec in enumerate(ex.map(train, todo), 1):
            f.write(json.dumps(rec) + "\n")
            f.flush()
            j = rec["job"]
            print(f"[headroom] {k}/{len(todo)} {Proxy(**j['proxy']).key} {j['arm']} replicate "
                  f"{j['replicate']}: audit {rec['audit']:.4f}, {rec['cpu_seconds']:.0f} CPU-s "
                  f"(elapsed {(time.perf_counter() - started) / 60:.1f} min)",
                  file=sys.stderr, flush=True)


def load(records: Path) -> list[dict[str, Any]]:
    if not records.exists():
        return []
    return [json.loads(line) for line in records.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def _job_key(job: dict[str, Any]) -> tuple:
    p = job["proxy"]
    return (job["space"], p["model"], p["width"], p["epochs"], p["images"], p.get("pool", 0),
            job["arm"], job["replicate"])


# ---------------------------------------------------------------- figures


@dataclass
class Row:
    """One proxy's figures."""

    proxy: Proxy
    seeds: int
    cpu_seconds: float
    margins: dict[str, dict[str, Any]]  # arm -> {"audit": Estimate, "test": Estimate}
    best: str
    paired_sd: float  # the audit margin's per-seed SD with the images counted, pooled
    detectable: float  # at the space's default confirmation


def figures(space: Space, proxy: Proxy, recs: list[dict[str, Any]]) -> Row | None:
    """The margins of the arms beyond the base over the replicates every arm finished."""
    from children.reward import unpack_hits
    from search.stats import CONFIDENCE, bonferroni, detectable_margin, two_way

    mine = [r for r in recs if Proxy(**r["job"]["proxy"]) == proxy]
    by = {(r["job"]["arm"], r["job"]["replicate"]): r for r in mine}
    reps = sorted({rep for arm, rep in by if all((a, rep) in by for a in ARMS)})
    if len(reps) < 2:
        return None
    level = bonferroni(CONFIDENCE, len(ARMS) - 1)
    margins, sds = {}, []
    for arm in ARMS[1:]:
        margins[arm] = {}
        for part in ("audit", "test"):
            grid = np.array([unpack_hits(by[(arm, r)][f"{part}_hits"]).astype(float)
                             - unpack_hits(by[("base", r)][f"{part}_hits"]) for r in reps])
            margins[arm][part] = two_way(grid, level)
        sds.append(margins[arm]["audit"].std)
    best = max(ARMS[1:], key=lambda a: margins[a]["audit"].mean)
    sd = float(np.sqrt(np.mean(np.square(sds))))
    s = space.search
    return Row(proxy, len(reps), float(np.mean([r["cpu_seconds"] for r in mine])), margins,
               best, sd, detectable_margin(sd, s.confirm_seeds, s.confirm))


def verdict(row: Row) -> str:
    e = row.margins[row.best]["audit"]
    if e.ci_low > 0 and e.mean >= HEADROOM and e.mean >= row.detectable:
        return "**headroom**"
    if e.ci_high < 0:
        return "**none: the base is better**"
    return "not shown"


def choose(rows: list[Row]) -> Row | None:
    """The cheapest proxy with headroom within the CPU budget."""
    fit = [r for r in rows if verdict(r) == "**headroom**" and r.cpu_seconds <= CPU_BUDGET]
    return min(fit, key=lambda r: r.cpu_seconds) if fit else None


def _pts(e: Any) -> str:
    return f"{100 * e.mean:+.1f} [{100 * e.ci_low:+.1f}, {100 * e.ci_high:+.1f}]"


def table(space: Space, rows: list[Row]) -> list[str]:
    lines = ["| proxy | CPU-s a trial | seeds | TrivialAugment − base, audit | light "
             "RandAugment − base, audit | best arm − base, test | detectable at the default "
             "confirmation | headroom |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r.proxy.key} | {r.cpu_seconds:.0f} | {r.seeds} | "
                     f"{_pts(r.margins['trivialaugment']['audit'])} | "
                     f"{_pts(r.margins['randaugment']['audit'])} | "
                     f"{_pts(r.margins[r.best]['test'])} ({r.best}) | "
                     f"{100 * r.detectable:.1f} | {verdict(r)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("space", choices=sorted(GRIDS))
    parser.add_argument("--data", help="an .npz for the space's dataset (e.g. real CIFAR-10)")
    parser.add_argument("--seeds", type=int, default=3, help="fresh replicates per arm")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--proxies", type=int, nargs="*", help="grid rows to run (default all)")
    parser.add_argument("--records", default=None, help="JSON lines of trainings (default: "
                        "bench-headroom-<space>.jsonl in the working directory)")
    args = parser.parse_args()
    space = load_space(args.space)
    grid = [GRIDS[args.space][i] for i in (args.proxies if args.proxies is not None
                                           else range(len(GRIDS[args.space])))]
    records = Path(args.records or f"bench-headroom-{args.space}.jsonl")
    started = time.perf_counter()
    run([Job(args.space, args.data, p, arm, rep) for rep in range(1, args.seeds + 1)
         for p in grid for arm in ARMS], records, args.workers)
    minutes = (time.perf_counter() - started) / 60
    rows = [r for r in (figures(space, p, load(records)) for p in GRIDS[args.space]) if r]
    chosen = choose(rows)
    d = space.dataset
    data = f"{Path(args.data).name} (real CIFAR-10, Krizhevsky 2009)" if args.data else "built-in"
    head = (f"`python bench/headroom.py {args.space}"
            f"{' --data ' + Path(args.data).name if args.data else ''} --seeds {args.seeds}` — "
            f"the base (crop/flip), TrivialAugment in the space's ops and a light RandAugment "
            f"(N 2, M 0.3) under the same fresh replicates, per proxy; margins in points with "
            f"simultaneous 95% intervals (Bonferroni over the 2 arms) that count the seeds and "
            f"the images: audit ({d.audit_size} images, what a search decides on) and test. "
            f"Data: {data}; validation pool {d.val_pool_size}, audit {d.audit_size}. "
            f"{machine()}; {minutes:.0f} min of training in this run, load average "
            f"{os.getloadavg()[0]:.1f} at the end. CPU-s: one trial's process CPU time on one "
            f"thread.")
    pick = (f"- Chosen proxy: **{chosen.proxy.key}** ({chosen.cpu_seconds:.0f} CPU-s a trial): "
            f"the cheapest within {CPU_BUDGET:.0f} CPU-s whose best arm beats the base by at "
            f"least {100 * HEADROOM:.0f} point on the audit images, its interval above 0, and by "
            f"at least what the default confirmation can detect." if chosen else
            f"- No proxy within {CPU_BUDGET:.0f} CPU-s a trial has headroom shown at these seeds "
            f"(a best arm at least {100 * HEADROOM:.0f} point over the base with its interval "
            f"above 0 and at least what the default confirmation can detect).")
    body = "\n".join([head, "", *table(space, rows), "", pick])
    print(body)
    write_section(f"Headroom: {args.space}", body)


if __name__ == "__main__":
    main()
