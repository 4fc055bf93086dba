"""Command line: `python -m search.run --space cifar10 --searcher tpe`.

User errors (bad space, bad data, impossible resources, unreachable tracking server or cluster)
print one line and exit with code 2, before anything is created; nothing already computed is
lost. A search in which no trial produced a reward exits with code 1, an interrupted one with 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from search.errors import run_cli
from search.strategies import strategy_names

DESCRIPTION = """Search image-augmentation policies: Ray Tune trains child models in parallel,
each under a policy drawn by the searcher from the space; the child's validation accuracy is the
policy's reward; MLflow records every trial; the best policy is written as a plain
albumentations file."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m search.run", description=DESCRIPTION)
    p.add_argument("--space",
                   help="built-in space name (digits, cifar10, cifar100, svhn) or a path to a "
                        "space YAML file (default: digits, offline; with --resume: the "
                        "interrupted search's)")
    p.add_argument("--searcher",
                   help=f"search strategy: {', '.join(strategy_names())} (default: tpe; with "
                        f"--resume: the interrupted search's)")
    p.add_argument("--trials", type=int, help="number of child trainings (default: the space's)")
    p.add_argument("--concurrency", type=int,
                   help="trials running at once (default: as many as the resources allow)")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default: the space's)")
    p.add_argument("--gpus-per-trial", type=float,
                   help="GPUs per trial, fractional allowed: 0.25 runs 4 trials per GPU "
                        "(default: the space's)")
    p.add_argument("--cohort", type=int, metavar="K",
                   help="train K children together in one process as one grouped network (one "
                        "Tune trial of K policies, each still a trial in the leaderboard and "
                        "MLflow); resources per trial are then per cohort (default: the space's, "
                        "1)")
    p.add_argument("--epochs", type=int, help="child epochs per trial (default: the space's)")
    _stage_flags(p)
    _run_flags(p)
    return p


def _stage_flags(p: argparse.ArgumentParser) -> None:
    """The stages around the search: the headroom check before it, the confirmation after."""
    p.add_argument("--confirm", type=int, metavar="K",
                   help="after the search, train the K best policies and the base under fresh "
                        "seeds; the best is exported only if it beats the base on the audit "
                        "images with a Bonferroni-corrected 95%% interval (seeds and images "
                        "counted), else the base; 0 turns it off (default: the space's, 3)")
    p.add_argument("--confirm-seeds", type=int, metavar="R",
                   help="fresh seeds each confirmed policy and the base are trained with "
                        "(default: the space's, 8; at least 2 for an interval)")
    p.add_argument("--headroom-seeds", type=int, metavar="H",
                   help="before the search, train the reference arms (the base, TrivialAugment "
                        "and a light RandAugment in the space's ops) under H fresh seeds and "
                        "report the headroom: whether any policy beyond the base beats it under "
                        "this child; 0 turns it off (default: the space's, 3)")
    p.add_argument("--headroom-only", action="store_true",
                   help="run the headroom check and stop: is a search worth its budget here?")
    p.add_argument("--stop-without-headroom", action="store_true",
                   help="stop after the headroom check unless it shows headroom (an interval "
                        "above 0)")



def _run_flags(p: argparse.ArgumentParser) -> None:
    """Data, paths, Ray, tracking and the modes of a run."""
    p.add_argument("--augmentation", choices=["auto", "albumentations", "batched"],
                   help="augment training images one at a time through albumentations, or whole "
                        "batches of tensors on the child's device (same meaning); auto: the "
                        "faster for the device (default: the space's child.augmentation)")
    p.add_argument("--data", help="an .npz file (x_train, y_train, x_test, y_test) or an image "
                                  "folder with one subfolder per class; overrides the dataset")
    p.add_argument("--data-dir", help="where built-in datasets are cached or downloaded")
    p.add_argument("--seed", type=int, help="search seed (default: 0)")
    p.add_argument("--output", help="output directory (default: ./augsearch-runs/<space>-"
                                    "<searcher>-<time>)")
    p.add_argument("--address", help="address of an existing Ray cluster (default: start a "
                                     "local one); 'auto' finds a running one")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted search in --output without repeating "
                        "finished trials; its flags are restored, and a flag given with another "
                        "value is refused")
    p.add_argument("--early-stop", choices=["asha"],
                   help="stop weak trials early with ASHA (tpe and random only)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: a SQLite store in the "
                                          "output directory)")
    p.add_argument("--experiment", help="MLflow experiment name (default: augsearch-<space>)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the space, the data and every flag, print a summary and a few "
                        "sampled policies; create nothing, start nothing")
    p.add_argument("--smoke-test", action="store_true",
                   help="a tiny real search (4 trials, 2 epochs, small splits) to check the set-up")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _run(args),
                   interrupted="interrupted; resume with the same command plus --resume")


def _run(args: argparse.Namespace) -> int:
    from search.api import prepare_from_args, run_prepared

    prepared = prepare_from_args(args)
    if args.dry_run:
        from search.prepare.summary import dry_run

        print(dry_run(prepared))
        return 0
    result = run_prepared(prepared)
    print(result.summary())
    if not result.complete:
        return 130
    return 0 if result.best_policy is not None or result.stopped else 1


if __name__ == "__main__":
    sys.exit(main())
