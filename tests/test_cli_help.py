"""`--help` of every command: flags read as flags, and limits come from the index module."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from cli.main import app
from index.limits import MAX_K, MIN_K

COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_no_value_placeholder_after_a_flag(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], terminal_width=120)
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output, result.output
    assert "--help" in result.output


def test_k_range_in_help_and_parsing_is_the_index_modules() -> None:
    runner = CliRunner()
    help_text = runner.invoke(app, ["search", "--help"], terminal_width=120).output
    assert f"{MIN_K}<=x<={MAX_K}" in help_text, help_text
    too_many = runner.invoke(app, ["search", "caching", "--k", str(MAX_K + 1)])
    assert too_many.exit_code == 2, too_many.output
    assert f"{MIN_K}<=x<={MAX_K}" in too_many.output, too_many.output


def test_every_command_is_checked() -> None:
    assert {"search", "serve", "index", "build", "crawl", "links", "eval"} <= set(COMMANDS)
