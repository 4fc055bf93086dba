"""The run record (`run.json`): what a search was asked, so `--resume` continues exactly that.

A search that finished is marked so in its record (`RunRecord.mark_finished`); `--resume` of it
says where its outputs are and starts nothing (`SearchFinished`, exit 0).

A resumed search restores its space, searcher, seed, data, tracking URI, experiment and every
other flag from the record. A flag given again with the same value is fine; a different value is
refused by name, because Tune restores its trials, searcher and resources as they were.
`--address` may change: it only says where Ray runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.errors import SearchError
from search.prepare.options import SearchOptions, flag

RUN_FILE = "run.json"
FINISHED = "finished"  # run.json's key: true once the search and its confirmation finished
# What a finished search's message points at, where present.
OUTPUT_FILES = ("best_policy.yaml", "best_policy.json", "schedule.json", "leaderboard.csv",
                "confirm.csv")
# The options a resumed search takes from its record (everything but where Ray runs and the
# output directory itself).
RECORDED = ("trials", "concurrency", "cpus_per_trial", "gpus_per_trial", "epochs", "data",
            "data_dir", "seed", "early_stop", "tracking_uri", "experiment", "smoke_test",
            "confirm", "confirm_seeds", "augmentation", "cohort", "headroom_seeds",
            "headroom_only", "stop_without_headroom")
_PATHS = ("data", "data_dir")


@dataclass(frozen=True)
class RunRecord:
    """The space, searcher and options a search started with (paths made absolute)."""

    space: str | None
    searcher: str
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, space: str, searcher: str, opts: SearchOptions) -> RunRecord:
        return cls(space, searcher, {k: _normal(k, getattr(opts, k)) for k in RECORDED})

    def write(self, output: Path) -> Path:
        path = output / RUN_FILE
        payload = {"version": 1, "space": self.space, "searcher": self.searcher,
                   "options": self.options}
        path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        return path

    @staticmethod
    def mark_finished(output: Path) -> None:
        """Note in the record that the search in `output` finished (every trial and the
        confirmation), so that a later `--resume` says so and starts nothing. The record is
        replaced whole (a crash leaves the old one); a directory without one is left as it is."""
        path = output / RUN_FILE
        data = _payload(path)
        if data is None:
            return
        data[FINISHED] = True
        part = path.with_name(f".{RUN_FILE}.part")
        part.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(part, path)


def _payload(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_finished(output: Path) -> bool:
    """Whether `output` holds a search that finished (`RunRecord.mark_finished`)."""
    data = _payload(output / RUN_FILE)
    return data is not None and data.get(FINISHED) is True


def finished_message(output: Path) -> str:
    """One line for `--resume` of a finished search: where its outputs are."""
    found = [name for name in OUTPUT_FILES if (output / name).exists()]
    listed = f" ({', '.join(found)})" if found else ""
    return (f"the search in {output} already finished; its outputs are there{listed}; there is "
            f"nothing to resume: to search again, start a new search with another --output")


def space_key(space: Any) -> str:
    """How a space argument is recorded: a built-in name, an absolute path or a space's name."""
    name = getattr(space, "name", None)
    if name is not None and not isinstance(space, (str, Path)):
        return str(name)
    text = str(space)
    return str(Path(text).resolve()) if text.endswith((".yaml", ".yml")) or "/" in text \
        else text


def read_record(output: Path) -> RunRecord:
    """The record of the interrupted search in `output`; a SearchError if there is none."""
    path = output / RUN_FILE
    if not path.is_file():
        raise SearchError(f"nothing to resume in {output}: no {RUN_FILE} there; drop --resume "
                          f"to start a new search, or pass the --output of the interrupted one")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        options = dict(data.get("options") or {"seed": data["seed"]})
        return RunRecord(data.get("space"), str(data["searcher"]), options)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        raise SearchError(f"{path}: unreadable run record; resume is not possible, start a new "
                          f"search with another --output") from None


def resume_options(record: RunRecord, space: Any, searcher: str | None, opts: SearchOptions,
                   output: Path) -> tuple[str, SearchOptions]:
    """The recorded searcher and options, or a SearchError naming every flag that differs."""
    differing: list[tuple[str, Any, Any]] = []
    if space is not None and record.space is not None and space_key(space) != record.space:
        differing.append(("--space", space_key(space), record.space))
    if searcher is not None and searcher != record.searcher:
        differing.append(("--searcher", searcher, record.searcher))
    for name in RECORDED:
        given = getattr(opts, name)
        if given is None or given is False:
            continue  # not given: the record's value applies
        if _normal(name, given) != record.options.get(name):
            differing.append((flag(name), given, record.options.get(name)))
    if differing:
        given = ", ".join(f"{f} {_show(v)}" for f, v, _ in differing)
        was = ", ".join(f"no {f}" if v is None else f"{f} {_show(v)}" for f, _, v in differing)
        raise SearchError(f"{given}: not what the interrupted search in {output} was started "
                          f"with ({was}); a resumed search keeps its own settings, so drop "
                          f"{'them' if len(differing) > 1 else 'it'} or start a new search "
                          f"with another --output")
    restored = {k: record.options.get(k, getattr(opts, k)) for k in RECORDED}
    for name in ("smoke_test", "headroom_only", "stop_without_headroom"):
        restored[name] = bool(restored.get(name))
    return record.searcher, dataclasses.replace(opts, **restored)


def _normal(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in _PATHS:
        return str(Path(value).expanduser().resolve())
    if name in ("cpus_per_trial", "gpus_per_trial"):
        return float(value)
    return value


def _show(value: Any) -> str:
    if value is True:
        return "(on)"
    return f"{value:g}" if isinstance(value, float) else str(value)
