"""Whether each set of images drawn from the data holds the classes the space declares.

A child trained or scored on fewer classes than `dataset.num_classes` measures nothing (labels
all of one class give every trial reward 1.0, and every evaluated arm test accuracy 1.0), so a
search (`check_classes` on its splits) and an evaluation (`check_parts` on its training images
and test set) refuse such data before anything is created, with the same messages. Lists of
class ids in a message are capped (`class_ids`), so it stays one short line for 10,000 classes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from children.errors import DataError

if TYPE_CHECKING:
    from children.datasets import Arrays, ImageData, Splits
    from spaces.schema import DatasetSpec

__all__ = ["EVERY_CLASS_PER_CLASS", "Part", "capped_names", "check_classes", "check_parts",
           "class_ids"]

# A split with at least this many images per declared class must hold every class: a stratified
# draw that large includes each class of the data, but for one far rarer than the others.
EVERY_CLASS_PER_CLASS = 3
SHOWN = 5  # the runs of ids (or names) a message lists before "… (N more)"


class Part(NamedTuple):
    """A set of images drawn from the data, as the messages name it."""

    name: str  # "train split", "test set", ...
    arrays: Arrays
    source: np.ndarray  # the labels it was drawn from
    key: str  # their key in the data: y_train or y_test
    size_key: str | None  # what sets its size (dataset.train_size, --train-size); None: all


def check_classes(data: ImageData, splits: Splits, spec: DatasetSpec) -> None:
    """Refuse a search split that holds fewer classes than `spec.num_classes` declares.

    Every class must have images in the data a split is drawn from (`y_train` for the train
    split, validation pool and audit set; `y_test` for the test set). A split of at least
    `EVERY_CLASS_PER_CLASS` images per class must also hold every class; a smaller one may miss
    some by chance. Raises DataError naming the split, the classes present and the fix.
    """
    if not data.labelled:
        return  # self-supervised images without labels: nothing to check
    if splits.labelled:
        _check_labelled(splits, spec, data.origin or spec.name)
    check_parts(data, spec, [
        Part("train split", splits.train, data.y_train, "y_train", "dataset.train_size"),
        Part("validation pool", splits.val_pool, data.y_train, "y_train",
             "dataset.val_pool_size"),
        Part("audit set", splits.audit, data.y_train, "y_train", "dataset.audit_size"),
        Part("test set", splits.test, data.y_test, "y_test", None)])


def check_parts(data: ImageData, spec: DatasetSpec, parts: Sequence[Part]) -> None:
    """`check_classes`'s rule on any sets of images drawn from `data` (an empty one passes)."""
    if not data.labelled:
        return
    origin = data.origin or spec.name
    for part in parts:
        _check_part(part, spec.num_classes, origin)


def _check_part(part: Part, n: int, origin: str) -> None:
    present = {int(c) for c in np.unique(part.arrays.y)}
    missing = [c for c in range(n) if c not in present]
    if not len(part.arrays) or not missing:
        return
    held = (f"the {part.name} ({len(part.arrays)} images) holds {len(present)} of the {n} "
            f"classes dataset.num_classes declares (present: {class_ids(present)})")
    had = {int(c) for c in np.unique(part.source)}
    absent = [c for c in missing if c not in had]
    plural = "es" if len(absent if absent else missing) > 1 else ""
    if absent:
        fix = "add images of every class"
        if len(had) >= 2:
            fix += (f", or set dataset.num_classes to {len(had)}"
                    + ("" if had == set(range(len(had))) else
                       f" and relabel the classes 0..{len(had) - 1}"))
        raise DataError(f"{origin}: {held}; {part.key} has no image of class{plural} "
                        f"{class_ids(absent)}: {fix}")
    if len(part.arrays) >= EVERY_CLASS_PER_CLASS * n:
        counts = _capped([f"class {c}: {int((part.source == c).sum())}" for c in missing[:5]],
                         len(missing) - 5)
        raise DataError(f"{origin}: {held}; {part.key} has too few images of the missing "
                        f"class{plural} ({counts}) for a stratified split to include them; add "
                        f"images of them{f' or raise {part.size_key}' if part.size_key else ''}")


def _check_labelled(splits: Splits, spec: DatasetSpec, origin: str) -> None:
    """Refuse a labelled set (dataset.labelled_size) without every class: a probe cannot
    predict a class it was never shown."""
    y = splits.labelled_set().y
    present = {int(c) for c in np.unique(y)}
    missing = [c for c in range(spec.num_classes) if c not in present]
    if missing:
        need = (f"raise dataset.labelled_size (now {len(y)}) to at least {spec.num_classes} "
                if len(y) < spec.num_classes else "raise dataset.labelled_size ")
        raise DataError(f"{origin}: the labelled set (dataset.labelled_size {len(y)}) holds "
                        f"{len(present)} of the {spec.num_classes} classes (missing: "
                        f"{class_ids(missing)}); a probe cannot predict a class it never saw; "
                        f"{need}or add images of the missing classes")


def class_ids(values: Iterable[int]) -> str:
    """Class ids as runs, the first `SHOWN` of them: `0-3, 7, 9`, or
    `1, 3, 5, 7, 9, … (4995 more)`."""
    runs: list[list[int]] = []
    for v in sorted(values):
        if runs and v == runs[-1][-1] + 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    shown = [str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs[:SHOWN]]
    return _capped(shown, sum(len(r) for r in runs[SHOWN:]))


def _capped(shown: list[str], more: int) -> str:
    return ", ".join(shown) + (f", … ({more} more)" if more > 0 else "")


def capped_names(names: Sequence[str]) -> str:
    """Names (class folders) for a message: the first `SHOWN`, then "… (N more)"."""
    return _capped(list(names[:SHOWN]), len(names) - SHOWN)
