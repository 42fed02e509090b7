"""Progress of the Ray index on stderr: one bar per stage (passages, embedding, snapshot), as `cli.progress` draws.

Ray tasks and actors run in other processes (other machines on a cluster), so they report
counts to one small `StageCounter` actor; the driver reads it a few times a second and draws.
Ray Data's own bars stay off unless -v (`ray_runtime.quiet_ray_data`).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.progress import Progress, TaskID

from cli.engines.ray_progress import new_stage_counter
from cli.progress import stage_bars


class ProgressBars:
    """The bars of one Ray index run; silent when `quiet` (--json)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.counter: Any = None
        self._bars: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> ProgressBars:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._bars is not None:
            self._bars.stop()

    def start(self, ray: Any, articles: int) -> Any:
        """Create the counter actor and (unless quiet) the bars; returns the counter for the stages."""
        self.counter = new_stage_counter(ray)
        self._ray = ray
        if self.quiet:
            return self.counter
        self._bars = stage_bars(transient=True)
        self._tasks = {
            "passages": self._bars.add_task("passages", total=articles, what="articles"),
            "embedding": self._bars.add_task("embedding", total=None, what="passages"),
            "snapshot": self._bars.add_task("snapshot", total=articles, what="articles", start=False),
        }
        self._bars.start()
        return self.counter

    def poll(self) -> dict[str, int]:
        """Read the stages' counts and redraw; returns them."""
        counts: dict[str, int] = self._ray.get(self.counter.read.remote())
        if self._bars is not None:
            passages = counts.get("passages", 0)
            self._bars.update(self._tasks["passages"], completed=counts.get("articles", 0),
                              what=f"articles → {passages:,} passages")  # fmt: skip
            embedded, cached = counts.get("embedded", 0), counts.get("cached", 0)
            self._bars.update(self._tasks["embedding"], completed=embedded + cached, total=passages or None,
                              what=f"passages ({embedded:,} embedded, {cached:,} cached)")  # fmt: skip
        return counts

    def snapshot(self, articles: int) -> None:
        """`articles` more went into the snapshot."""
        if self._bars is not None:
            task = self._tasks["snapshot"]
            self._bars.start_task(task)
            self._bars.advance(task, articles)
