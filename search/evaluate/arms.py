"""What an evaluation compares: a found policy (a file) or a baseline, as an `Arm`.

A policy file may be augsearch's own policy (YAML or JSON), a pbt schedule (replayed epoch by
epoch, scaled to the evaluation's budget) or a plain albumentations pipeline, used as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.errors import SearchError
from search.evaluate.baselines import AlbumentationsFn, ImageFn, baseline
from search.trials.schedule import schedule_policies
from spaces.policy import (
    POLICY_FILE_FIX,
    Policy,
    build_pipeline,
    identity_policy,
    policy_from_dict,
    read_policy_file,
    scale_schedule,
)
from spaces.schema import BaseAug, Space


@dataclass(frozen=True)
class Arm:
    """One way to train the child: a found policy (file) or a baseline.

    `augment()` gives a fresh per-image function that replaces the trainer's own pipeline
    (torchvision baselines, plain albumentations files), or None to use `base` + `policy`;
    `schedule(e)` gives a pbt schedule's policy of epoch e; `tta()` the per-image function
    test-time augmentation averages over (None: nothing random to average).
    """

    name: str
    kind: str  # policy | schedule | albumentations | baseline
    description: str
    base: BaseAug
    policy: Policy = field(default_factory=identity_policy)
    augment: Callable[[], ImageFn | None] = lambda: None
    tta: Callable[[], ImageFn | None] = lambda: None
    schedule: Callable[[int], Policy] | None = None
    source: str = ""

    @property
    def found(self) -> bool:
        """True for a policy a search found (compared against the baselines)."""
        return self.kind != "baseline"


def baseline_arm(name: str, space: Space) -> Arm:
    """The baseline `name` on the space's base augmentation and image size."""
    b = baseline(name, space.child.base_augmentation)
    size = space.dataset.image_size
    return Arm(b.name, "baseline", b.description, b.base, b.policy,
               augment=lambda: b.augment(size), tta=lambda: b.tta(size))


def policy_arm(label: str, path: str | Path, space: Space, epochs: int) -> Arm:
    """An arm from a policy file: augsearch YAML/JSON, a pbt schedule or albumentations JSON."""
    path = Path(path)
    data = read_policy_file(path)
    fmt = "json" if path.suffix == ".json" else "yaml"
    base, size = space.child.base_augmentation, space.dataset.image_size
    kind = data.get("format")
    if kind == "augsearch-policy":
        policy = policy_from_dict(data, str(path))
        text = policy.describe().replace("\n", " | ")
        return Arm(label, "policy", f"{path.name}: base + {text}", base, policy,
                   tta=lambda: _pipeline_fn(policy, base, size), source=str(path))
    if kind == "augsearch-schedule":
        at, entries = _schedule(data, path, space, epochs)
        last = at(epochs - 1)
        starts = ", ".join(str(start) for start, _ in entries)
        return Arm(label, "schedule", f"{path.name}: pbt schedule of {len(entries)} policies "
                   f"(from epochs {starts} of {epochs})", base, at(0), schedule=at,
                   tta=lambda: _pipeline_fn(last, base, size), source=str(path))
    if "transform" in data and "__version__" in data:
        count = len(_albumentations(path, fmt).transforms)

        def fresh() -> ImageFn:
            return AlbumentationsFn(_albumentations(path, fmt))

        return Arm(label, "albumentations", f"{path.name}: albumentations pipeline of {count} "
                   f"transforms, used as is (its own crop/flip)", base, identity_policy(),
                   augment=fresh, tta=fresh, source=str(path))
    raise SearchError(f"{path}: not a policy file; expected an augsearch policy "
                      f"(format: augsearch-policy), a pbt schedule (format: augsearch-schedule) "
                      f"or an albumentations pipeline saved with albumentations.save; "
                      f"{POLICY_FILE_FIX}")


def _albumentations(path: Path, fmt: str) -> Any:
    import albumentations as A

    try:
        return A.load(str(path), data_format=fmt)
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise SearchError(f"{path}: albumentations cannot load this pipeline ({err!r}); save it "
                          f"with albumentations.save") from None


def _pipeline_fn(policy: Policy, base: BaseAug, size: int) -> ImageFn | None:
    pipeline = build_pipeline(policy, base, size)
    return AlbumentationsFn(pipeline) if pipeline.transforms else None


def _schedule(data: dict[str, Any], path: Path, space: Space, epochs: int
              ) -> tuple[Callable[[int], Policy], list[tuple[int, dict[str, Any]]]]:
    try:
        total = int(data["epochs"])
        entries = [(int(e["epochs"][0]), dict(e["config"])) for e in data["entries"]]
    except (KeyError, TypeError, ValueError, IndexError):
        raise SearchError(f"{path}: a schedule needs 'epochs' and 'entries' of "
                          f"{{epochs: [start, end], config: {{...}}}}; this one is incomplete; "
                          f"pass the schedule.json a pbt search wrote") from None
    if not entries or total < 1:
        raise SearchError(f"{path}: the schedule holds no policy; pass the schedule.json a pbt "
                          f"search wrote")
    scaled = scale_schedule(sorted(entries, key=lambda e: e[0]), total, epochs)
    try:
        return schedule_policies(space, scaled), scaled
    except (KeyError, ValueError, TypeError) as err:
        raise SearchError(f"{path}: the schedule's policies do not fit space '{space.name}' "
                          f"(missing or unknown {err}); pass --space with the space the search "
                          f"used (its space.yaml)") from None
