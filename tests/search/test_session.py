"""Resume guards that fail before any data, Ray or child is touched, and what a resume restores."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.errors import SearchError, SearchFinished
from search.prepare.checks import prepare
from search.prepare.options import SearchOptions
from search.prepare.resume import RunRecord, read_record, resume_options


def test_resume_needs_an_earlier_search(tmp_path: Path) -> None:
    with pytest.raises(SearchError, match="nothing to resume in .*: no run.json there"):
        prepare(opts=SearchOptions(resume=True, output=tmp_path))
    with pytest.raises(SearchError, match="--resume needs --output DIR"):
        prepare(opts=SearchOptions(resume=True))


def _record(tmp_path: Path) -> RunRecord:
    opts = SearchOptions(seed=7, epochs=3, concurrency=2, tracking_uri="http://127.0.0.1:9",
                         experiment="mine", data=str(tmp_path / "data.npz"), smoke_test=True)
    RunRecord.of("digits", "random", opts).write(tmp_path)
    return read_record(tmp_path)


def test_resume_restores_the_original_flags(tmp_path: Path) -> None:
    record = _record(tmp_path)
    searcher, opts = resume_options(record, None, None, SearchOptions(resume=True,
                                                                      address="auto"), tmp_path)
    assert searcher == "random"
    assert (opts.seed, opts.epochs, opts.concurrency) == (7, 3, 2)
    assert opts.tracking_uri == "http://127.0.0.1:9" and opts.experiment == "mine"
    assert opts.data == str((tmp_path / "data.npz").resolve()) and opts.smoke_test
    assert opts.address == "auto"  # where Ray runs may change


def test_resume_accepts_the_same_flags_and_refuses_others_by_name(tmp_path: Path) -> None:
    record = _record(tmp_path)
    same = SearchOptions(resume=True, seed=7, epochs=3, data=str(tmp_path / "data.npz"))
    assert resume_options(record, "digits", "random", same, tmp_path)[1].epochs == 3
    other = SearchOptions(resume=True, epochs=5, cpus_per_trial=2)
    with pytest.raises(SearchError) as info:
        resume_options(record, "cifar10", "tpe", other, tmp_path)
    message = str(info.value)
    assert message.startswith("--space cifar10, --searcher tpe, --cpus-per-trial 2, --epochs 5: "
                              "not what the interrupted search in ")
    assert "(--space digits, --searcher random, no --cpus-per-trial, --epochs 3)" \
        in message
    assert "drop them or start a new search with another --output" in message


def test_progress_counts_a_trial_once_when_it_ends_not_when_tune_retries_it() -> None:
    import io

    from search.events import Progress

    stream = io.StringIO()
    progress = Progress(total=3, stream=stream)
    error = "RuntimeError: worker died; full log: /runs/out/ray/tune/trial_a/error.txt"
    progress.trial_retry("a", error)
    assert progress.done == 0 and progress.failed == 0
    progress.trial_complete("a", {}, {"reward": 0.5})
    progress.trial_error("b", {}, error)
    lines = stream.getvalue().splitlines()
    assert progress.done == 2 and progress.failed == 1
    assert lines[0] == f"[augsearch] a failed and is retried from its last checkpoint: {error}"
    assert lines[2].startswith("[augsearch] 2/3 trials (1 failed) | b: failed RuntimeError: "
                               "worker died; full log: /runs/out/ray/tune/trial_a/error.txt |")


def test_a_resume_counts_only_trials_that_ended(tmp_path: Path) -> None:
    """Errored and interrupted trials run again after --resume: they are not done yet."""
    from search.prepare.checks import Prepared
    from search.stages.session import SearchSession
    from search.strategies import get_strategy
    from spaces.schema import load_space

    rows = ["rank,trial_id,status", "1,a,ok", "2,b,diverged", "3,c,failed", "4,d,error",
            "5,e,interrupted"]
    (tmp_path / "leaderboard.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    prepared = Prepared(load_space("digits"), "digits", get_strategy("tpe"),
                        SearchOptions(resume=True, seed=0), tmp_path, True, None)
    assert SearchSession(prepared)._ended_before() == 3


# ---------------------------------------------------------------- a search that finished


def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
            for p in sorted(root.rglob("*"))}


def _interrupt_confirmation(cmd: list[str], stage: str = "confirm") -> None:
    """Run the CLI and send Ctrl-C once the stage's first training has finished."""
    import os
    import signal
    import subprocess

    from tests.conftest import ROOT, python_path

    env = {**os.environ, "PYTHONPATH": python_path()}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if line.startswith(f"[augsearch] {stage} ") and "trials (" in line:
                proc.send_signal(signal.SIGINT)
                break
        rest = proc.communicate(timeout=240)[0]
    finally:
        proc.kill()
    assert proc.returncode == 130, rest
    assert "--resume" in rest


