"""Progress bars on stderr, one design for every engine and stage: name, bar, count, what is counted, rate, time.

The local crawl, the Ray crawl (fetch, extract, store) and the Ray index (passages, embedding,
snapshot) all draw through `stage_bars`, so a user sees the same columns whichever runs; what a
bar counts, and the crawl's link states, go in its `what` field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.common import err

STATE_COLOURS = {"ok": "green", "redirected": "cyan", "archived": "yellow", "dead": "red", "blocked": "magenta",
                 "unsupported": "bright_black", "failed": "red", "removed": "bright_black", "pending": "white"}


def coloured_states(counts: Mapping[str, int]) -> str:
    """Link states with their counts, coloured, for a progress bar (both engines' crawls show them)."""
    return " ".join(f"[{STATE_COLOURS.get(k, 'white')}]{k}[/] {v}" for k, v in sorted(counts.items()))


class Rate(TextColumn):
    """Items per second of a bar (what its count counts), from rich's own speed estimate."""

    def __init__(self) -> None:
        super().__init__("")

    def render(self, task: Any) -> Any:
        from rich.text import Text

        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f}/s" if speed else "", style="dim")


def stage_bars(quiet: bool = False, transient: bool = False) -> Progress:
    """An empty set of bars (add one per stage with `add_task(name, total=…, what=…)`); draws nothing when quiet."""
    return Progress(
        TextColumn("[bold]{task.description:<9}"), BarColumn(), MofNCompleteColumn(), Rate(), TimeElapsedColumn(),
        TextColumn("{task.fields[what]}"), console=err, transient=transient, disable=quiet,
    )
