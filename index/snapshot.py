"""Index snapshots: immutable folders under `snapshots_dir`, one `CURRENT` pointer.

Layout of `snapshots_dir/<id>/` (id = UTC build time + short corpus hash):
`manifest.json`, `vectors.npy` (+ `ann.faiss` for the approximate kinds), `bm25/`,
`meta.sqlite3`, `columns/`, and the query encoder (`query_encoder.onnx`,
`tokenizer.json`, `query_encoder.json`) when the model could be exported.

Why immutable folders and a pointer: a build never touches what a server is
reading, and N servers can map the same files. A build writes a hidden temporary
folder, renames it into place (atomic), then replaces `CURRENT` with `os.replace`
(atomic). A reader sees the old snapshot or the new one, never half of one; a
build killed at any point (even SIGKILL) leaves only a temporary folder, which
nothing reads and the next build removes.

One build at a time per data folder: `build_lock` holds an exclusive `flock` on
`snapshots_dir/.build.lock` for the whole build. The kernel releases it when the
holder dies, so a killed build never leaves a stale lock.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from contextlib import AbstractContextManager
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ingest.errors import BuildLockedError, NotBuiltError, SnapshotMismatchError
from ingest.folder_lock import folder_lock

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
VECTORS_FILE = "vectors.npy"
ANN_FILE = "ann.faiss"
BM25_DIR = "bm25"
CURRENT_FILE = "CURRENT"
TEMP_PREFIX = ".building-"
LOCK_FILE = ".build.lock"
# Format 2: memory-mapped vectors.npy + ann.faiss, columns/, streaming-built BM25.
# Format 3: the lists citing each article (columns/article_list_*.npy, facets "lists", articles.lists).
# Format 4: sections as paths of headings (JSON arrays in facets and articles.sections), and which list
# filed each placement (columns/article_label_list.npy).
MANIFEST_FORMAT = 4
# Formats this linklens loads: a format-2 snapshot loads with no lists (a list filter asks for a rebuild);
# a format-3 one with sections split on " / " as it filtered them, and no list+section filter (ditto).
READABLE_FORMATS = (2, 3, 4)


@dataclass(frozen=True)
class Manifest:
    """What a snapshot holds and how it was made; loading refuses one the settings cannot use."""

    snapshot_id: str
    model: str
    dimension: int
    passages: int
    articles: int
    documents: int
    corpus_hash: str
    index_kind: str
    query_encoder: str  # "onnx" or "sentence-transformers"
    built_at: str
    build_seconds: float
    passage_words: int
    passage_overlap_words: int
    index: dict[str, Any] = field(default_factory=dict)  # the dense index's kind and parameters
    versions: dict[str, str] = field(default_factory=dict)
    # How the model read the text (`index.model_ref.ModelProfile`); the searcher puts
    # `query_prefix` in front of every query. 0 = not recorded (a snapshot from before).
    max_seq_length: int = 0
    query_prefix: str = ""
    passage_prefix: str = ""
    format: int = MANIFEST_FORMAT

    def save(self, folder: Path) -> None:
        _write_durably(folder / MANIFEST_FILE, json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SnapshotMismatchError(
                f"snapshot {folder.name} cannot be read ({exc}) — rebuild it: linklens index --rebuild"
            ) from None
        if data.get("format") not in READABLE_FORMATS:
            raise SnapshotMismatchError(
                f"snapshot {folder.name} has manifest format {data.get('format')!r}, this linklens reads "
                f"{', '.join(map(str, READABLE_FORMATS))} — rebuild it: linklens index --rebuild"
            )
        known = set(cls.__dataclass_fields__)
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise SnapshotMismatchError(
                f"snapshot {folder.name} has a manifest without {', '.join(missing)} — rebuild it: linklens index"
            )
        return cls(**{k: v for k, v in data.items() if k in known})


def new_snapshot_id(corpus_hash: str, now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{corpus_hash[:8]}"


def build_lock(snapshots_dir: Path, wait: bool = False) -> AbstractContextManager[None]:
    """Hold the data folder's build lock; BuildLockedError at once if another build holds it.

    The same lock as the crawl's (`ingest.folder_lock`): the holder's pid and start time in the
    message, released by the kernel when the holder dies. `wait` blocks until the build is done
    instead (a finishing Ray crawl exporting the `articles/` a build reads).
    """
    return folder_lock(snapshots_dir / LOCK_FILE, lambda holder: BuildLockedError(
        f"another build ({holder}) is writing a snapshot in {snapshots_dir} — wait for it to finish, "
        "then run the command again"), wait=wait)


def start(snapshots_dir: Path) -> Path:
    """A fresh temporary folder to write a snapshot into; call under `build_lock`.

    Under the lock no other build runs, so any temporary folder left is a killed
    build's: it is removed first.
    """
    snapshots_dir.mkdir(parents=True, exist_ok=True)
    for leftover in snapshots_dir.glob(f"{TEMP_PREFIX}*"):
        logger.info("removing %s, left by a build that did not finish", leftover.name)
        shutil.rmtree(leftover, ignore_errors=True)
    work = snapshots_dir / f"{TEMP_PREFIX}{os.getpid()}-{time.time_ns()}"
    work.mkdir()
    return work


def free_id(snapshots_dir: Path, base_id: str) -> str:
    """`base_id`, or with a `-2`, `-3`... suffix when a build in the same second over the same corpus took it."""
    snapshot_id = base_id
    suffix = 1
    while (snapshots_dir / snapshot_id).exists():
        suffix += 1
        snapshot_id = f"{base_id}-{suffix}"
    return snapshot_id


def publish(snapshots_dir: Path, work: Path, snapshot_id: str) -> None:
    """Flush the finished temporary folder, rename it into place, point CURRENT at it."""
    _fsync_tree(work)
    os.rename(work, snapshots_dir / snapshot_id)  # fails rather than merge if the id was taken
    _fsync_dir(snapshots_dir)
    set_current(snapshots_dir, snapshot_id)


def set_current(snapshots_dir: Path, snapshot_id: str) -> None:
    """Atomically replace the CURRENT pointer (write a temporary file, fsync, os.replace)."""
    tmp = snapshots_dir / f".{CURRENT_FILE}.{os.getpid()}.tmp"
    _write_durably(tmp, snapshot_id + "\n")
    os.replace(tmp, snapshots_dir / CURRENT_FILE)
    _fsync_dir(snapshots_dir)


def current_id(snapshots_dir: Path) -> str | None:
    try:
        value = (snapshots_dir / CURRENT_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return value or None


def current_folder(snapshots_dir: Path, data_dir: Path) -> Path:
    """The folder CURRENT points to; NotBuiltError when there is none."""
    snapshot_id = current_id(snapshots_dir)
    if snapshot_id is None:
        raise NotBuiltError(f"no index in {data_dir} yet — run: linklens build")
    folder = snapshots_dir / snapshot_id
    if not (folder / MANIFEST_FILE).exists():
        raise NotBuiltError(f"the current index {snapshot_id} is missing from {snapshots_dir} — run: linklens build")
    return folder


def check_model(manifest: Manifest, configured_model: str) -> None:
    if manifest.model != configured_model:
        raise SnapshotMismatchError(
            f"snapshot {manifest.snapshot_id} was built with model {manifest.model!r} but {configured_model!r} "
            f"is configured — rebuild with the configured model (linklens index --rebuild) or set "
            f"LINKLENS_MODEL={manifest.model!r} to use this snapshot"
        )


def list_ids(snapshots_dir: Path) -> list[str]:
    """Published snapshot ids, oldest first (ids start with their UTC build time)."""
    if not snapshots_dir.exists():
        return []
    return sorted(
        p.name
        for p in snapshots_dir.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_FILE).exists()
    )


def prune(snapshots_dir: Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` snapshots, never the current one; returns the deleted ids."""
    current = current_id(snapshots_dir)
    ids = list_ids(snapshots_dir)
    kept = set(ids[-keep:]) if keep > 0 else set()
    doomed = [i for i in ids if i not in kept and i != current]
    for snapshot_id in doomed:
        shutil.rmtree(snapshots_dir / snapshot_id, ignore_errors=True)
        logger.info("deleted old snapshot %s", snapshot_id)
    return doomed


def _write_durably(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """Flush every file of a snapshot before it becomes visible, so a crash cannot publish a torn one."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))