@pytest.mark.slow
def test_a_finished_search_is_not_resumed_and_an_interrupted_confirmation_is(
        ray_session, tmp_path: Path, capsys, monkeypatch) -> None:
    """Ctrl-C in the confirmation: not finished, --resume completes it; then the search is
    finished, and --resume (and its dry run) says so in one line, exits 0 and starts, writes
    and logs nothing (no Ray connection, every file byte for byte as it was)."""
    import sys

    from search import tune
    from search.api import search
    from search.prepare.resume import is_finished
    from search.run import main

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "search.run", "--space", "digits", "--smoke-test", "--trials",
           "2", "--epochs", "1", "--concurrency", "1", "--confirm", "1", "--confirm-seeds", "1",
           "--output", str(out)]
    _interrupt_confirmation(cmd)
    assert (out / "run.json").is_file() and not is_finished(out)
    result = search(resume=True, output=out)
    assert result.complete and is_finished(out)
    assert result.confirmation is not None
    before = _tree(out)

    def no_ray(*_args, **_kwargs):
        raise AssertionError("Ray was connected to for a finished search")

    monkeypatch.setattr(tune, "connect", no_ray)
    for extra in ([], ["--dry-run"], ["--epochs", "5"]):
        capsys.readouterr()
        assert main(["--resume", "--output", str(out), *extra]) == 0
        captured = capsys.readouterr()
        line = captured.out.strip()
        assert captured.err == "" and "\n" not in line, captured
        assert line.startswith(f"augsearch: the search in {out} already finished; its outputs "
                               f"are there (best_policy.yaml, best_policy.json, "
                               f"leaderboard.csv, confirm.csv)"), line
        assert _tree(out) == before
    with pytest.raises(SearchFinished, match="already finished"):
        search(resume=True, output=out)


@pytest.mark.slow
def test_a_search_interrupted_in_its_headroom_check_resumes_there(ray_session,
                                                                 tmp_path: Path) -> None:
    """Ctrl-C after the headroom check's first training: --resume keeps the finished headroom
    runs, finishes the check, then runs the search and its confirmation."""
    import sys

    from search.api import search
    from search.prepare.resume import is_finished

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "search.run", "--space", "digits", "--smoke-test", "--trials",
           "2", "--epochs", "1", "--concurrency", "1", "--headroom-seeds", "2", "--confirm", "1",
           "--confirm-seeds", "1", "--output", str(out)]
    _interrupt_confirmation(cmd, stage="headroom")
    assert (out / "run.json").is_file() and not is_finished(out)
    assert not (out / "headroom.json").exists()
    result = search(resume=True, output=out)
    assert result.complete and is_finished(out)
    assert result.headroom is not None and (out / "headroom.json").is_file()
    assert len([r for r in result.leaderboard if r["status"] == "ok"]) >= 2
    assert result.confirmation is not None


def test_the_finished_mark_is_in_the_run_record_and_only_there(tmp_path: Path) -> None:
    from search.prepare.resume import is_finished

    record = _record(tmp_path)
    assert not is_finished(tmp_path)
    RunRecord.mark_finished(tmp_path)
    assert is_finished(tmp_path) and read_record(tmp_path) == record
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]
    RunRecord.mark_finished(tmp_path / "elsewhere")  # no record: nothing to mark, no error
    assert not is_finished(tmp_path / "elsewhere")
    with pytest.raises(SearchFinished, match=f"the search in {tmp_path} already finished"):
        prepare(opts=SearchOptions(resume=True, output=tmp_path))
