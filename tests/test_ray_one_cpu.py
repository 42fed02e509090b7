"""A Ray of one CPU: `build --engine ray` finishes (no stage waits forever for a CPU another holds), and a plan
that cannot fit is refused at the start in one sentence.

Ray is started by the command itself (`LINKLENS_RAY_CPUS=1`), as on a one-core container.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.engines.ray_crawl import FETCH_UNIT_CPUS, extraction_plan
from cli.engines.ray_index import TASK_CPUS, cpu_plan
from cli.main import app
from ingest.errors import ConfigError
from ingest.store import Store
from ingest.urls import normalise_url
from tests.conftest import FAST_CRAWL_ENV
from tests.fixtureweb import FixtureWeb, load_fixture_articles
from tests.ray_fixtures import usage_stats_off

runner = CliRunner()
ARTICLES = 12
TOO_MANY_ACTORS = 20


@pytest.mark.parametrize("cpus", [1.0, 2.0, 3.5, 16.0])
def test_every_actor_up_still_leaves_the_tasks_their_share(cpus: float) -> None:
    actors, per_actor = extraction_plan(cpus)
    assert actors * per_actor + FETCH_UNIT_CPUS <= cpus
    embed_actor = cpu_plan(cpus, actors=1)
    assert embed_actor + TASK_CPUS <= cpus or embed_actor == 0  # a lone actor on one CPU reserves none


@pytest.mark.parametrize(("nodes", "actors"), [
    ([1.0, 1.0], 1), ([1.0, 1.0], 2), ([2.0], 2), ([2.0, 2.0], 2), ([2.0, 1.0], 3), ([4.0, 1.0, 1.0], 3)])
def test_wherever_ray_places_the_embedding_actors_one_node_keeps_a_cpu_for_the_tasks(
        nodes: list[float], actors: int) -> None:
    per_actor = cpu_plan(sum(nodes), actors, max(nodes), sum(1 for cpus in nodes if cpus >= TASK_CPUS))
    placements = [Counter(p) for p in itertools.product(range(len(nodes)), repeat=actors)]
    possible = [used for used in placements if all(used[n] * per_actor <= nodes[n] for n in used)]
    assert possible  # the actors fit
    for used in possible:  # a whole CPU on one node for the file listing and the Parquet read
        assert any(nodes[n] - used[n] * per_actor >= TASK_CPUS for n in range(len(nodes))), (per_actor, used)


def test_more_embedding_actors_than_fit_are_refused() -> None:
    with pytest.raises(ConfigError, match="LINKLENS_EMBED_ACTORS=20"):
        cpu_plan(1.0, actors=TOO_MANY_ACTORS)


def test_build_finishes_on_a_one_cpu_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    usage_stats_off()
    data_dir = tmp_path / "data"
    with FixtureWeb(load_fixture_articles()[:ARTICLES], n_hosts=2) as web:
        list_file = web.write_list_markdown(tmp_path / "list.md")
        for key, value in {**FAST_CRAWL_ENV, "LINKLENS_ARCHIVE_URL": web.archive_url,
                           "LINKLENS_DATA_DIR": str(data_dir), "LINKLENS_RAY_CPUS": "1"}.items():
            monkeypatch.setenv(key, value)
        result = runner.invoke(app, ["build", str(list_file), "--engine", "ray", "--json"])
        expected = {normalise_url(u): s for u, s in web.expected_states().items()}
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    with Store.open(data_dir / "linklens.sqlite3") as store:
        states = {normalise_url(str(r["url"])): str(r["state"]) for r in store.link_rows()}
    assert states == expected  # every link settled, none left pending
    assert report["index"]["passages"] > 0

    monkeypatch.setenv("LINKLENS_EMBED_ACTORS", str(TOO_MANY_ACTORS))
    refused = runner.invoke(app, ["index", "--engine", "ray"])
    assert refused.exit_code == 1, refused.output
    assert "LINKLENS_EMBED_ACTORS=20 needs at least" in refused.output and "Traceback" not in refused.output
