"""A trial's config: the search dimensions a strategy suggested, and a typed `TrialConfig` of
what the orchestration adds (reference arm, explicit policy, replicate, replayed schedule, fold,
stage, candidate, test hook).

Tune carries a trial's config as one flat dict, so the `TrialConfig` travels in it under private
keys (`_`-prefixed; search dimensions never start with `_`). This module is the only code that
knows those keys: everything else reads a config with `decode`, writes one with `encode` or
`with_fields`, and takes its search dimensions with `dimensions`. It also holds one way a config
wraps others: a fixed run's whole config as one value of Tune's grid (`fixed_runs`, lifted back
by `flat`); a cohort's member configs travel under `_cohort`, which `search.trials.cohorts`
writes and reads.

`policy_config` and `seed_config` are the parts of a config that name its policy and its
augmentation draws; `search.trials.seeds` hashes the latter, so their keys and values are kept
exactly as written (a changed key would change every seed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

__all__ = ["TrialConfig", "decode", "dimensions", "encode", "fixed_runs", "flat",
           "policy_config", "seed_config", "updated", "with_fields"]


@dataclass(frozen=True)
class TrialConfig:
    """What the orchestration adds to a trial's search dimensions (defaults: a searched policy
    of the search itself)."""

    reference: str = ""  # a reference arm's name (search.trials.references); "" when searched
    policy: dict[str, Any] | None = None  # a policy given explicitly (policy_to_dict): one that
    # is no point of the searched space, such as density matching's merge
    replicate: int = 0  # 0: the search's common seed; 1..r: the confirmation's fresh replicates
    schedule: list[list[Any]] | None = None  # a PBT schedule to replay: [[first epoch, config]]
    fold: int | None = None  # density matching's fold stage: train fold k's model
    stage: str = ""  # the stage after the search that runs it ("confirm"), "" in the search
    candidate: str = ""  # the confirmation candidate it measures
    crash_once: str = ""  # test hook: a marker file's path; the worker dies once after epoch 1


_KEYS = {f.name: f"_{f.name}" for f in fields(TrialConfig)}
_DEFAULT = TrialConfig()
_FIXED = "_run"  # a fixed run's whole config, as one value of Tune's grid


def _private(key: str) -> bool:
    return key.startswith("_")


def decode(config: Mapping[str, Any]) -> TrialConfig:
    """The `TrialConfig` a config carries (defaults for what it does not)."""
    fold = config.get(_KEYS["fold"])
    return TrialConfig(
        reference=str(config.get(_KEYS["reference"]) or ""),
        policy=config.get(_KEYS["policy"]) or None,
        replicate=int(config.get(_KEYS["replicate"]) or 0),
        schedule=config.get(_KEYS["schedule"]) or None,
        fold=None if fold is None else int(fold),
        stage=str(config.get(_KEYS["stage"]) or ""),
        candidate=str(config.get(_KEYS["candidate"]) or ""),
        crash_once=str(config.get(_KEYS["crash_once"]) or ""))


def encode(trial: TrialConfig) -> dict[str, Any]:
    """The private keys of `trial`'s fields that differ from the defaults (to merge into a
    config's search dimensions)."""
    return {_KEYS[f.name]: getattr(trial, f.name) for f in fields(TrialConfig)
            if getattr(trial, f.name) != getattr(_DEFAULT, f.name)}


def with_fields(config: Mapping[str, Any], **values: Any) -> dict[str, Any]:
    """`config` with the given `TrialConfig` fields written as given, defaults included (PBT's
    explore clears a reference with `reference=""`; a Tune domain may stand for a value)."""
    unknown = sorted(set(values) - set(_KEYS))
    if unknown:
        raise TypeError(f"not TrialConfig fields: {', '.join(unknown)}")
    return {**config, **{_KEYS[name]: value for name, value in values.items()}}


def updated(config: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """`config` with its `TrialConfig` changed: its dimensions and the new fields' encoding."""
    return {**dimensions(config), **encode(replace(decode(config), **changes))}


def dimensions(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config's search dimensions: what a strategy suggested, without the private keys."""
    return {k: v for k, v in config.items() if not _private(k)}


def policy_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """What names a config's policy: its search dimensions and, for a reference arm, its name, or
    the explicit policy it carries; replicate, stage, fold and test hooks are dropped."""
    trial = decode(config)
    out = dimensions(config)
    for name in ("reference", "policy"):
        if getattr(trial, name):
            out[_KEYS[name]] = config[_KEYS[name]]  # as written: the seeds hash it
    return out


def seed_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """What a trial's augmentation seed is drawn from: its policy config and the schedule it
    replays, if any. An explicit policy counts by its content: its provenance (a merged policy's
    `merged_from` names Tune's random trial ids) would give a rerun of the same search other
    draws."""
    out = policy_config(config)
    explicit = out.get(_KEYS["policy"])
    if isinstance(explicit, Mapping) and "provenance" in explicit:
        out[_KEYS["policy"]] = {k: v for k, v in explicit.items() if k != "provenance"}
    if config.get(_KEYS["schedule"]):
        out[_KEYS["schedule"]] = config[_KEYS["schedule"]]
    return out


# ---------------------------------------------------------------- a config that wraps configs


def fixed_runs(grid: Any) -> dict[str, Any]:
    """Tune's param space for fixed runs: `grid` (a grid over whole configs) under one key."""
    return {_FIXED: grid}


def flat(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's config with a fixed run's entries lifted to the top level."""
    if _FIXED not in config:
        return dict(config)
    rest = {k: v for k, v in config.items() if k != _FIXED}
    return {**config[_FIXED], **rest}
