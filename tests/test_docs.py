"""The documentation: README.md is one page whose links resolve, and docs/ is a site that MkDocs
builds in strict mode (a broken link or anchor, a page left out of the nav or a nav entry without
a page fails the build), which these tests show by breaking a copy of it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

README = ROOT / "README.md"
CONFIG = ROOT / "mkdocs.yml"
CLUSTER_GUIDE = ROOT / "docs" / "guide" / "clusters-and-gpus.md"
BUYS = "What a search buys, measured"
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"\]\(([^)\s]+)\)")  # the target of [text](target) and ![alt](target)


# ---------------------------------------------------------------- helpers


def need_mkdocs() -> None:
    """Skip where MkDocs or its Material theme is not installed; CI installs the `test` extra,
    which has both, so there a missing one fails instead of hiding the check."""
    missing = [m for m in ("mkdocs", "material") if importlib.util.find_spec(m) is None]
    if not missing:
        return
    why = (f"{' and '.join(missing)} not importable: the docs build needs the test extra "
           f"(pip install -e \".[test]\")")
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


def build(config: Path, site: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """`mkdocs build` of `config` into `site`, its output kept for the assertion message."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's banner, not a build warning
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", *flags, "--config-file", str(config),
         "--site-dir", str(site)],
        cwd=config.parent, capture_output=True, text=True, timeout=300, env=env, check=False)


def outside_code(text: str) -> list[str]:
    """The lines of a Markdown text that are not inside a fenced code block."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: links reduced to their text, lower case, punctuation
    (backticks, colons, commas, apostrophes) dropped, each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, a repeated one numbered as GitHub does."""
    seen: dict[str, int] = {}
    found = set()
    for line in outside_code(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return found


def readme_links() -> list[str]:
    text = "\n".join(outside_code(README.read_text(encoding="utf-8")))
    return LINK.findall(text)


def search_commands(path: Path, section: str | None = None) -> list[str]:
    """Every `python -m search.run` command line of a file (continued lines joined, spaces
    normalised), or of its `section` only, up to the next `## ` heading."""
    text = path.read_text(encoding="utf-8").replace("\\\n", " ")
    if section is not None:
        text = text.split(section, 1)[1].split("\n## ", 1)[0]
    return [" ".join(line.split()) for line in text.splitlines() if "python -m search.run" in line]


# ---------------------------------------------------------------- the site


def test_the_site_builds_in_strict_mode(tmp_path: Path) -> None:
    need_mkdocs()
    done = build(CONFIG, tmp_path / "site", "--strict")
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    for page in ("index.html", "guide/cli/index.html", "BENCHMARKS/index.html",
                 "DESIGN/index.html", "mlflow-ui.png"):
        assert (tmp_path / "site" / page).exists(), page


def test_the_config_is_strict_by_itself() -> None:
    """A plain `mkdocs build` (no flag) fails on the same warnings as CI's."""
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    assert config["strict"] is True
    checks = config["validation"]
    for key in ("omitted_files", "not_found", "anchors", "unrecognized_links", "absolute_links"):
        assert checks[key] == "warn", key


def _missing_page(docs: Path, config: Path) -> None:
    with (docs / "index.md").open("a", encoding="utf-8") as f:
        f.write("\nSee [a page that is gone](guide/no-such-page.md).\n")


def _missing_anchor(docs: Path, config: Path) -> None:
    with (docs / "guide" / "cli.md").open("a", encoding="utf-8") as f:
        f.write("\nSee [a heading that is gone](statistics.md#no-such-heading).\n")


def _page_outside_nav(docs: Path, config: Path) -> None:
    (docs / "guide" / "orphan-page.md").write_text("# Orphan\n", encoding="utf-8")


def _nav_without_page(docs: Path, config: Path) -> None:
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    data["nav"].append({"Gone": "guide/gone-page.md"})
    config.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


@pytest.mark.parametrize("breakage, named", [
    (_missing_page, "no-such-page.md"),
    (_missing_anchor, "no-such-heading"),
    (_page_outside_nav, "orphan-page.md"),
    (_nav_without_page, "gone-page.md"),
], ids=["link-to-missing-page", "link-to-missing-anchor", "page-outside-nav",
        "nav-entry-without-page"])
def test_a_broken_copy_of_the_docs_fails_the_build(tmp_path: Path, breakage, named: str) -> None:
    """The check can fail: each breakage, made in a copy, stops the build (strict by the config
    alone, no flag) and the output names what broke."""
    need_mkdocs()
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    config = tmp_path / "mkdocs.yml"
    shutil.copy(CONFIG, config)
    assert build(config, tmp_path / "site").returncode == 0, "the unbroken copy must build"
    breakage(tmp_path / "docs", config)
    done = build(config, tmp_path / "site")
    assert done.returncode != 0, f"the build passed despite {named}:\n{done.stderr}"
    assert named in done.stdout + done.stderr


# ---------------------------------------------------------------- README.md


def test_every_readme_link_resolves() -> None:
    """A relative link names a file that exists; an anchor names a heading of its target."""
    links = readme_links()
    assert links, "README.md has no links"
    broken = []
    for target in links:
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = ROOT / path if path else README
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(ROOT)}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with the anchor #{anchor} in {path or 'README'}")
    assert not broken, "README.md's broken links:\n" + "\n".join(broken)


def test_the_link_check_can_fail() -> None:
    """The anchors are GitHub's, so a wrong one is caught (and a right one is not)."""
    guide = anchors(CLUSTER_GUIDE)
    assert "before-the-first-ray-up" in guide  # "### Before the first `ray up`"
    assert "how-many-trials-share-a-gpu-and-why" in guide
    assert "before-the-first-ray-up-" not in guide


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "# augsearch" and lines[1] == "" and lines[2] == "```bash", lines[:3]
    install, test = lines[3], lines[4]
    assert install.startswith("pip install -e . && python -m search.run "), install
    assert lines[5] == "```"
    command = test.split("#", 1)[0].strip()
    assert command == 'pip install -e ".[test]" && ruff check . && python -m pytest'
    assert command in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_what_a_search_buys_is_one_delimited_section() -> None:
    """Rewritten whole from new figures: one heading, between its BEGIN and END markers."""
    text = README.read_text(encoding="utf-8")
    begin, end = text.index(f'<!-- BEGIN "{BUYS}"'), text.index(f'<!-- END "{BUYS}" -->')
    assert begin < end and text.count(f"## {BUYS}") == 1
    section = text[begin:end]
    assert f"\n## {BUYS}\n" in section and section.count("\n## ") == 1
    assert "not shown" in section and "Nothing has been measured on a GPU" in section


def test_the_readme_cluster_commands_are_the_guides() -> None:
    """tests/test_cluster_config.py parses the README's cluster command with the real CLI; the
    guide shows the same command, so the two cannot drift apart."""
    readme = search_commands(README, "## Running on a Ray cluster")
    assert readme, "the README's cluster section shows no search command"
    guide = search_commands(CLUSTER_GUIDE)
    for command in readme:
        assert command in guide, command
