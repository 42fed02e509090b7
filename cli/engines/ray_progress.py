"""Progress of the Ray crawl: one bar per stage (fetch, extract, store), with counts and rates.

The stages run in Ray workers, possibly on other machines, so they report to a small counter
actor; a thread in the driver reads it twice a second and moves the bars. The store stage
runs in the driver itself and moves its bar directly.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import ray
from rich.progress import TaskID

from cli.progress import coloured_states, stage_bars

POLL_S = 0.5


class StageCounter:
    """Counts by stage, added to by remote stages (`counter.add.remote(stage, n)`), read by the driver.

    Run as an actor with no CPU of its own: `new_stage_counter(ray)`. Shared by the crawl's and
    the index's progress bars.
    """

    def __init__(self) -> None:
        self._done: Counter[str] = Counter()

    def add(self, stage: str, count: int) -> None:
        self._done[stage] += count

    def read(self) -> dict[str, int]:
        return dict(self._done)


def new_stage_counter(ray: Any) -> Any:
    """A `StageCounter` actor (takes no CPU, so it never waits for one)."""
    return ray.remote(num_cpus=0)(StageCounter).remote()


class StageBars:
    """The three bars, or nothing when `quiet` (--json): `follow` a counter, call `stored` per recorded link."""

    def __init__(self, links: int, quiet: bool) -> None:
        self._links = links
        self._quiet = quiet
        self._started = time.perf_counter()
        self._states: Counter[str] = Counter()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._bar = stage_bars(quiet)
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> StageBars:
        self._bar.__enter__()
        for stage, total, what in (("fetch", self._links, "links"), ("extract", None, "pages"),
                                   ("store", self._links, "links")):
            self._tasks[stage] = self._bar.add_task(stage, total=total, what=what)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join()
        self._bar.__exit__(None, None, None)

    def follow(self, counter: Any) -> None:
        """Read the stages' counts from `counter` until the bars close."""
        if self._quiet:
            return

        def poll() -> None:
            while not self._stop.wait(POLL_S):
                try:
                    done = ray.get(counter.read.remote(), timeout=POLL_S * 4)
                except Exception:  # noqa: BLE001 - a slow or gone counter only freezes the bars
                    continue
                for stage in ("fetch", "extract"):
                    self._show(stage, done.get(stage, 0))

        self._poller = threading.Thread(target=poll, name="linklens-ray-progress", daemon=True)
        self._poller.start()

    def stored(self, state: str) -> None:
        self._states[state] += 1
        self._show("store", sum(self._states.values()), coloured_states(self._states))

    def _show(self, stage: str, done: int, states: str = "") -> None:
        fields: dict[str, Any] = {"completed": done}
        if states:
            fields["what"] = states
        self._bar.update(self._tasks[stage], **fields)
