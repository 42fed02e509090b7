"""The Ray engine off one box: a two-node Ray cluster on this machine with its datasets on an S3 API (moto).

The issue's definition of done: `build A B --engine ray` on the cluster gives the local engine's
snapshot; a driver SIGKILLed mid-index resumes without re-embedding what the cache holds; and a
datasets folder only the driver has is refused at once on a cluster of several nodes. And the whole
cluster (its GCS, both raylets and object managers, their workers and agents) lives on 127.0.0.1.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from typer.testing import CliRunner

from cli.engines import ray_index
from cli.main import app
from tests.conftest import FAST_CRAWL_ENV
from tests.fixtureweb import FixtureWeb
from tests.index_fixtures import BuiltIndex
from tests.ray_fixtures import assert_on_loopback_only
from tests.test_ray_build import assert_builds_equal
from tests.test_ray_index import fresh_settings, kill_midway_and_resume

if TYPE_CHECKING:
    from tests.cluster_fixtures import S3Server

pytest_plugins = ["tests.index_fixtures", "tests.cluster_fixtures"]
NODES = 2  # as tests.cluster_fixtures starts them

runner = CliRunner()


def test_the_cluster_has_two_nodes(two_node_ray: Any) -> None:
    assert sum(1 for node in two_node_ray.nodes() if node["Alive"]) == NODES


def test_embedding_actors_size_their_threads_on_their_own_node(two_node_ray: Any) -> None:
    from cli.engines.ray_stages import threads_on_this_node

    share = int(two_node_ray.cluster_resources()["CPU"])  # a lone actor's share: every CPU of the cluster
    on_a_node = two_node_ray.remote(num_cpus=0)(threads_on_this_node)
    threads = two_node_ray.get([on_a_node.remote(share) for _ in range(NODES)])
    assert share == NODES and threads == [1] * NODES  # a node offers one CPU, whatever the cluster or cores


def test_build_on_two_nodes_with_s3_equals_the_local_build(
        two_node_ray: Any, s3_server: S3Server, built: BuiltIndex, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert_builds_equal(built, tmp_path, monkeypatch, ray_env=s3_server.env("build"))


def test_a_killed_driver_on_the_cluster_resumes_from_the_s3_cache(
        two_node_ray: Any, s3_server: S3Server, built: BuiltIndex, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The killed driver cuts the passages itself (a small corpus); the resume hands them to Ray tasks, to be read,
    # cut and joined with the S3 cache there, as a corpus too large for the driver is.
    monkeypatch.setattr(ray_index, "DRIVER_CUT_ARTICLES", 0)
    env = s3_server.env("killed")
    settings = fresh_settings(built, tmp_path / "killed", datasets_uri=env["LINKLENS_DATASETS_URI"],
                              s3_endpoint_url=env["LINKLENS_S3_ENDPOINT_URL"])
    kill_midway_and_resume(settings, str(two_node_ray.get_runtime_context().gcs_address), env)


def test_a_driver_local_datasets_folder_is_refused_on_two_nodes(
        two_node_ray: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FixtureWeb(n_hosts=2) as web:
        list_file = web.write_list_markdown(tmp_path / "list.md")
        for key, value in {**FAST_CRAWL_ENV, "LINKLENS_DATA_DIR": str(tmp_path / "data")}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("LINKLENS_DATASETS_URI", raising=False)
        result = runner.invoke(app, ["crawl", str(list_file), "--engine", "ray"])
        assert web.request_log() == []  # stopped before any fetch
    assert result.exit_code == 1, result.output
    assert "2 nodes" in result.output and "LINKLENS_DATASETS_URI" in result.output
    assert "Traceback" not in result.output


def test_both_nodes_registered_and_talk_on_loopback_only(two_node_ray: Any) -> None:
    """Last in the module: by now the builds above have moved work and objects between the nodes."""
    assert_on_loopback_only(two_node_ray, nodes=NODES)
