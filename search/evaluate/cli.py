"""Command line: `python -m search.evaluate --policy runs/c10/best_policy.yaml`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from search.errors import run_cli
from search.evaluate.baselines import BASELINES
from search.evaluate.plan import TTA_COPIES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m search.evaluate",
        description="Retrain the child from scratch on all training images under a found "
                    "policy and under standard baselines (same budget, same seeds) and compare "
                    "their accuracy on the test set the search never touched.")
    p.add_argument("--policy", action="append", default=[], metavar="[LABEL=]FILE",
                   help="best_policy.yaml (augsearch), best_policy.json (plain albumentations) "
                        "or schedule.json (pbt); repeat to compare several")
    p.add_argument("--space", help="built-in space name or space YAML (default: the space.yaml "
                                   "beside the policy, else the policy's provenance)")
    p.add_argument("--data", help="an .npz file or image folder overriding the space's dataset")
    p.add_argument("--data-dir", help="where built-in datasets are cached or downloaded")
    p.add_argument("--baselines", default=",".join(BASELINES),
                   help=f"comma-separated, from {','.join(BASELINES)} (default: all; '' for "
                        f"none)")
    p.add_argument("--seeds", type=int, default=3,
                   help="seeds 0..N-1, the same for every arm (default: 3)")
    p.add_argument("--epochs", type=int, help="child epochs (default: the space's)")
    p.add_argument("--model", help="child model, e.g. wrn_28_10 for a final run (default: the "
                                   "space's)")
    p.add_argument("--tta", type=int, nargs="?", const=TTA_COPIES, default=0, metavar="K",
                   help=f"also report test-time augmentation: class probabilities averaged "
                        f"over K augmented copies of each test image (K default {TTA_COPIES})")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--workers", type=int, default=1,
                   help="trainings at a time, each in its own process (default: 1); on a CPU "
                        "machine, one per core with --threads 1 is the fastest")
    p.add_argument("--train-size", type=int,
                   help="train on this many training images instead of all: the space's "
                        "dataset.train_size evaluates at the budget the search trained at "
                        "(the same images, for a search with seed 0)")
    p.add_argument("--output", help="output directory (default: ./augsearch-runs/eval-<time>)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: a SQLite store in the "
                                          "output directory)")
    p.add_argument("--experiment", help="MLflow experiment (default: augsearch-<space>-eval)")
    return p



def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _run(args), interrupted="evaluation interrupted")


def _run(args: argparse.Namespace) -> int:
    from search.evaluate.runner import evaluate

    result = evaluate(args.policy, space=args.space, data=args.data, data_dir=args.data_dir,
                      baselines=args.baselines, seeds=args.seeds, epochs=args.epochs,
                      model=args.model, tta=args.tta, threads=args.threads, output=args.output,
                      tracking_uri=args.tracking_uri, experiment=args.experiment,
                      workers=args.workers, train_size=args.train_size)
    print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
