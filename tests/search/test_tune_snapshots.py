"""Tune's experiment snapshots: the synced staging directory only ever holds whole files.

Tune copies its driver staging directory to the storage path in a background process while the
next snapshot is being written. Ray's savers write a transient `.<uuid>-tmp-...` file there and
rename it; a copy that lists it and reads it after the rename fails with FileNotFoundError, and a
search printed "Saving experiment state to storage ... failed" with a traceback.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from ray.tune.search import BasicVariantGenerator, Searcher, SearchGenerator

from search.trials.config import TrialConfig, encode
from search.tune.searchers import _Generator, _ReferencesFirst, _Variants


def _searcher() -> _ReferencesFirst:
    return _ReferencesFirst(Searcher(metric="reward", mode="max"),
                            [encode(TrialConfig(reference="base"))], set())


def _staging(tmp_path: Path) -> Path:
    staging = tmp_path / "exp" / "driver_artifacts"
    staging.mkdir(parents=True)
    return staging


def _transient_names_at_renames(monkeypatch: pytest.MonkeyPatch, staging: Path,
                                save: callable) -> list[str]:
    """Names in `staging` that are not whole snapshot files, seen at every rename a save does."""
    seen: list[str] = []
    real = os.replace

    def watched(src: str, dst: str) -> None:
        seen.extend(p.name for p in staging.iterdir() if p.name.startswith("."))
        real(src, dst)

    monkeypatch.setattr(os, "replace", watched)
    save()
    monkeypatch.setattr(os, "replace", real)
    return seen


@pytest.mark.parametrize("make", [lambda: _Generator(_searcher()),
                                  lambda: _Variants(points_to_evaluate=[{"a": 1}])],
                         ids=["searcher", "variants"])
def test_no_transient_file_is_ever_in_the_synced_directory(tmp_path, monkeypatch, make) -> None:
    staging = _staging(tmp_path)
    alg = make()
    seen = _transient_names_at_renames(monkeypatch, staging,
                                       lambda: alg.save_to_dir(str(staging), "s1"))
    assert seen == []
    saved = sorted(p.name for p in staging.iterdir())
    assert saved and all(not name.startswith(".") for name in saved), saved


@pytest.mark.parametrize("make", [lambda: SearchGenerator(_searcher()),
                                  lambda: BasicVariantGenerator(points_to_evaluate=[{"a": 1}])],
                         ids=["searcher", "variants"])
def test_rays_own_savers_leave_transient_files_there(tmp_path, monkeypatch, make) -> None:
    """The control: the same check sees Ray's savers' transient files (the cause), so the test
    above can fail."""
    staging = _staging(tmp_path)
    alg = make()
    seen = _transient_names_at_renames(monkeypatch, staging,
                                       lambda: alg.save_to_dir(str(staging), "s1"))
    assert any("tmp" in name for name in seen), seen


def test_saves_beside_a_concurrent_copy_never_break_it(tmp_path) -> None:
    """The copy Tune's upload of the staging directory makes (`pyarrow.fs.copy_files` of the
    whole directory), in a loop, while snapshots are saved into it: no copy fails."""
    import pyarrow.fs

    staging, target = _staging(tmp_path), tmp_path / "storage"
    alg = _Generator(_searcher())
    stop, errors = threading.Event(), []

    def copy_loop() -> None:
        fs = pyarrow.fs.LocalFileSystem()
        while not stop.is_set():
            try:
                fs.create_dir(str(target))
                pyarrow.fs.copy_files(str(staging), str(target), destination_filesystem=fs,
                                      chunk_size=64 * 1024 * 1024)  # as Tune copies
            except Exception as err:  # noqa: BLE001 - the failure under test
                errors.append(err)
                return

    thread = threading.Thread(target=copy_loop)
    thread.start()
    try:
        for k in range(400):
            alg.save_to_dir(str(staging), f"s{k % 3}")
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert any(p.name.startswith("searcher-state") for p in target.iterdir())
