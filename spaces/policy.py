"""Policies as data: sub-policies of (op name, magnitude, probability), or ops drawn per image
(`spaces.drawn.Draw`: RandAugment, TrivialAugment), plus batch ops.

A policy is stored by op *name*, never by index, in a versioned format (JSON or YAML). Version 2
added ops drawn per image; a policy without them is still written as version 1, byte for byte
what earlier versions wrote (older readers load it, and an explicit policy's seed, which hashes
its dict, stays). The same `build_pipeline` builds the albumentations pipeline the children
train with and the one exported for users, so what was searched is exactly what is shipped.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from spaces.drawn import Draw, draw_params, draw_text, draw_to_dict, draw_transform, parse_draw
from spaces.drawn import DrawnOp as DrawnOp  # re-exported: a policy's parts live here
from spaces.errors import SpaceError, loop_message, symlink_loop
from spaces.ops import build_op, get_op

if TYPE_CHECKING:
    import albumentations as A

    from spaces.schema import BaseAug, Space

FORMAT_VERSION = 2  # the newest format this reads and writes (2: ops drawn per image)
READS = (1, 2)


@dataclass(frozen=True)
class Op:
    """One op of a sub-policy: applied with `probability` at strength `magnitude` in [0, 1]."""

    name: str
    magnitude: float = 0.0
    probability: float = 1.0


@dataclass(frozen=True)
class SubPolicy:
    """Ops applied in sequence; a policy picks one sub-policy per image uniformly."""

    ops: tuple[Op, ...]


@dataclass(frozen=True)
class BatchOps:
    """Batch-level ops applied to training batches (0 = off)."""

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    sample_pairing: float = 0.0


@dataclass(frozen=True)
class Policy:
    """An augmentation policy: sub-policies (one picked per image) or ops drawn per image
    (`draw`), never both; batch ops; where it came from. `version` is the format version it was
    read from (a policy is written in the lowest version that holds it: `written_version`)."""

    sub_policies: tuple[SubPolicy, ...] = ()
    batch: BatchOps = BatchOps()
    provenance: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    version: int = field(default=FORMAT_VERSION, compare=False)
    draw: Draw | None = None

    def __post_init__(self) -> None:
        if self.draw is not None and self.sub_policies:
            raise ValueError("a policy holds sub-policies or ops drawn per image, not both")

    def op_names(self) -> list[str]:
        """The distinct op names the policy may apply, in order of first appearance."""
        ops = self.draw.ops if self.draw is not None else [
            op for sub in self.sub_policies for op in sub.ops]
        return list(dict.fromkeys(op.name for op in ops))

    def describe(self) -> str:
        """One readable line per sub-policy, e.g. `Rotate(m=0.40,p=0.70) -> Invert(p=0.20)`, or
        the draw and one line per op it may draw."""
        lines = [" -> ".join(_op_text(op) for op in sub.ops) for sub in self.sub_policies]
        if self.draw is not None:
            lines = draw_text(self.draw)
        batch = {k: v for k, v in asdict(self.batch).items() if v}
        if batch:
            lines.append("batch: " + ", ".join(f"{k}={v:.2f}" for k, v in batch.items()))
        return "\n".join(lines) or "identity"


def _op_text(op: Op) -> str:
    if get_op(op.name).has_magnitude:
        return f"{op.name}(m={op.magnitude:.2f},p={op.probability:.2f})"
    return f"{op.name}(p={op.probability:.2f})"


def identity_policy() -> Policy:
    """The policy that adds nothing to the base augmentation."""
    return Policy()


# ---------------------------------------------------------------- dict / JSON / YAML round trip


def written_version(policy: Policy) -> int:
    """The lowest format version that holds the policy: 2 with ops drawn per image, else 1."""
    return 1 if policy.draw is None else 2


def policy_to_dict(policy: Policy) -> dict[str, Any]:
    """The versioned, name-keyed dict form of a policy."""
    body: dict[str, Any] = {"sub_policies": [
        [{"op": o.name, "magnitude": o.magnitude, "probability": o.probability} for o in s.ops]
        for s in policy.sub_policies
    ]} if policy.draw is None else {"draw": draw_to_dict(policy.draw)}
    return {
        "format": "augsearch-policy",
        "version": written_version(policy),
        **body,
        "batch": asdict(policy.batch),
        "provenance": dict(policy.provenance),
    }


def policy_from_dict(data: Any, source: str = "policy") -> Policy:
    """Parse and validate the dict form; errors name `source` and the key path."""
    if not isinstance(data, dict) or data.get("format") != "augsearch-policy":
        raise SpaceError(f"{source}: not an augsearch policy (expected 'format: augsearch-policy')")
    version = data.get("version")
    if version not in READS or isinstance(version, bool):
        raise SpaceError(f"{source}: policy format version {version!r} is not supported; "
                         f"this augsearch reads versions {', '.join(map(str, READS))}")
    draw = None
    if data.get("draw") is not None:
        if version < 2 or data.get("sub_policies"):
            raise SpaceError(f"{source}: draw (ops drawn per image) needs version 2 and no "
                             f"sub_policies; write one or the other")
        draw = parse_draw(data["draw"], f"{source}: draw")
    subs = []
    for i, raw_sub in enumerate(_list(data.get("sub_policies", []), f"{source}: sub_policies")):
        where = f"{source}: sub_policies[{i}]"
        subs.append(SubPolicy(tuple(
            _parse_op(raw, f"{where}[{j}]") for j, raw in enumerate(_list(raw_sub, where))
        )))
    batch = _parse_batch(data.get("batch") or {}, f"{source}: batch")
    return Policy(tuple(subs), batch, dict(data.get("provenance") or {}), version, draw)


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise SpaceError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _parse_op(raw: Any, where: str) -> Op:
    if not isinstance(raw, dict) or "op" not in raw:
        raise SpaceError(f"{where}: expected a mapping with keys op, magnitude, probability")
    unknown = set(raw) - {"op", "magnitude", "probability"}
    if unknown:
        raise SpaceError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: op, magnitude, "
                         f"probability")
    try:
        op = Op(get_op(str(raw["op"])).name, float(raw.get("magnitude", 0.0)),
                float(raw.get("probability", 1.0)))
        get_op(op.name).build(op.magnitude, op.probability)
    except SpaceError as err:
        raise SpaceError(f"{where}: {err}") from None
    except (TypeError, ValueError) as err:
        raise SpaceError(f"{where}: {err}") from None
    return op


def _parse_batch(raw: Any, where: str) -> BatchOps:
    if not isinstance(raw, dict) or set(raw) - {"mixup_alpha", "cutmix_alpha", "sample_pairing"}:
        raise SpaceError(f"{where}: expected keys mixup_alpha, cutmix_alpha, sample_pairing")
    values = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpaceError(f"{where}.{key}: expected a number, got {value!r}; write a value "
                             f"such as 0.2 (0 = off)")
        values[key] = float(value)
    batch = BatchOps(**values)
    if min(asdict(batch).values()) < 0 or batch.sample_pairing > 1:
        raise SpaceError(f"{where}: batch values must be >= 0 and sample_pairing <= 1, "
                         f"got {asdict(batch)}")
    return batch


def save_policy(policy: Policy, path: str | Path) -> Path:
    """Write augsearch's own format; `.json` gives JSON, anything else YAML."""
    path = Path(path)
    data = policy_to_dict(policy)
    if path.suffix == ".json":
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


