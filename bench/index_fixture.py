"""Index benchmark, small part: embedding throughput, fixture builds (full vs incremental), the real corpus.

Called by bench/index.py (which adds the 10k/100k/1M scale part); kept apart so
each file has one job.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from index.build import build_index  # noqa: E402
from index.embedder import Embedder  # noqa: E402
from index.passages import chunk_text  # noqa: E402
from index.search import Searcher  # noqa: E402
from ingest.models import CrawlOutcome, Document, LinkState, ListedLink, ListPlacement  # noqa: E402
from ingest.settings import load_settings  # noqa: E402
from ingest.store import Store  # noqa: E402
from tests.fixtures.relevance import judged_queries  # noqa: E402
from tests.index_fixtures import fill_store  # noqa: E402

REAL_CORPUS = REPO.parent / "shared" / "corpora" / "sysdesign" / "articles.jsonl"
THROUGHPUT_PASSAGES = 48
THROUGHPUT_ROUNDS = 3


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3)


# -- embedding throughput ----------------------------------------------------


def embedding_throughput(embedder: Embedder, texts: list[str]) -> dict[str, float]:
    """Raw and linklens runs over the same texts, alternated; the best of THROUGHPUT_ROUNDS each.

    The best run is the one least disturbed by other work on the machine, so the
    ratio compares the two code paths rather than the noise.
    """
    model = embedder.model
    model.encode(texts[:8], batch_size=32)
    raw, ours = [], []
    for _ in range(THROUGHPUT_ROUNDS):
        started = time.perf_counter()
        model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        raw.append(time.perf_counter() - started)
        started = time.perf_counter()
        embedder.encode(texts, progress=lambda done, total: None)
        ours.append(time.perf_counter() - started)
    return {
        "passages": len(texts),
        "raw_passages_per_s": round(len(texts) / min(raw), 2),
        "linklens_passages_per_s": round(len(texts) / min(ours), 2),
        "ratio": round(min(raw) / min(ours), 3),
    }


# -- builds -----------------------------------------------------------------


def timed_builds(settings, store: Store, change_link: int, embedder: Embedder | None) -> dict[str, object]:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    full = build_index(settings, store, embedder=embedder)
    full_s = time.perf_counter() - started
    started = time.perf_counter()
    build_index(settings, store)
    unchanged_s = time.perf_counter() - started
    doc = store.document(change_link)
    assert doc is not None
    store.replace_document(
        change_link, Document(**{**doc.__dict__, "text": doc.text + "\n\nOne more closing paragraph."})
    )
    started = time.perf_counter()
    incremental = build_index(settings, store)
    incremental_s = time.perf_counter() - started
    return {
        "articles": full.articles,
        "passages": full.passages,
        "full_build_s": round(full_s, 2),
        "unchanged_rebuild_s": round(unchanged_s, 3),
        "incremental_build_s": round(incremental_s, 3),
        "incremental_embedded": incremental.embedded,
        "incremental_share_of_full": round(incremental_s / full_s, 4),
    }


def fixture_build(embedder: Embedder) -> dict[str, object]:
    """Fresh data folder and caches, model not loaded yet: a first `linklens index` (torch already imported)."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp))
        with Store.open(settings.store_path) as store:
            ids = fill_store(store)
            first = next(iter(ids.values()))
            return timed_builds(settings, store, first, Embedder(embedder.ref))


def real_corpus_rows() -> list[dict]:
    return [json.loads(line) for line in REAL_CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def repo_url(repo: str) -> str:
    """The corpus names repositories as 'owner/name' (or a full URL)."""
    return repo if "://" in repo else f"https://github.com/{repo}"


def fill_real_store(store: Store, rows: list[dict]) -> dict[str, int]:
    links = [
        ListedLink(
            f"{repo_url(r['source_repo'])}/blob/{r['source_commit'][:12]}/{r['source_path']}#{r['id']}",
            [ListPlacement((r["section"],), r["title"], i)],
        )
        for i, r in enumerate(rows)
    ]
    store.add_links(links)
    ids = {row["url"]: int(row["id"]) for row in store.link_rows()}
    for link, r in zip(links, rows, strict=True):
        doc = Document(title=r.get("doc_title") or r["title"], text=r["text"], kind="html", sitename="github.com")
        store.record_outcome(ids[link.url], CrawlOutcome(state=LinkState.OK, reason="fetched", document=doc))
    return ids


def real_corpus_build(embedder: Embedder) -> dict[str, object]:
    rows = real_corpus_rows()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp))
        with Store.open(settings.store_path) as store:
            ids = fill_real_store(store, rows)
            log(f"real corpus: {len(rows)} articles; building (embeds every passage, this takes minutes)")
            result = timed_builds(settings, store, next(iter(ids.values())), embedder)
        searcher = Searcher.open(settings)
        latencies = []
        for item in judged_queries():
            started = time.perf_counter()
            searcher.search(item.query)
            latencies.append((time.perf_counter() - started) * 1000)
        result["search_p50_ms"] = percentile(latencies, 50)
        result["sample"] = {
            q: [r.title for r in searcher.search(q, k=3).results]
            for q in ("how does consistent hashing work", "redis eviction policy", "zookeeper leader election")
        }
        searcher.close()
        return result




def real_passage_texts() -> list[str]:
    return [c for r in real_corpus_rows()[:80] for c in chunk_text(r["text"])]
