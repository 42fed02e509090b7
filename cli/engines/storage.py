"""The Ray engine's datasets location, opened once: its filesystem, and how a dataset is read, written and published.

`LINKLENS_DATASETS_URI` is a local folder (one machine), `file:///path` (a folder mounted at the
same path on every node), or `s3://bucket/prefix` (any S3 API; `LINKLENS_S3_ENDPOINT_URL` for an
S3-compatible store, credentials from the usual `AWS_*` variables). `Datasets.open(settings)`
opens it once; the object (picklable, so Ray ships it to workers) is passed to every function
that reads or writes a dataset.

Publishing never renames a folder (object stores cannot, and two renames can be torn apart by a
kill). A dataset `name/` is laid out as:

    name/CURRENT                 the published version's folder name (one small object, replaced whole)
    name/v-<ms>-<hex>/part-*.parquet   versions, each written once under a new unique prefix
    name/part-*.parquet          loose parts (the embedding cache's appends; read with the version)

A writer fills a new version (`new_version`), then `publish` replaces `CURRENT` and removes the
versions older than the grace period (`LINKLENS_DATASETS_GRACE_S`) that are no longer current, so a
reader that listed an older version a moment ago can finish. A kill at any moment leaves `CURRENT`
naming a complete version: the last good dataset stays readable.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ingest.errors import ConfigError, StoreError
from ingest.settings import Settings

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

logger = logging.getLogger(__name__)

POINTER = "CURRENT"
VERSION_PREFIX = "v-"
S3_SCHEME = "s3"
SHARED_FOLDER_SCHEME = "file"
DEFAULT_S3_REGION = "us-east-1"
MULTI_NODE_HINT = (
    "the Ray cluster has {nodes} nodes but the datasets folder {location} is on this machine only — set "
    "LINKLENS_DATASETS_URI to object storage every node reaches (s3://bucket/prefix, with LINKLENS_S3_ENDPOINT_URL "
    "for an S3-compatible store) or to file:///path for a folder mounted at that path on every node"
)


@dataclass(frozen=True)
class Datasets:
    """Where the Ray engine's Parquet datasets live: a pyarrow filesystem and a root path on it.

    `shared` says whether every node of a cluster reads the same files (object storage, or a
    folder given as `file://`); a plain folder is the driver's own.
    """

    fs: pafs.FileSystem
    root: str
    location: str
    shared: bool
    grace_s: float

    @classmethod
    def open(cls, settings: Settings) -> Datasets:
        return cls.at(settings.datasets_location, settings.s3_endpoint_url, settings.datasets_grace_s)

    @classmethod
    def at(cls, location: str, endpoint_url: str = "", grace_s: float = 600.0) -> Datasets:
        """The datasets at `location` (a folder, file:///path or s3://bucket/prefix)."""
        parts = urlsplit(location)
        if "://" not in location:
            import pyarrow.fs as pafs

            root = str(Path(location).expanduser().resolve())
            return cls(pafs.LocalFileSystem(), root, location, shared=False, grace_s=grace_s)
        if parts.scheme == SHARED_FOLDER_SCHEME:
            import pyarrow.fs as pafs

            return cls(pafs.LocalFileSystem(), parts.path.rstrip("/") or "/", location, shared=True, grace_s=grace_s)
        if parts.scheme == S3_SCHEME and parts.netloc:
            root = f"{parts.netloc}{parts.path}".rstrip("/")
            return cls(s3_filesystem(endpoint_url), root, location, shared=True, grace_s=grace_s)
        fs, root = other_filesystem(location)
        return cls(fs, root, location, shared=True, grace_s=grace_s)

    def path(self, *names: str) -> str:
        """A path on `fs` under the root."""
        return "/".join([self.root, *names])

    def uri(self, name: str) -> str:
        """`name` as the user names it (for messages)."""
        return f"{self.location.rstrip('/')}/{name}"

    # Reading

    def version(self, name: str) -> str | None:
        """The published version of `name` (a folder name), or None."""
        try:
            with self.fs.open_input_stream(self.path(name, POINTER)) as stream:
                return stream.read().decode().strip() or None
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {self.uri(name)}/{POINTER} ({exc}) — check LINKLENS_DATASETS_URI, "
                             "LINKLENS_S3_ENDPOINT_URL and the AWS_* credentials") from None

    def files(self, name: str) -> list[str]:
        """The Parquet files that make up `name`: its published version's and its loose parts, sorted."""
        version = self.version(name)
        found = self.loose_files(name)
        if version is not None:
            found += self._parquet_files(self.path(name, version))
        return sorted(found)

    def loose_files(self, name: str) -> list[str]:
        """Parquet files directly in `name/`, outside any version (the embedding cache's appended parts)."""
        return self._parquet_files(self.path(name))

    def exists(self, name: str) -> bool:
        return bool(self.files(name))

    def rows(self, name: str) -> int:
        """Rows of `name`, from its Parquet footers (no data read)."""
        return self.rows_in(self.files(name))

    def rows_in(self, files: list[str]) -> int:
        """Rows of these Parquet files, from their footers (for a caller that has listed them already)."""
        return int(self.dataset(files).count_rows()) if files else 0

    def dataset(self, files: list[str]) -> pads.Dataset:
        import pyarrow.dataset as pads

        return pads.dataset(files, filesystem=self.fs, format="parquet")

    def _parquet_files(self, folder: str) -> list[str]:
        import pyarrow.fs as pafs

        try:
            infos = self.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        except OSError as exc:
            raise StoreError(f"cannot list {folder} on {self.location} ({exc}) — check LINKLENS_DATASETS_URI, "
                             "LINKLENS_S3_ENDPOINT_URL and the AWS_* credentials") from None
        return [i.path for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
                and not i.base_name.startswith((".", "_"))]  # fmt: skip

    # Writing

    @staticmethod
    def new_version() -> str:
        """A new, unique version folder name (nothing is written yet); fill `path(name, it)`, then
        `publish(name, it)`."""
        return f"{VERSION_PREFIX}{int(time.time() * 1000):015d}-{secrets.token_hex(4)}"

    def create_dir(self, folder: str) -> None:
        self.fs.create_dir(folder, recursive=True)

    def write_table(self, path: str, table: pa.Table) -> None:
        """One Parquet file, seen whole or not at all: an object store shows an upload when it completes; a local
        disk gets it under a hidden name first (readers skip names starting with a dot)."""
        import pyarrow.parquet as pq

        if not isinstance(self.fs, _local_fs_type()):
            pq.write_table(table, path, filesystem=self.fs)
            return
        folder, base = path.rsplit("/", 1)
        hidden = f"{folder}/.{base}.{secrets.token_hex(4)}.tmp"
        pq.write_table(table, hidden, filesystem=self.fs)
        self.fs.move(hidden, path)  # type: ignore[attr-defined]  # pyarrow's FileSystem.move (untyped)

    def publish(self, name: str, version: str) -> None:
        """Make `version` the published `name` (one small object replaced), then collect old versions."""
        self.write_pointer(name, version)
        self.collect_garbage(name)

    def write_pointer(self, name: str, version: str) -> None:
        pointer = self.path(name, POINTER)
        self.create_dir(self.path(name))
        if isinstance(self.fs, _local_fs_type()):
            hidden = f"{self.path(name)}/.{POINTER}.{secrets.token_hex(4)}.tmp"
            with open(hidden, "w", encoding="utf-8") as out:  # noqa: PTH123 - a local path by construction
                out.write(version)
                out.flush()
                os.fsync(out.fileno())
            os.replace(hidden, pointer)
            return
        with self.fs.open_output_stream(pointer) as stream:  # an object store shows a PUT whole
            stream.write(version.encode())

    def collect_garbage(self, name: str) -> None:
        """Remove the versions of `name` that are not published and older than the grace period (a reader or a
        writer may still be using a younger one)."""
        import pyarrow.fs as pafs

        current = self.version(name)
        now_ms = time.time() * 1000
        for info in self.fs.get_file_info(pafs.FileSelector(self.path(name), allow_not_found=True)):
            stamp = version_stamp_ms(info.base_name)
            if info.type != pafs.FileType.Directory or stamp is None or info.base_name == current:
                continue
            if now_ms - stamp >= self.grace_s * 1000:
                logger.info("removing %s/%s (superseded)", self.uri(name), info.base_name)
                self.fs.delete_dir(info.path)

    def delete_files(self, paths: list[str]) -> None:
        for path in paths:
            try:
                self.fs.delete_file(path)
            except FileNotFoundError:
                continue