POLICY_FILE_FIX = "pass the best_policy.yaml, best_policy.json or schedule.json a search wrote"


def read_policy_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a policy file (JSON for `.json`, else YAML), checked only for being one.

    Every policy-like file (augsearch policy, pbt schedule, albumentations pipeline) is read here,
    so each problem with the file itself gets one message naming the file and the fix.
    """
    path = Path(path)
    fmt = "json" if path.suffix == ".json" else "yaml"
    if symlink_loop(path):
        raise SpaceError(loop_message(path, "policy file"))
    if not path.is_file():
        raise SpaceError(f"{path}: no such policy file; {POLICY_FILE_FIX}")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    except OSError as err:
        raise SpaceError(f"{path}: cannot read the policy file ({err.strerror}); check its "
                         f"permissions") from None
    except UnicodeDecodeError:
        raise SpaceError(f"{path}: not UTF-8 text (a binary file?); {POLICY_FILE_FIX}") from None
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise SpaceError(f"{path}: not valid {fmt.upper()}: {str(err).splitlines()[0]}; "
                         f"{POLICY_FILE_FIX}") from None
    if not isinstance(data, dict):
        raise SpaceError(f"{path}: not a policy file (a {type(data).__name__}, not a mapping); "
                         f"{POLICY_FILE_FIX}")
    if "format" not in data and {"dataset", "child", "policy"} <= data.keys():
        raise SpaceError(f"{path}: not a policy file but a search space (it has dataset, child "
                         f"and policy keys); pass it as --space, and as --policy the "
                         f"best_policy.yaml, best_policy.json or schedule.json a search wrote")
    return data


def load_policy(path: str | Path) -> Policy:
    """Read a policy written by `save_policy` (JSON or YAML)."""
    return policy_from_dict(read_policy_file(path), str(path))


# ---------------------------------------------------------------- pbt schedules

_Entry = TypeVar("_Entry")


def scale_schedule(entries: list[tuple[int, _Entry]], from_epochs: int,
                   to_epochs: int) -> list[tuple[int, _Entry]]:
    """Map a schedule's first epochs from `from_epochs` to `to_epochs`, proportionally.

    A schedule found over a search's short trainings is replayed over a longer one (an
    evaluation, a user's final training) at the same share of the run; the first entry always
    starts at epoch 0.
    """
    scaled = [(math.floor(start * to_epochs / from_epochs + 0.5), cfg) for start, cfg in entries]
    return [(0, cfg) if k == 0 else (start, cfg) for k, (start, cfg) in enumerate(scaled)]


SCHEDULE_FIX = "pass the schedule.json a pbt search wrote"


def schedule_from_dict(data: dict[str, Any], source: str = "schedule"
                       ) -> tuple[int, list[tuple[int, Policy]]]:
    """A pbt `schedule.json`'s length in epochs and its (first epoch, policy) entries, sorted,
    read from the policies the file spells out (no space needed to decode them)."""
    try:
        total = int(data["epochs"])
        raw = [(int(e["epochs"][0]), e["policy"]) for e in data["entries"]]
    except (KeyError, TypeError, ValueError, IndexError):
        raise SpaceError(f"{source}: a schedule needs 'epochs' and 'entries' of {{epochs: "
                         f"[start, end], policy: {{...}}}}; this one is incomplete; "
                         f"{SCHEDULE_FIX}") from None
    if not raw or total < 1:
        raise SpaceError(f"{source}: the schedule holds no policy; {SCHEDULE_FIX}")
    entries = [(start, policy_from_dict(policy, f"{source}: entries[{k}].policy"))
               for k, (start, policy) in enumerate(raw)]
    return total, sorted(entries, key=lambda e: e[0])


def policy_space(path: str | Path) -> Space | None:
    """The space a policy file was searched in: the `space.yaml` a search leaves beside it,
    else the built-in space its provenance names; None when neither tells."""
    from spaces.schema import load_space, parse_space

    path = Path(path)
    beside = path.parent / "space.yaml"
    if beside.is_file():
        return parse_space(beside.read_text(encoding="utf-8"), str(beside))
    name = (read_policy_file(path).get("provenance") or {}).get("space")
    if not name:
        return None
    try:
        return load_space(str(name))
    except SpaceError:
        return None


def flat_params(policy: Policy) -> dict[str, Any]:
    """Flat key → value view for trackers: `sp0.op1.name`, `sp0.op1.magnitude`, ..., or for
    ops drawn per image `draw.n`, `draw.op3.name`, ..."""
    out: dict[str, Any] = {} if policy.draw is None else draw_params(policy.draw)
    for i, sub in enumerate(policy.sub_policies):
        for j, op in enumerate(sub.ops):
            out[f"sp{i}.op{j}.name"] = op.name
            out[f"sp{i}.op{j}.magnitude"] = round(op.magnitude, 4)
            out[f"sp{i}.op{j}.probability"] = round(op.probability, 4)
    out.update({f"batch.{k}": round(v, 4) for k, v in asdict(policy.batch).items()})
    return out


# ---------------------------------------------------------------- albumentations pipeline


def build_pipeline(
    policy: Policy, base: BaseAug | None, image_size: int, seed: int | None = None
) -> A.Compose:
    """The albumentations pipeline for training and export: base crop/flip, then the policy.

    Each image passes through one sub-policy picked uniformly (`OneOf` over `Sequential`), or
    through the ops drawn for it (`spaces.drawn.draw_transform`).
    """
    import albumentations as A

    steps: list[Any] = []
    if base is not None and base.crop and base.crop_padding > 0:
        steps.append(A.Pad(padding=base.crop_padding, border_mode=0, fill=0, p=1.0))
        steps.append(A.RandomCrop(height=image_size, width=image_size, p=1.0))
    if base is not None and base.flip:
        steps.append(A.HorizontalFlip(p=0.5))
    size = (image_size, image_size)  # ops that resize (RandomResizedCrop) keep it
    subs = [
        A.Sequential([build_op(o.name, o.magnitude, o.probability, size) for o in s.ops], p=1.0)
        for s in policy.sub_policies if s.ops
    ]
    if subs:
        steps.append(A.OneOf(subs, p=1.0))
    if policy.draw is not None:
        steps.append(draw_transform(policy.draw, size))
    return A.Compose(steps, p=1.0, seed=seed, strict=True)


def export_albumentations(
    policy: Policy, base: BaseAug | None, image_size: int, path: str | Path
) -> Path:
    """Save the pipeline with `albumentations.save`; plain `albumentations.load` reads it back.

    Batch ops (mixup, cutmix, sample pairing) act on batches, not images, and cannot be
    expressed in albumentations; they are kept in augsearch's own policy file.
    """
    import albumentations as A

    path = Path(path)
    fmt = "json" if path.suffix == ".json" else "yaml"
    A.save(build_pipeline(policy, base, image_size), str(path), data_format=fmt)
    return path
