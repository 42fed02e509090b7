"""`linklens build A.md B.md --engine ray` and `--engine local` build equivalent snapshots.

The issue's definition of done, end to end through the command line: two lists sharing links,
crawled from the fixture web (with its faults) and indexed, once per engine in two data
folders. The Ray side runs on a real local Ray (2 CPUs) and embeds every passage in its
actors; the local side reads the session index's caches.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.engines.datasets import ARTICLES
from cli.engines.storage import Datasets, version_stamp_ms
from cli.main import app
from index.search import Searcher
from ingest.settings import load_settings
from ingest.store import Store
from tests.conftest import FAST_CRAWL_ENV
from tests.fixtures.relevance import judged_queries
from tests.fixtureweb import FixtureWeb
from tests.index_fixtures import BuiltIndex, seed_caches

pytest_plugins = ["tests.index_fixtures", "tests.ray_fixtures"]  # built (its caches spare the local engine), Ray

runner = CliRunner()
TOP_K = 10
SHARED_POSTS = 4


def snapshot_passages(data_dir: Path, snapshot_id: str) -> list[str]:
    conn = sqlite3.connect(data_dir / "snapshots" / snapshot_id / "meta.sqlite3")
    try:
        return [row[0] for row in conn.execute("SELECT id FROM passages ORDER BY row")]
    finally:
        conn.close()


def dataset_versions(name: str) -> list[str]:
    """The version folders of dataset `name` in the configured datasets location (a folder or S3)."""
    import pyarrow.fs as pafs

    datasets = Datasets.open(load_settings())
    infos = datasets.fs.get_file_info(pafs.FileSelector(datasets.path(name), allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory and version_stamp_ms(i.base_name))


def test_build_of_two_lists_on_ray_equals_the_local_build(
        ray_cluster: Any, built: BuiltIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert_builds_equal(built, tmp_path, monkeypatch, ray_env={})


def assert_builds_equal(built: BuiltIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        ray_env: dict[str, str]) -> None:
    """`build A B` on each engine (the Ray one with `ray_env` set too) gives the same states, passages, top-10,
    list filter and list URLs."""
    built_by: dict[str, dict[str, Any]] = {}
    with FixtureWeb(n_hosts=4) as web:
        whole = web.write_list_markdown(tmp_path / "awesome-fixture.md")
        shared = [u for u, s in web.expected_states().items() if s == "ok" and "/posts/" in u][:SHARED_POSTS]
        picks = tmp_path / "picks" / "awesome-picks.md"
        picks.parent.mkdir()
        items = "\n".join(f"* [Pick {i}]({u}) - worth reading." for i, u in enumerate(shared))
        picks.write_text(f"# Picks\n\n## Reading\n\n{items}\n", encoding="utf-8")
        for engine in ("local", "ray"):
            web.reset_counters()  # faults that fail once fail once for each engine
            data_dir = tmp_path / engine
            for key, value in {**FAST_CRAWL_ENV, "LINKLENS_ARCHIVE_URL": web.archive_url,
                               "LINKLENS_DATA_DIR": str(data_dir)}.items():
                monkeypatch.setenv(key, value)
            for key, value in ray_env.items():
                if engine == "ray":
                    monkeypatch.setenv(key, value)
                else:
                    monkeypatch.delenv(key, raising=False)
            seed_caches(built.settings, load_settings())
            result = runner.invoke(app, ["build", str(whole), str(picks), "--engine", engine, "--json"])
            assert result.exit_code == 0, result.output
            report = json.loads(result.stdout)
            with Store.open(data_dir / "linklens.sqlite3") as store:
                states = {str(r["url"]): str(r["state"]) for r in store.link_rows()}
            searcher = Searcher.open(load_settings())
            try:
                top = {q.query: [(r.url, tuple(r.lists)) for r in searcher.search(q.query, k=TOP_K).results]
                       for q in judged_queries()}
                picked = {r.url: tuple(r.lists) for r in
                          searcher.search("how systems scale", k=50, list_name="awesome-picks").results}
                list_urls = {entry["name"]: entry["url"] for entry in searcher.lists()}
                sections = searcher.sections()
                # picks files its links under Reading; the fixture list files them elsewhere
                filed = {name: {r.url for r in searcher.search("how systems scale", k=50, list_name=name,
                                                                section="Reading").results}
                         for name in ("awesome-fixture", "awesome-picks")}
            finally:
                searcher.close()
            built_by[engine] = {"report": report, "states": states, "top": top, "picked": picked, "lists": list_urls,
                                "sections": sections, "filed": filed,
                                "passages": snapshot_passages(data_dir, str(report["index"]["snapshot_id"]))}
            if engine == "ray":  # the crawl's export is the one the index reads: one version of articles/
                built_by[engine]["article_versions"] = dataset_versions(ARTICLES)
    local, ray = built_by["local"], built_by["ray"]
    assert [x["name"] for x in ray["report"]["crawl"]["lists"]] == ["awesome-fixture", "awesome-picks"]
    assert ray["states"] == local["states"]
    assert len(ray["article_versions"]) == 1, ray["article_versions"]
    assert len(set(ray["states"].values())) > 3  # the faults gave several states, not only ok
    assert ray["passages"] == local["passages"] and len(local["passages"]) > 0
    for key in ("articles", "documents", "passages", "model", "index_kind"):
        assert ray["report"]["index"][key] == local["report"]["index"][key], key
    assert ray["top"] == local["top"]
    both = ("awesome-fixture", "awesome-picks")
    assert ray["picked"] == local["picked"] == {url: both for url in shared}  # one article, both its lists
    # a local list is served by its file name only: the folders of the machine are nobody's business
    assert ray["lists"] == local["lists"] == {"awesome-fixture": "awesome-fixture.md",
                                                "awesome-picks": "awesome-picks.md"}
    assert ray["sections"] == local["sections"] and (("Reading",), len(shared)) in local["sections"]
    assert ray["filed"] == local["filed"] == {"awesome-fixture": set(), "awesome-picks": set(shared)}
