"""What a search can be told besides its space and searcher, and the checks that name each flag.

Every check here is about one flag's own value and reports it by its command-line name
(`--concurrency must be at least 1, got 0`), before the value reaches the space, whose errors name
space keys instead.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from typing import Any

from search.errors import SearchError

DEFAULT_SPACE = "digits"
DEFAULT_SEARCHER = "tpe"
MAX_EPOCHS = 1000  # the space's limit on child.epochs
MAX_SEED = 2**32 - 1  # numpy's and Optuna's samplers take seeds in [0, 2**32 - 1]


@dataclass(frozen=True)
class SearchOptions:
    """Everything a search can be told besides its space and searcher (the CLI flags).

    None means "not given": the space's default applies, or on `resume` the interrupted
    search's own value.
    """

    trials: int | None = None
    concurrency: int | None = None
    cpus_per_trial: float | None = None
    gpus_per_trial: float | None = None
    cohort: int | None = None  # children trained together in one process (search.cohort)
    epochs: int | None = None
    augmentation: str | None = None  # auto | albumentations | batched (child.augmentation)
    data: str | None = None
    data_dir: str | None = None
    seed: int | None = None
    output: Any = None  # str | Path
    address: str | None = None
    resume: bool = False
    early_stop: str | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    smoke_test: bool = False
    confirm: int | None = None  # top-k policies retrained after the search (0: off)
    confirm_seeds: int | None = None  # more seeds each confirmed policy is retrained with
    headroom_seeds: int | None = None  # fresh seeds of the headroom check (0: off)
    headroom_only: bool = False  # stop after the headroom check
    stop_without_headroom: bool = False  # stop after it unless it shows headroom
    max_failures: int = 2
    crash_once: str | None = None  # test hook: a worker dies once (TrialConfig.crash_once)

    @classmethod
    def build(cls, options: dict[str, Any]) -> SearchOptions:
        """Options from keyword arguments; an unknown keyword lists the valid ones."""
        unknown = sorted(set(options) - set(option_names()))
        if unknown:
            raise SearchError(f"unknown option(s) {', '.join(unknown)}; valid options: "
                              f"{', '.join(option_names())}")
        return cls(**options)


def option_names() -> list[str]:
    return [f.name for f in fields(SearchOptions)]


def flag(name: str) -> str:
    """The command-line flag of an option: `cpus_per_trial` -> `--cpus-per-trial`."""
    return "--" + name.replace("_", "-")


# (option, kind, lowest allowed, lowest is allowed itself)
_NUMBERS: tuple[tuple[str, type, float, bool], ...] = (
    ("trials", int, 1, True), ("concurrency", int, 1, True), ("epochs", int, 1, True),
    ("seed", int, 0, True), ("cpus_per_trial", float, 0, False),
    ("gpus_per_trial", float, 0, True), ("max_failures", int, 0, True),
    ("confirm", int, 0, True), ("confirm_seeds", int, 1, True), ("cohort", int, 1, True),
    ("headroom_seeds", int, 0, True),
)
_TEXTS = ("data", "data_dir", "address", "tracking_uri", "experiment", "early_stop",
          "augmentation")
EARLY_STOPPERS = ("asha",)
AUGMENTATION_PATHS = ("auto", "albumentations", "batched")


def check_options(opts: SearchOptions) -> None:
    """Each given option's own value, checked; errors name the flag and the fix."""
    for name, kind, low, inclusive in _NUMBERS:
        value = getattr(opts, name)
        if value is not None:
            _check_number(name, value, kind, low, inclusive)
    if opts.seed is not None and opts.seed > MAX_SEED:
        raise SearchError(f"--seed must lie in [0, 2**32 - 1] (0..{MAX_SEED}), got {opts.seed}; "
                          f"pass a seed in that range, or drop --seed to use the default")
    if opts.epochs is not None and opts.epochs > MAX_EPOCHS:
        raise SearchError(f"--epochs must be at most {MAX_EPOCHS}, got {opts.epochs}; pass "
                          f"fewer epochs")
    for name in _TEXTS:
        value = getattr(opts, name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise SearchError(f"{flag(name)} must be a non-empty text, got {value!r}; "
                              f"{_fix(name)}")
    if opts.augmentation is not None and opts.augmentation not in AUGMENTATION_PATHS:
        raise SearchError(f"--augmentation {opts.augmentation!r} is unknown; choose one of: "
                          f"{', '.join(AUGMENTATION_PATHS)}")
    if opts.early_stop is not None and opts.early_stop not in EARLY_STOPPERS:
        raise SearchError(f"--early-stop {opts.early_stop!r} is unknown; choose one of: "
                          f"{', '.join(EARLY_STOPPERS)}")
    if opts.data is not None and opts.data_dir is not None:
        raise SearchError("--data-dir has no effect with --data (it is where cifar10, cifar100 "
                          "and svhn are downloaded); drop one of them")


def _check_number(name: str, value: Any, kind: type, low: float, inclusive: bool) -> None:
    whole = kind is int
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or (
            whole and not isinstance(value, numbers.Integral)):
        what = "a whole number" if whole else "a number"
        raise SearchError(f"{flag(name)} must be {what}, got {value!r}; {_fix(name)}")
    if not math.isfinite(value):
        raise SearchError(f"{flag(name)} must be a finite number, got {value!r}; {_fix(name)}")
    if value < low or (value == low and not inclusive):
        bound = f"at least {low:g}" if inclusive else f"more than {low:g}"
        raise SearchError(f"{flag(name)} must be {bound}, got {value:g}; {_fix(name, bound)}")


def _fix(name: str, bound: str = "") -> str:
    value = f"a value {bound}" if bound else "a value"
    return f"pass {value}, or drop {flag(name)} to use the default"
