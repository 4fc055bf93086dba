"""What an evaluation is asked, checked before anything is created, and the plan every arm
shares: the child, the budget, all training images against the test set, the seeds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.errors import SearchError
from search.evaluate.baselines import BASELINES
from spaces.errors import SpaceError
from spaces.policy import read_policy_file
from spaces.schema import CHILD_MODELS, Space, load_space, parse_space

if TYPE_CHECKING:
    from children.datasets import Arrays, Splits
    from spaces.schema import ChildSpec, RewardSpec

TTA_COPIES = 8


@dataclass(frozen=True)
class EvaluateOptions:
    """Everything an evaluation can be told besides the policy files."""

    space: str | Path | Space | None = None
    data: str | None = None
    data_dir: str | None = None
    baselines: str | Sequence[str] = BASELINES
    seeds: int = 3
    epochs: int | None = None
    model: str | None = None
    tta: int = 0  # test-time augmentation copies (0 = off)
    threads: int | None = None
    workers: int = 1  # trainings at a time, each in its own process
    train_size: int | None = None  # train on this many images (the search's own budget)
    output: str | Path | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    quiet: bool = False


@dataclass(frozen=True)
class Plan:
    """What every arm shares: the child, the budget, the data, the seeds."""

    space: Space
    child: ChildSpec
    reward: RewardSpec
    splits: Splits
    epochs: int
    seeds: tuple[int, ...]
    tta: int
    threads: int | None


def policy_sources(policies: Any) -> list[tuple[str, Path]]:
    """(label, path) pairs from a path, a list of `[LABEL=]PATH` strings or a label → path map."""
    if policies is None:
        return []
    if isinstance(policies, (str, Path)):
        policies = [policies]
    if not isinstance(policies, Mapping):
        policies = list(policies)
    if isinstance(policies, Mapping):
        pairs = [(str(k), Path(v)) for k, v in policies.items()]
    else:
        pairs = []
        for k, item in enumerate(policies, 1):
            text = str(item)
            label = "policy" if len(policies) == 1 else f"policy{k}"
            if "=" in text and not Path(text).exists():
                label, text = text.split("=", 1)
            pairs.append((label.strip(), Path(text)))
    labels = [label for label, _ in pairs]
    bad = [label for label in labels if not label or label in BASELINES]
    if bad or len(set(labels)) != len(labels):
        raise SearchError(f"policy labels must be distinct, non-empty and not a baseline name, "
                          f"got {labels}; write --policy LABEL=FILE")
    return pairs


def resolve_space(space: str | Path | Space | None, sources: list[tuple[str, Path]]) -> Space:
    """--space, else the space.yaml a search left beside the policy, else its provenance."""
    if isinstance(space, Space):
        return space
    if space is not None:
        return load_space(space)
    for _, path in sources:
        beside = path.parent / "space.yaml"
        if beside.is_file():
            return parse_space(beside.read_text(encoding="utf-8"), str(beside))
    for _, path in sources:
        name = (read_policy_file(path).get("provenance") or {}).get("space")
        if name:
            try:
                return load_space(str(name))
            except SpaceError:
                break
    if sources:
        raise SearchError(f"{sources[0][1]}: cannot tell which space this policy was searched "
                          f"in (no space.yaml beside it); pass --space NAME|PATH")
    return load_space("digits")


def load_data(space: Space, opts: EvaluateOptions) -> Splits:
    """Every training image of the dataset against its test set, checked against the space.

    The full training split is the search's train subset, validation pool and audit set
    together. The trainer's per-epoch "validation" runs on the test set, so its final value is
    the plain test accuracy; nothing selects on it (the budget is fixed). Both must hold the
    classes the space declares, as a search's splits must (`children.classes.check_parts`).
    """
    from children.classes import Part, check_parts
    from children.datasets import Arrays, Splits, load_dataset

    data = load_dataset(space.dataset, data=opts.data, data_dir=opts.data_dir)
    test = Arrays(data.x_test, data.y_test)
    train = Arrays(data.x_train, data.y_train)
    if opts.train_size is not None:
        train = _subset(train, opts.train_size)
    sized = opts.train_size is not None
    check_parts(data, space.dataset, [
        Part("--train-size subset" if sized else "training set", train,
             data.y_train, "y_train", "--train-size" if sized else None),
        Part("test set", test, data.y_test, "y_test", None)])
    return Splits(train, test, Arrays(data.x_train[:0], data.y_train[:0]), test,
                  space.dataset.num_classes)


def _subset(train: Arrays, size: int) -> Arrays:
    """The first `size` images of the stratified order a search with seed 0 draws its train
    split from: `--train-size` equal to the space's `dataset.train_size` trains on exactly the
    images that search trained its children on."""
    from children.datasets import Arrays, stratified_order

    if size > len(train):
        raise SearchError(f"--train-size {size} is more than the {len(train)} training images; "
                          f"pass at most {len(train)}, or drop it to train on all of them")
    index = stratified_order(train.y, 0)[:size]
    return Arrays(train.x[index], train.y[index])


def make_plan(space: Space, opts: EvaluateOptions, splits: Splits | None = None) -> Plan:
    """The child with --epochs/--model applied, trained on all training images, tested."""
    child = evaluation_child(space, opts)
    splits = splits if splits is not None else load_data(space, opts)
    reward = space.reward.model_copy(update={"val_sample_size": len(splits.test),
                                             "last_epochs": 1, "max_train_val_gap": None})
    return Plan(space, child, reward, splits, child.epochs, tuple(range(opts.seeds)), opts.tta,
                opts.threads)


def evaluation_child(space: Space, opts: EvaluateOptions) -> ChildSpec:
    """The space's child with --model and --epochs applied, checked (a self-supervised space's
    views are refused: supervised children do not measure them)."""
    if space.reward.self_supervised:
        raise SearchError(f"space {space.name} searched views for contrastive pre-training "
                          f"(reward.kind: self_supervised), which supervised children do not "
                          f"measure; evaluate them with bench/ssl_quality.py, or pass --space "
                          f"with a supervised space to test the policy as a supervised "
                          f"augmentation")
    check_counts(opts)
    epochs = opts.epochs if opts.epochs is not None else space.child.epochs
    model = opts.model or space.child.model
    if model not in CHILD_MODELS:
        raise SearchError(f"--model {model!r} is unknown; known models: "
                          f"{', '.join(CHILD_MODELS)}")
    return space.child.model_copy(update={"model": model, "epochs": epochs})


def check_counts(opts: EvaluateOptions) -> None:
    """--seeds, --epochs, --tta and --threads: whole numbers in range, named by flag."""
    for flag, value, low in (("--seeds", opts.seeds, 1), ("--epochs", opts.epochs, 1),
                             ("--tta", opts.tta, 0), ("--threads", opts.threads, 1),
                             ("--workers", opts.workers, 1), ("--train-size", opts.train_size,
                                                              1)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise SearchError(f"{flag} must be a whole number, got {value!r}; pass one")
        if value < low:
            raise SearchError(f"{flag} must be at least {low}, got {value}; pass {low} or more")
    if opts.epochs is not None and opts.epochs > 1000:
        raise SearchError(f"--epochs must be at most 1000, got {opts.epochs}; pass fewer")
    if opts.data is not None and opts.data_dir is not None:
        raise SearchError("--data-dir has no effect with --data (it is where cifar10, cifar100 "
                          "and svhn are downloaded); drop one of them")
