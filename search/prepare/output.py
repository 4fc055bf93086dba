"""The output directory a search is asked for: a new one that can be created and holds no search,
or, on `--resume`, the interrupted search's own, writable and holding its space."""

from __future__ import annotations

from pathlib import Path

from search.errors import SearchError
from search.prepare.options import SearchOptions
from search.prepare.paths import cannot_write, check_creatable
from search.prepare.resume import RUN_FILE
from spaces.schema import Space, parse_space

SPACE_FILE = "space.yaml"
DB_FILE = "mlflow.db"  # the default store, in the output directory
# What a search leaves in its output directory; any of them means "a search is here".
SEARCH_FILES = (RUN_FILE, SPACE_FILE, "ray", DB_FILE, "leaderboard.csv")


def given_output(opts: SearchOptions) -> Path | None:
    return None if opts.output is None else Path(opts.output).expanduser().resolve()


def saved_space(output: Path) -> Space:
    path = output / SPACE_FILE
    if not path.is_file():
        raise SearchError(f"nothing to resume in {output}: no {SPACE_FILE} there; drop --resume "
                          f"to start a new search")
    return parse_space(path.read_text(encoding="utf-8"), str(path))


def check_existing_output(output: Path) -> None:
    if not output.is_dir():
        raise SearchError(f"nothing to resume in {output}: no such directory; pass the --output "
                          f"of the interrupted search")
    why = cannot_write(output)
    if why:
        raise SearchError(f"--output {output} is not writable ({why}); fix its permissions to "
                          f"resume")


def check_new_output(output: Path, given: bool) -> None:
    """A new search needs a directory it can create, or an empty-of-searches one."""
    what = f"--output {output}" if given else f"the output directory {output}"
    if output.exists() and not output.is_dir():
        raise SearchError(f"{what} is a file, not a directory; pass --output with a directory "
                          f"path")
    if output.is_dir():
        found = [name for name in SEARCH_FILES if (output / name).exists()]
        if found:
            raise SearchError(f"{what} already holds a search ({', '.join(found)}); add --resume "
                              f"to continue it, or pass --output with a new directory")
        why = cannot_write(output)
        if why:
            raise SearchError(f"{what} is not writable ({why}); pass --output with a writable "
                              f"directory")
        return
    check_creatable(output, what, "pass --output with a writable path")
