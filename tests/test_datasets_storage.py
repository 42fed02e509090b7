"""`storage.Datasets`: versions published by one pointer, on a local folder and on a real S3 API (moto on loopback).

No Ray here: the publishing rules the Ray engine relies on, checked directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pytest

from cli.engines.storage import POINTER, Datasets, check_reachable
from ingest.errors import ConfigError

if TYPE_CHECKING:
    from tests.cluster_fixtures import S3Server

pytest_plugins = ["tests.cluster_fixtures"]

NAME = "things"
KEEP_FOR_AN_HOUR_S = 3600.0


def table(*values: int) -> pa.Table:
    return pa.table({"value": pa.array(values, pa.int64())})


def values(datasets: Datasets, name: str = NAME) -> list[int]:
    files = datasets.files(name)
    return sorted(datasets.dataset(files).to_table().column("value").to_pylist()) if files else []


def write_version(datasets: Datasets, *parts: tuple[int, ...]) -> str:
    version = datasets.new_version()
    datasets.create_dir(datasets.path(NAME, version))
    for i, part in enumerate(parts):
        datasets.write_table(datasets.path(NAME, version, f"part-{i}.parquet"), table(*part))
    return version


@pytest.fixture(params=["folder", "s3"])
def datasets(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Datasets]:
    """The same tests on a local folder and on moto's S3 server, each with a grace period of 0 s."""
    if request.param == "folder":
        yield Datasets.at(str(tmp_path / "datasets"), grace_s=0)
        return
    server: S3Server = request.getfixturevalue("s3_server")
    yield Datasets.at(server.uri(f"storage-{tmp_path.name}"), server.endpoint_url, grace_s=0)


def test_nothing_is_there_until_a_version_is_published(datasets: Datasets) -> None:
    assert not datasets.exists(NAME)
    version = write_version(datasets, (1, 2), (3,))
    assert not datasets.exists(NAME)  # written, not published: a killed writer's version is never read
    datasets.publish(NAME, version)
    assert values(datasets) == [1, 2, 3] and datasets.rows(NAME) == 3
    assert datasets.version(NAME) == version


def test_a_new_version_replaces_the_old_and_the_old_is_collected(datasets: Datasets) -> None:
    first = write_version(datasets, (1,))
    datasets.publish(NAME, first)
    second = write_version(datasets, (7, 8))
    assert values(datasets) == [1]  # until the pointer moves, readers see the first
    datasets.publish(NAME, second)
    assert values(datasets) == [7, 8]
    assert not datasets._parquet_files(datasets.path(NAME, first))  # past the (zero) grace period: removed


def test_loose_parts_are_read_with_the_published_version(datasets: Datasets) -> None:
    datasets.publish(NAME, write_version(datasets, (1,)))
    datasets.write_table(datasets.path(NAME, "part-loose.parquet"), table(5))
    assert values(datasets) == [1, 5]
    assert datasets.loose_files(NAME) == [datasets.path(NAME, "part-loose.parquet")]


def test_superseded_versions_stay_through_the_grace_period(tmp_path: Path) -> None:
    datasets = Datasets.at(str(tmp_path / "datasets"), grace_s=KEEP_FOR_AN_HOUR_S)
    first = write_version(datasets, (1,))
    datasets.publish(NAME, first)
    datasets.publish(NAME, write_version(datasets, (2,)))
    assert values(datasets) == [2]
    assert datasets._parquet_files(datasets.path(NAME, first))  # a reader still on it can finish


def test_the_pointer_is_one_small_object_naming_the_version(tmp_path: Path) -> None:
    datasets = Datasets.at(str(tmp_path / "datasets"))
    version = write_version(datasets, (1,))
    datasets.publish(NAME, version)
    assert (tmp_path / "datasets" / NAME / POINTER).read_text() == version
    assert sorted(p.name for p in (tmp_path / "datasets" / NAME).iterdir()) == [POINTER, version]


def test_bad_locations_are_one_sentence() -> None:
    with pytest.raises(ConfigError, match="LINKLENS_DATASETS_URI"):
        Datasets.at("ftp://example.invalid/x")
    with pytest.raises(ConfigError, match="LINKLENS_S3_ENDPOINT_URL"):
        Datasets.at("s3://bucket/x", "ftp://127.0.0.1:1")


def test_a_folder_only_the_driver_has_is_refused_on_several_nodes(tmp_path: Path) -> None:
    local = Datasets.at(str(tmp_path))
    check_reachable(local, nodes=1)
    with pytest.raises(ConfigError, match="LINKLENS_DATASETS_URI") as refused:
        check_reachable(local, nodes=2)
    assert "2 nodes" in str(refused.value)
    check_reachable(Datasets.at(f"file://{tmp_path}"), nodes=2)  # a folder every node mounts
    check_reachable(Datasets.at("s3://bucket/prefix", "http://127.0.0.1:9"), nodes=2)
