"""Index snapshots: immutable folders under `snapshots_dir`, one `CURRENT` pointer.

Layout of `snapshots_dir/<id>/` (id = UTC build time + short corpus hash):
`manifest.json`, `vectors.faiss`, `bm25/`, `meta.sqlite3`, and the query encoder
(`query_encoder.onnx`, `tokenizer.json`, `query_encoder.json`) when the model
could be exported.

Why immutable folders and a pointer: a build never touches what a server is
reading. It writes a hidden temporary folder, renames it into place (atomic),
then replaces `CURRENT` with `os.replace` (atomic). A reader sees the old
snapshot or the new one, never half of one; a killed build leaves only a
temporary folder, cleaned up by the next build.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ingest.errors import NotBuiltError, SnapshotMismatchError

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
VECTORS_FILE = "vectors.faiss"
BM25_DIR = "bm25"
CURRENT_FILE = "CURRENT"
TEMP_PREFIX = ".building-"
# A temporary folder older than this is a crashed build's, not a running one's.
STALE_TEMP_S = 6 * 3600
MANIFEST_FORMAT = 1


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
        if data.get("format") != MANIFEST_FORMAT:
            raise SnapshotMismatchError(
                f"snapshot {folder.name} has manifest format {data.get('format')!r}, this linklens reads "
                f"{MANIFEST_FORMAT} — rebuild it: linklens index --rebuild"
            )
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def new_snapshot_id(corpus_hash: str, now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{corpus_hash[:8]}"


def start(snapshots_dir: Path, base_id: str) -> tuple[Path, str]:
    """A fresh temporary folder to write a snapshot into, and the id it will be published as.

    Cleans crashed builds' leftovers first. Two builds within the same second over
    the same corpus get `-2`, `-3`... suffixes.
    """
    snapshots_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(snapshots_dir)
    snapshot_id = base_id
    suffix = 1
    while (snapshots_dir / snapshot_id).exists():
        suffix += 1
        snapshot_id = f"{base_id}-{suffix}"
    work = snapshots_dir / f"{TEMP_PREFIX}{snapshot_id}-{os.getpid()}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    return work, snapshot_id


def publish(snapshots_dir: Path, work: Path, snapshot_id: str) -> None:
    """Flush the finished temporary folder, rename it into place, point CURRENT at it."""
    _fsync_tree(work)
    os.rename(work, snapshots_dir / snapshot_id)  # fails rather than merge if a concurrent build took the id
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


def _remove_stale_temps(snapshots_dir: Path) -> None:
    cutoff = time.time() - STALE_TEMP_S
    for p in snapshots_dir.glob(f"{TEMP_PREFIX}*"):
        try:
            if p.stat().st_mtime < cutoff:
                shutil.rmtree(p, ignore_errors=True)
        except FileNotFoundError:
            pass


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
