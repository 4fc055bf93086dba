"""Command line: `python -m search.run --space cifar10 --searcher tpe`.

User errors (bad space, bad data, impossible resources, unreachable tracking server) print one
line and exit with code 2; nothing already computed is lost.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from search.errors import USER_ERRORS
from search.strategies import strategy_names

DESCRIPTION = """Search image-augmentation policies: Ray Tune trains child models in parallel,
each under a policy drawn by the searcher from the space; the child's validation accuracy is the
policy's reward; MLflow records every trial; the best policy is written as a plain
albumentations file."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m search.run", description=DESCRIPTION)
    p.add_argument("--space", default="digits",
                   help="built-in space name (digits, cifar10, cifar100, svhn) or a path to a "
                        "space YAML file (default: digits, offline)")
    p.add_argument("--searcher", default="tpe",
                   help=f"search strategy: {', '.join(strategy_names())} (default: tpe)")
    p.add_argument("--trials", type=int, help="number of child trainings (default: the space's)")
    p.add_argument("--concurrency", type=int,
                   help="trials running at once (default: as many as the resources allow)")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default: the space's)")
    p.add_argument("--gpus-per-trial", type=float,
                   help="GPUs per trial, fractional allowed: 0.25 runs 4 trials per GPU "
                        "(default: the space's)")
    p.add_argument("--epochs", type=int, help="child epochs per trial (default: the space's)")
    p.add_argument("--augmentation", choices=["auto", "albumentations", "batched"],
                   help="augment training images one at a time through albumentations, or whole "
                        "batches of tensors on the child's device (same meaning); auto: the "
                        "faster for the device (default: the space's child.augmentation)")
    p.add_argument("--data", help="an .npz file (x_train, y_train, x_test, y_test) or an image "
                                  "folder with one subfolder per class; overrides the dataset")
    p.add_argument("--data-dir", help="where built-in datasets are cached or downloaded")
    p.add_argument("--seed", type=int, default=0, help="search seed (default: 0)")
    p.add_argument("--output", help="output directory (default: ./augsearch-runs/<space>-"
                                    "<searcher>-<time>)")
    p.add_argument("--address", help="address of an existing Ray cluster (default: start a "
                                     "local one); 'auto' finds a running one")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted search in --output without repeating "
                        "finished trials")
    p.add_argument("--early-stop", choices=["asha"],
                   help="stop weak trials early with ASHA (tpe and random only)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: a SQLite store in the "
                                          "output directory)")
    p.add_argument("--experiment", help="MLflow experiment name (default: augsearch-<space>)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the space, print its summary and a few sampled policies, "
                        "start nothing")
    p.add_argument("--smoke-test", action="store_true",
                   help="a tiny real search (4 trials, 2 epochs, small splits) to check the set-up")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.dry_run:
            from search.summary import dry_run

            print(dry_run(args.space, args.searcher, seed=args.seed))
            return 0
        from search.api import search_from_args

        result = search_from_args(args)
        print(result.summary())
        return 0 if result.complete else 130
    except USER_ERRORS as err:
        print(f"augsearch: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("augsearch: interrupted; resume with the same command plus --resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
