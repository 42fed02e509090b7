"""Serving survives a bad snapshot: one that fails to load is skipped with one log line and a metric,
and the server keeps (or falls back to) the last good one — no crash, no crash loop with workers."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from index import snapshot
from ingest.settings import load_settings
from serve.live import LiveIndex

if TYPE_CHECKING:
    from tests.index_fixtures import BuiltIndex
    from tests.serve_fixtures import ServerStarter

pytest_plugins = ["tests.serve_fixtures"]  # session fixtures: built, private_data_dir, start_server

BAD_ID = "29991231T235959Z-damaged0"  # sorts after every real build: the newest snapshot


def drop_manifest_key(folder: Path) -> None:
    manifest = json.loads((folder / snapshot.MANIFEST_FILE).read_text())
    del manifest["dimension"]
    (folder / snapshot.MANIFEST_FILE).write_text(json.dumps(manifest))


def truncate_vectors(folder: Path) -> None:
    path = folder / snapshot.VECTORS_FILE
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 3)


def break_json(folder: Path) -> None:
    (folder / snapshot.MANIFEST_FILE).write_text('{"format": 3, "snapshot_id": ')


DAMAGES: dict[str, Callable[[Path], None]] = {
    "missing manifest key": drop_manifest_key,
    "truncated vectors.npy": truncate_vectors,
    "bad JSON": break_json,
}


def publish_damaged(data_dir: Path, good_id: str, damage: Callable[[Path], None]) -> str:
    """A real copy (not hard links: the session's index stays whole) of the good snapshot, damaged,
    published as the newest snapshot and made CURRENT."""
    snapshots_dir = load_settings(data_dir=data_dir).snapshots_dir
    bad = snapshots_dir / BAD_ID
    shutil.copytree(snapshots_dir / good_id, bad)
    damage(bad)
    snapshot.set_current(snapshots_dir, BAD_ID)
    return BAD_ID


class Refusals:
    def __init__(self) -> None:
        self.ids: list[str] = []

    def __call__(self, snapshot_id: str) -> None:
        self.ids.append(snapshot_id)


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_current_snapshot_falls_back_to_the_last_good_one_at_start(
        built: BuiltIndex, private_data_dir: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    good = built.report.snapshot_id
    publish_damaged(private_data_dir, good, DAMAGES[damage])
    refused = Refusals()
    live = LiveIndex(load_settings(data_dir=private_data_dir), on_refused=refused)
    try:
        with caplog.at_level(logging.INFO, logger="serve.live"):
            assert live.refresh() is True
            assert live.refresh() is False  # the damaged CURRENT is not tried again, nor logged again
        assert live.snapshot_id == good
        assert live.require().search("raft leader election", k=3).results
        assert refused.ids == [BAD_ID]
        skipped = [r.getMessage() for r in caplog.records if "cannot be loaded" in r.getMessage()]
        assert len(skipped) == 1, skipped
        assert skipped[0].startswith(f"snapshot {BAD_ID} cannot be loaded and is skipped (")
        assert "rebuild it: linklens index" in skipped[0] and "\n" not in skipped[0]
    finally:
        live.close()


def test_a_damaged_snapshot_published_while_serving_is_skipped_and_the_server_stays(
        built: BuiltIndex, private_data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = built.report.snapshot_id
    refused = Refusals()
    live = LiveIndex(load_settings(data_dir=private_data_dir), on_refused=refused)
    try:
        assert live.refresh() is True and live.snapshot_id == good
        publish_damaged(private_data_dir, good, truncate_vectors)
        with caplog.at_level(logging.INFO, logger="serve.live"):
            assert live.refresh() is False
            assert live.refresh() is False
        assert live.snapshot_id == good and live.require().search("raft leader election", k=3).results
        assert refused.ids == [BAD_ID]
        assert len([r for r in caplog.records if "cannot be loaded" in r.getMessage()]) == 1
    finally:
        live.close()


def test_a_server_with_two_workers_starts_on_the_last_good_snapshot_and_counts_the_refusal(
        built: BuiltIndex, private_data_dir: Path, start_server: ServerStarter, tmp_path: Path) -> None:
    from tests.test_serve_workers import runner_command, sample

    good = built.report.snapshot_id
    publish_damaged(private_data_dir, good, drop_manifest_key)
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    with start_server(private_data_dir, env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
                      command=runner_command) as server:
        ready = {httpx.get(f"{server.base_url}/readyz", timeout=10).json()["snapshot_id"] for _ in range(10)}
        assert ready == {good}
        text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
        failures = sample(text, "linklens_index_snapshot_load_failures_total")
        assert failures is not None and failures >= 1, text
        assert sample(text, "linklens_index_snapshot_info", {"snapshot_id": BAD_ID}) is None
        log = server.log()
    assert f"snapshot {BAD_ID} cannot be loaded and is skipped" in log
    assert "Traceback" not in log


def test_metric_labels_of_a_snapshot_no_longer_served_are_removed(built: BuiltIndex) -> None:
    from serve.metrics import ServerMetrics

    class Served:
        def __init__(self, snapshot_id: str) -> None:
            self.snapshot_id = snapshot_id

        def stats(self) -> dict[str, int]:
            return {"passages": 1, "articles": 1}

    metrics = ServerMetrics()
    for n in range(5):
        metrics.serving(Served(f"snap-{n}"))  # type: ignore[arg-type]
    text = metrics.render().decode()
    assert 'snapshot_id="snap-4"' in text
    assert [f"snap-{n}" for n in range(4) if f'snapshot_id="snap-{n}"' in text] == []