def version_stamp_ms(folder: str) -> int | None:
    """When a version folder was started (ms since the epoch, from its name), or None for another name."""
    if not folder.startswith(VERSION_PREFIX):
        return None
    stamp = folder[len(VERSION_PREFIX):].split("-", 1)[0]
    return int(stamp) if stamp.isdigit() else None


def s3_filesystem(endpoint_url: str) -> pafs.FileSystem:
    """Arrow's S3 filesystem, built from settings and the AWS_* environment only (no region lookup on the network,
    unlike `FileSystem.from_uri`)."""
    import pyarrow.fs as pafs

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_S3_REGION
    if not endpoint_url:
        return pafs.S3FileSystem(region=region)
    parts = urlsplit(endpoint_url if "://" in endpoint_url else f"https://{endpoint_url}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"bad LINKLENS_S3_ENDPOINT_URL {endpoint_url!r} — use http(s)://host:port")
    return pafs.S3FileSystem(region=region, endpoint_override=parts.netloc, scheme=parts.scheme)


def other_filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """Any other filesystem pyarrow knows by its URI (gs://, hdfs://, ...), and the root path on it."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        fs, root = pafs.FileSystem.from_uri(location)
        return fs, root.rstrip("/")
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise ConfigError(f"cannot use the datasets location {location!r} ({exc}) — set LINKLENS_DATASETS_URI to a "
                          "folder, file:///path (a folder every node mounts) or s3://bucket/prefix") from None


def _local_fs_type() -> type:
    import pyarrow.fs as pafs

    return pafs.LocalFileSystem


def check_reachable(datasets: Datasets, nodes: int) -> None:
    """A ConfigError at once when a cluster of several nodes would write to a folder only the driver has."""
    if nodes > 1 and not datasets.shared:
        raise ConfigError(MULTI_NODE_HINT.format(nodes=nodes, location=datasets.location))
