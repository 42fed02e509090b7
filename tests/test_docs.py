"""The docs cannot drift from the command: every `linklens …` line they show parses as written.

Each shell block of README.md and docs/*.md is read line by line; a line that runs
`linklens` is parsed by the command's own parser (click, under typer), so an unknown
command, a renamed flag or a value outside a flag's choices fails here. Blocks marked
`<!-- runnable -->` on the line before them are run for real in a fresh data folder.
Links between the pages must point at files and headings that exist.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from cli.main import app

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}
RUNNABLE_MARK = "<!-- runnable -->"
LINK = re.compile(r"\]\(([^)\s]+)\)")
COMMAND = typer.main.get_command(app)
# typer vendors click; its UsageError is the base of BadParameter (a bad value) and NoSuchOption.
UsageError = typer.BadParameter.__mro__[1]


def shell_blocks(page: Path) -> list[tuple[int, list[str], bool]]:
    """(first line number, lines, runnable) of each shell block of `page`."""
    blocks: list[tuple[int, list[str], bool]] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    inside: list[str] | None = None
    start, runnable, language = 0, False, ""
    for number, line in enumerate(lines, start=1):
        fence = FENCE.match(line)
        if inside is None and fence:
            inside, start, language = [], number, fence.group(1)
            runnable = number > 1 and lines[number - 2].strip() == RUNNABLE_MARK
        elif inside is not None and line.startswith("```"):
            if language in SHELL_LANGUAGES:
                blocks.append((start, inside, runnable))
            inside = None
        elif inside is not None:
            inside.append(line)
    return blocks


def linklens_lines() -> list[tuple[str, list[str]]]:
    """Every `linklens …` command the docs show, as (where, argv after `linklens`)."""
    found = []
    for page in PAGES:
        for start, lines, _ in shell_blocks(page):
            for offset, line in enumerate(lines, start=1):
                words = shlex.split(line, comments=True)
                while words and "=" in words[0] and not words[0].startswith("-"):
                    words = words[1:]  # VAR=value before the command
                if words and words[0] == "linklens":
                    found.append((f"{page.relative_to(REPO)}:{start + offset}", words[1:]))
    return found


COMMAND_LINES = linklens_lines()


def test_the_docs_show_commands() -> None:
    assert len(COMMAND_LINES) >= 30, COMMAND_LINES
    shown = {argv[0] for _, argv in COMMAND_LINES if argv and not argv[0].startswith("-")}
    assert {"crawl", "build", "search", "serve", "links", "lists", "index", "eval"} <= shown


@pytest.mark.parametrize(("where", "argv"), COMMAND_LINES, ids=[where for where, _ in COMMAND_LINES])
def test_every_command_in_the_docs_parses(where: str, argv: list[str]) -> None:
    assert argv, f"{where}: `linklens` with no command"
    name, *args = argv
    command = COMMAND.commands.get(name)  # type: ignore[attr-defined]
    assert command is not None, f"{where}: no command `linklens {name}`"
    try:
        command.make_context(name, list(args), parent=command.context_class(COMMAND))
    except UsageError as exc:
        pytest.fail(f"{where}: `linklens {shlex.join(argv)}` does not parse: {exc.format_message()}")


def test_runnable_blocks_run(tmp_path: Path) -> None:
    blocks = [(page, start, lines) for page in PAGES for start, lines, runnable in shell_blocks(page) if runnable]
    assert blocks, "no block is marked runnable"
    env = {**os.environ, "LINKLENS_DATA_DIR": str(tmp_path / "data"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for page, start, lines in blocks:
        script = "set -euo pipefail\n" + "\n".join(lines)
        done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, f"{page.name}:{start}: {done.stderr[-2000:]}"


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for the headings of `page`."""
    out = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            text = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return out


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_links_between_pages_resolve(page: Path) -> None:
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if "://" in target or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: link to {target}, no such file"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file), f"{page.name}: link to {target}, no such heading"
