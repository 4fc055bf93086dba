"""Transfer: does the policy a default search finds pay where a user trains?

A search trains small children on a small training split; a user trains a larger model on all of
the data for longer. This bench takes the policy a default TPE search found at the space's own
budget (bench/search_quality.py's search of seed 0: its `best_policy.yaml` when the search
exported a candidate, else its best confirmed candidate, `candidate_policy.yaml`, since the
exported base is crop/flip itself; `--policy SPACE=FILE` gives one) and retrains, on **all**
of the dataset's training images (cifar10_small.npz's 5,000; digits' 1,497), tested on the test
set no search touched:

- the space's own child and a larger one (resnet_fast), each for more optimizer steps than a
  search's child takes (the figures say how many more);
- five arms, same seeds (initial weights and batch order) for all: the found policy (with the
  space's crop/flip), the space's crop/flip alone, and the three free baselines
  (bench/free_baselines.py): crop/flip + Cutout (DeVries & Taylor), crop/flip + torchvision's
  RandAugment(2, 9) and crop/flip + TrivialAugmentWide;
- at least 6 seeds per arm; paired 95% Student-t CIs of the differences, and a computed verdict:
  the found policy at least crop/flip with a CI above 0, and below none of the free baselines.

The training is search.evaluate's (the same arms, runs and statistics as
`python -m search.evaluate`). `--gpu` is the profile for a CUDA machine: wider children, longer
schedules, 10 seeds; with `--data` pointing at a full CIFAR-10 .npz (50,000 train images) it is
the full-size check.

    python bench/transfer.py                       # CPU profile, both spaces (~1.7 h, projected)
    python bench/transfer.py --spaces cifar10 --policy cifar10=runs/c10/best_policy.yaml
    python bench/transfer.py --gpu --data cifar10_full.npz --spaces cifar10
    python bench/transfer.py --quick               # the pipeline at a toy budget (~2 min)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.free_baselines import (  # noqa: E402
    CROPFLIP,
    FREE,
    LABELS,
    ci_text,
    not_worse,
    present,
    relation,
)
from bench.report import machine, write_section  # noqa: E402
from spaces.schema import Space, load_space  # noqa: E402

SECTION = "Transfer: the found policy where users train"
FOUND = "found"


@dataclass(frozen=True)
class Child:
    """A child a user would train: model, width, epochs (batch size and optimizer: the space's)."""

    model: str
    width: int
    epochs: int


@dataclass(frozen=True)
class Profile:
    name: str
    seeds: int
    workers: int
    threads: int
    children: dict[str, tuple[Child, ...]]
    free: tuple[str, ...] = FREE  # the free baselines trained beside crop/flip


# Sized from measured costs on this 2-core machine (1 thread per training, 2 at a time): a
# cifar10 basiccnn w16 epoch on 5,000 images ~5.5 s, resnet_fast w8 ~7.7 s (w16 ~18 s); digits'
# 1,497 images ~0.65 s (basiccnn). 6 seeds x 3 arms x 2 children: ~35 min for cifar10, ~8 min
# for digits; the 5 arms of today (Cutout and RandAugment added) project to ~5/3 of that.
CPU = Profile("cpu", seeds=6, workers=2, threads=1, children={
    "cifar10": (Child("basiccnn", 16, 20), Child("resnet_fast", 8, 15)),
    "digits": (Child("basiccnn", 16, 60), Child("resnet_fast", 8, 30)),
})
GPU = Profile("gpu", seeds=10, workers=4, threads=1, children={
    "cifar10": (Child("basiccnn", 32, 100), Child("resnet_fast", 32, 60)),
    "digits": (Child("basiccnn", 32, 150), Child("resnet_fast", 32, 60)),
})
QUICK = Profile("quick", seeds=2, workers=2, threads=1, children={
    "cifar10": (Child("basiccnn", 8, 1), Child("resnet_fast", 4, 1)),
    "digits": (Child("basiccnn", 8, 2), Child("resnet_fast", 4, 1)),
})


@dataclass(frozen=True)
class Found:
    """The policy under test and what it is."""

    path: Path
    what: str  # "exported", "candidate (the search kept the base)" or "given"
    margin: str  # the search's own confirmed margin over crop/flip, in words ("" if unknown)


# ---------------------------------------------------------------- the policy


def found_policy(space_name: str, given: dict[str, Path], root: Path, quick: bool) -> Found:
    """--policy, else bench/search_quality.py's TPE search of seed 0 under `root` (run now, at
    that bench's budget, if it is not there)."""
    if space_name in given:
        return Found(given[space_name], "given (--policy)", _margin(given[space_name]))
    from bench import search_quality as sq

    setup = next(s for s in sq.SETUPS if s.name == space_name)
    space = load_space(space_name)
    if setup.trials is not None:
        space = space.replace(**{"search.trials": setup.trials})
    if quick:
        space = space.replace(**sq.QUICK)
    run = sq.run_search(space, setup, "tpe", 0, root / space_name, reuse=True)
    if run.exported_arm and run.exported_arm != CROPFLIP:
        path, what = run.out / "best_policy.yaml", "exported (best_policy.yaml)"
    elif run.candidate_arm:
        path, what = (run.out / "candidate_policy.yaml",
                      "the best confirmed candidate (candidate_policy.yaml; the search kept the "
                      "base, crop/flip itself)")
    else:
        path, what = run.out / "best_policy.yaml", "the search's best (unconfirmed)"
    return Found(path, what, _margin(path))


def _margin(path: Path) -> str:
    from spaces.policy import read_policy_file

    p = read_policy_file(path).get("provenance") or {}
    if p.get("margin_reward") is None or not p.get("margin_reward_ci95"):
        return ""
    low, high = p["margin_reward_ci95"]
    return (f"{p['margin_reward']:+.4f} reward [{low:+.4f}, {high:+.4f}] (simultaneous 95%, "
            f"Bonferroni over {p.get('correction_k')}, {p.get('confirmed_over_seeds')} fresh "
            f"replicates; verdict `{p.get('verdict')}`, exported `{p.get('exported')}`)")


# ---------------------------------------------------------------- training


def space_for(space_name: str, child: Child) -> Space:
    return load_space(space_name).replace(**{"child.model": child.model,
                                             "child.width": child.width})


def run_child(space_name: str, child: Child, found: Found, profile: Profile, data: str | None,
              out: Path) -> Any:
    from search.evaluate import evaluate

    if out.exists():  # an earlier, interrupted run: start again
        shutil.rmtree(out)
    return evaluate({FOUND: found.path}, space=space_for(space_name, child), data=data,
                    baselines=",".join((CROPFLIP, *profile.free)), seeds=profile.seeds,
                    epochs=child.epochs, threads=profile.threads, workers=profile.workers,
                    output=out, quiet=False)


def steps(train_images: int, batch: int, epochs: int) -> int:
    return -(-train_images // batch) * epochs


# ---------------------------------------------------------------- the report


def _diff(ev: Any, other: str) -> Any:
    return next(d for d in ev.differences if d.arm == FOUND and d.other == other)


def _free(ev: Any) -> list[str]:
    """The free baselines this evaluation trained (all of them unless --free chose)."""
    return present(ev, FREE)


def verdict(ev: Any) -> tuple[bool, bool]:
    """(the found policy beats crop/flip: paired CI above 0, it is below no free baseline: no
    CI of found − baseline lies below 0)."""
    return (_diff(ev, CROPFLIP).diff.ci_low > 0,
            all(not_worse(_diff(ev, other).diff) for other in _free(ev)))


def verdict_text(differences: list[Any]) -> str:
    """One plain sentence from the found policy's paired differences (crop/flip's first)."""
    return "; ".join(relation(d.diff, d.other) for d in differences)


def child_lines(space_name: str, child: Child, ev: Any, search_space: Space) -> list[str]:
    train = ev.settings["train_images"]
    batch = search_space.child.batch_size
    s_steps = steps(search_space.dataset.train_size, batch, search_space.child.epochs)
    u_steps = steps(train, batch, child.epochs)
    lines = [f"*{child.model} w{child.width}, {child.epochs} epochs on {train:,} training "
             f"images, batch {batch}: {u_steps:,} optimizer steps ({u_steps / s_steps:.1f}x the "
             f"search child's {s_steps:,}); {ev.settings['test_images']:,} test images; "
             f"{ev.arms[0].seconds_per_run:.0f} s per training.*", "",
             "| arm | test accuracy (mean ± sd) | 95% CI |", "|---|---:|---:|"]
    for a in ev.arms:
        e = a.accuracy
        lines.append(f"| {a.name} | {e.mean:.4f} ± {e.std:.4f} | [{e.ci_low:.4f}, "
                     f"{e.ci_high:.4f}] |")
    lines += ["", "| found policy vs | Δ test accuracy | paired 95% CI | seeds better |",
              "|---|---:|---:|---:|"]
    for other in (CROPFLIP, *_free(ev)):
        d = _diff(ev, other)
        lines.append(f"| {other} | {d.diff.mean:+.4f} | [{d.diff.ci_low:+.4f}, "
                     f"{d.diff.ci_high:+.4f}] | {d.wins}/{d.diff.n} |")
    return lines


def verdict_line(space_name: str, child: Child, ev: Any) -> str:
    """The computed verdict of one child: against crop/flip, then every free baseline."""
    diffs = [_diff(ev, other) for other in (CROPFLIP, *_free(ev))]
    beats, not_below = verdict(ev)
    figures = ", ".join(f"vs {d.other} {ci_text(d.diff)}" for d in diffs)
    free = ", ".join(LABELS[other] for other in _free(ev))
    second = (f"target (below none of the free baselines, {free}): "
              f"**{'met' if not_below else 'NOT met'}**" if free else
              "no free baseline trained (--free=)")
    return (f"- {space_name}, {child.model} w{child.width} ({child.epochs} epochs, "
            f"{ev.settings['train_images']:,} images, {diffs[0].diff.n} seeds): the found "
            f"policy is {verdict_text(diffs)}: {figures}. Target (≥ crop/flip with a paired CI "
            f"above 0): **{'met' if beats else 'NOT met'}**; {second}.")


def space_report(space_name: str, found: Found, profile: Profile, data: str | None,
                 root: Path, written: Any = None) -> tuple[list[str], list[str]]:
    """(the section's lines, the verdict lines) for one space; `written(body, verdicts)` after
    each child, so that a run stopped later keeps what it measured."""
    search_space = load_space(space_name)
    body: list[str] = []
    verdicts: list[str] = []
    for child in profile.children[space_name]:
        started = time.perf_counter()
        ev = run_child(space_name, child, found, profile, data,
                       root / f"{space_name}-{child.model}-w{child.width}-{profile.name}")
        minutes = (time.perf_counter() - started) / 60
        print(f"[transfer] {space_name} {child.model}: {minutes:.1f} min", flush=True)
        body += [*child_lines(space_name, child, ev, search_space), ""]
        verdicts.append(verdict_line(space_name, child, ev))
        if written is not None:
            written(body, verdicts)
    return body, verdicts


def report(space_name: str, found: Found, profile: Profile, data: str | None, root: Path,
           quick: bool) -> None:
    started = time.perf_counter()
    load = os.getloadavg()[0]
    flags = {"quick": " --quick", "gpu": " --gpu"}.get(profile.name, "")
    flags += "".join(f" {a}" for a in sys.argv[1:]
                     if a.startswith(("--models=", "--free=", "--epochs=")))
    flags += "".join(f" {a} {b}" for a, b in zip(sys.argv[1:], sys.argv[2:], strict=False)
                     if a in ("--models", "--free", "--epochs"))
    planned = len(profile.children[space_name])

    def text(body: list[str], verdicts: list[str]) -> str:
        minutes = (time.perf_counter() - started) / 60
        done = len(verdicts)
        partial = (f" **Partial: {done} of the {planned} children measured** (the run was "
                   f"stopped or is still running)." if done < planned else "")
        head = [f"{'QUICK pipeline check (toy budget: figures say nothing). ' if quick else ''}"
                f"`python bench/transfer.py --spaces {space_name}{flags}` — {machine()}; profile "
                f"`{profile.name}` ({profile.seeds} seeds per arm, {profile.workers} trainings "
                f"at a time, {profile.threads} thread each); {minutes:.0f} min; load average "
                f"{load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (the machine is "
                f"shared).{partial}", "",
                f"The found policy: {found.what}, `{_shown(found.path)}`"
                + (f"; the search's own confirmed margin over crop/flip at the search's budget: "
                   f"{found.margin}" if found.margin else "") + ".", ""]
        return "\n".join([*head, *body, *verdicts])

    def written(body: list[str], verdicts: list[str]) -> None:
        out = text(body, verdicts)
        root.mkdir(parents=True, exist_ok=True)
        (root / f"{space_name}-{profile.name}.md").write_text(out + "\n", encoding="utf-8")
        if not quick:
            suffix = "" if profile.name == "cpu" else f" ({profile.name})"
            write_section(f"{SECTION}: {space_name}{suffix}", out)

    body, verdicts = space_report(space_name, found, profile, data, root, written)
    print(text(body, verdicts))
    print(json.dumps({"space": space_name,
                      "minutes": round((time.perf_counter() - started) / 60, 1)}))


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def parse_policies(items: list[str], spaces: list[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        name, _, path = item.rpartition("=")
        if not name:
            if len(spaces) != 1:
                raise SystemExit("--policy FILE needs one --spaces; write --policy SPACE=FILE")
            name = spaces[0]
        if not Path(path).is_file():
            raise SystemExit(f"--policy {item}: {path} is not a file")
        out[name] = Path(path)
    return out


def keep_models(profile: Profile, models: list[str]) -> Profile:
    """The profile with only the children of the named models (every space keeps at least one)."""
    from dataclasses import replace

    children = {name: tuple(c for c in kids if c.model in models)
                for name, kids in profile.children.items()}
    if not all(children.values()):
        raise SystemExit(f"--models {','.join(models)}: leaves a space without a child; the "
                         f"{profile.name} profile has "
                         f"{sorted({c.model for kids in profile.children.values() for c in kids})}")
    return replace(profile, children=children)


def with_epochs(profile: Profile, epochs: int) -> Profile:
    """The profile with every child trained `epochs` epochs, named apart (its own section)."""
    from dataclasses import replace

    children = {name: tuple(replace(c, epochs=epochs) for c in kids)
                for name, kids in profile.children.items()}
    return replace(profile, name=f"{profile.name}-{epochs}-epochs", children=children)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", default="cifar10,digits")
    parser.add_argument("--policy", action="append", default=[], metavar="[SPACE=]FILE",
                        help="the policy to retrain (default: bench/search_quality.py's TPE "
                             "search of seed 0 under --search-root, run if absent)")
    parser.add_argument("--search-root", default="bench-runs/search_quality")
    parser.add_argument("--root", default="bench-runs/transfer")
    parser.add_argument("--data", help="the cifar10 data (default: ../shared/data/"
                                       "cifar10_small.npz); a full CIFAR-10 .npz for --gpu")
    parser.add_argument("--seeds", type=int, help="seeds per arm (default: the profile's)")
    parser.add_argument("--workers", type=int, help="trainings at a time (default: the "
                                                     "profile's)")
    parser.add_argument("--models", help="comma-separated child models to keep from the "
                                         "profile (default: all of its children)")
    parser.add_argument("--free", help=f"comma-separated free baselines to train beside "
                                       f"crop/flip (default: all, {','.join(FREE)}; empty: none)")
    parser.add_argument("--epochs", type=int, help="train every kept child this many epochs "
                                                    "(a longer training where users train; its "
                                                    "own section)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--gpu", action="store_true", help="the CUDA profile")
    group.add_argument("--quick", action="store_true", help="a toy budget; writes no section")
    args = parser.parse_args(argv)
    from dataclasses import replace

    from bench.report import SHARED

    profile = GPU if args.gpu else QUICK if args.quick else CPU
    if args.seeds:
        profile = replace(profile, seeds=args.seeds)
    if args.workers:
        profile = replace(profile, workers=args.workers)
    if args.models:
        profile = keep_models(profile, args.models.split(","))
    if args.epochs:
        profile = with_epochs(profile, args.epochs)
    if args.free is not None:  # --free= : crop/flip alone beside the found policy
        names = [f for f in args.free.split(",") if f]
        unknown = sorted(set(names) - set(FREE))
        if unknown:
            raise SystemExit(f"--free {args.free}: unknown {unknown}; choose from {FREE}")
        profile = replace(profile, free=tuple(f for f in FREE if f in names))
    spaces = [s for s in args.spaces.split(",") if s]
    given = parse_policies(args.policy, spaces)
    for name in spaces:
        data = (args.data or str(SHARED / "cifar10_small.npz")) if name == "cifar10" else None
        found = found_policy(name, given, Path(args.search_root).resolve(), args.quick)
        report(name, found, profile, data, Path(args.root).resolve(), args.quick)


if __name__ == "__main__":
    main()
