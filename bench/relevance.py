"""Relevance benchmark: dense, BM25 and hybrid search side by side on judged query sets. Prints JSON.

Run: .venv/bin/python bench/relevance.py [--out FILE] [--skip-sysdesign] [--cache-dir DIR] [--per-query] [--sweep]

Two judged sets, each evaluated with `index.evaluate.evaluate` (nDCG@10, Recall@10,
MRR@10 per mode), i.e. through the same `Searcher.search` users get:
* fixture: tests/fixtures/articles.json filled into a store exactly as the tests do
  (`tests.index_fixtures.fill_store`), judged by tests/fixtures/queries.jsonl;
* sysdesign: the 400 articles of ../shared/corpora/sysdesign/articles.jsonl (when
  present), one link per article at https://sysdesign.example/<id>, judged by
  bench/sysdesign_queries.jsonl (keyed by article id). The corpus text is read at
  run time only; nothing of it is written into the repository.
Each build happens in a temporary data folder. Embeddings are cached under
`--cache-dir` (default: a temporary folder), one sub-folder per corpus and passage
size, so a second run with the same folder embeds nothing (~3 min saved on sysdesign).

The fair set (issue 8): when bench/fair_judged.jsonl exists (questions written
before reading the articles, judged by pooling; see bench/pool.py and
bench/merge_grades.py), the same sysdesign index is evaluated on its dev and test
splits with 95% bootstrap intervals, per section and per query kind
(`index.eval_stats.summarise`), for dense, BM25 and hybrid. `--fair-split dev`
evaluates dev only (tune on dev; report test). `--save-runs FILE` saves those runs
for a paired comparison later: `linklens eval bench/fair_judged.jsonl --url-template
https://sysdesign.example/{id} --compare FILE#hybrid OTHER.json#hybrid`.

`--per-query` adds, per sysdesign query and mode, the rank of the first relevant
article and nDCG@10, to see which queries fail. `--sweep` also measures hybrid under
other settings on sysdesign: rrf_k, candidates (search-time only), dense/BM25 weights
in the reciprocal rank fusion (bench-side re-implementation of the fusion step,
checked to reproduce `Searcher.search` at weights 1:1), and LINKLENS_PASSAGE_WORDS
(a rebuild per value). Progress goes to stderr; only the JSON result goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from index import lexical, vectors  # noqa: E402
from index.build import build_index  # noqa: E402
from index.embedder import Embedder  # noqa: E402
from index.eval_stats import summarise  # noqa: E402
from index.evaluate import (  # noqa: E402
    EVAL_MODES,
    JudgedQuery,
    evaluate,
    load_judgements,
    ndcg_at_k,
    only_split,
    rank_queries,
    save_runs,
)
from index.fusion import group_by_article  # noqa: E402
from index.model_ref import configured_model  # noqa: E402
from index.search import CANDIDATES_PER_RESULT, Searcher  # noqa: E402
from ingest.models import CrawlOutcome, Document, LinkState, ListedLink, ListPlacement  # noqa: E402
from ingest.settings import Settings, load_settings  # noqa: E402
from ingest.store import Store  # noqa: E402
from tests.fixtures.relevance import judged_queries as fixture_judged_queries  # noqa: E402
from tests.index_fixtures import fill_store  # noqa: E402

SYSDESIGN_CORPUS = REPO.parent / "shared" / "corpora" / "sysdesign" / "articles.jsonl"
SYSDESIGN_QUERIES = REPO / "bench" / "sysdesign_queries.jsonl"
FAIR_JUDGED = REPO / "bench" / "fair_judged.jsonl"
FAIR_SPLITS = ("dev", "test")
SYSDESIGN_URL = "https://sysdesign.example/{id}"
K = 10
PRIMARY = "ndcg@10"
# --sweep grids (defaults: rrf_k 60, candidates 100, weights 1:1, passage_words 180).
SWEEP_RRF_K = (5, 10, 20, 30, 60, 120)
SWEEP_CANDIDATES = (50, 100, 200, 400)
SWEEP_WEIGHTS = ((1.0, 1.0), (1.5, 1.0), (2.0, 1.0), (1.0, 1.5), (1.0, 2.0))
SWEEP_PASSAGE_WORDS = (100, 120, 250, 350)


def log(message: str) -> None:
    print(f"[relevance] {message}", file=sys.stderr, flush=True)


# -- building ------------------------------------------------------------------


@contextmanager
def built_index(cache_dir: Path, fill, embedder: Embedder, **overrides: object) -> Iterator[Settings]:  # type: ignore[no-untyped-def]
    """A fresh temporary data folder whose cache/ is `cache_dir` (kept), filled by `fill(store)` and built."""
    with tempfile.TemporaryDirectory(prefix="linklens-relevance-") as tmp:
        data_dir = Path(tmp)
        cache_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "cache").symlink_to(cache_dir.resolve(), target_is_directory=True)
        settings = load_settings(data_dir=data_dir, **overrides)
        with Store.open(settings.store_path) as store:
            fill(store)
            started = time.perf_counter()
            report = build_index(settings, store, embedder=embedder)
        log(
            f"built {report.articles} articles, {report.passages} passages "
            f"({report.embedded} embedded, {report.cached} cached) in {time.perf_counter() - started:.1f}s"
        )
        yield settings


# -- the sysdesign corpus ----------------------------------------------------------


def sysdesign_rows() -> list[dict]:
    lines = SYSDESIGN_CORPUS.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def fill_sysdesign(store: Store, rows: list[dict]) -> None:
    """One link per article, section from the record, the record's text as the fetched document."""
    links = [
        ListedLink(SYSDESIGN_URL.format(id=r["id"]), [ListPlacement(r["section"], None, r["title"], i)])
        for i, r in enumerate(rows)
    ]
    store.add_links(links)
    ids = {str(row["url"]): int(str(row["id"])) for row in store.link_rows()}
    for link, r in zip(links, rows, strict=True):
        doc = Document(
            title=r.get("doc_title") or r["title"], text=r["text"], kind="html", sitename="sysdesign.example"
        )
        store.record_outcome(ids[link.url], CrawlOutcome(state=LinkState.OK, reason="fetched", document=doc))


def sysdesign_judged(path: Path, known_ids: set[str]) -> list[JudgedQuery]:
    """The judged queries with article ids turned into URLs; an unknown id is an error, not a silent 0."""
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        unknown = sorted(set(row["relevant"]) - known_ids)
        if unknown:
            raise SystemExit(f"{path}:{number}: unknown article ids {unknown}")
        out.append(JudgedQuery(row["query"], {SYSDESIGN_URL.format(id=i): int(g) for i, g in row["relevant"].items()}))
    return out


def query_counts(judged: Sequence[JudgedQuery]) -> dict[str, object]:
    grades = [g for q in judged for g in q.relevant.values()]
    return {
        "queries": len(judged),
        "judgements": len(grades),
        "grade_2": sum(1 for g in grades if g == 2),
        "grade_1": sum(1 for g in grades if g == 1),
        "mean_relevant_per_query": round(sum(1 for g in grades if g > 0) / len(judged), 2),
    }


# -- reporting ----------------------------------------------------------------------


def verdict(metrics: dict[str, dict[str, float]]) -> dict[str, object]:
    """Does hybrid beat both single modes, per metric (strictly greater)?"""
    per_metric = {
        name: metrics["hybrid"][name] > max(metrics["dense"][name], metrics["bm25"][name]) for name in metrics["hybrid"]
    }
    return {"hybrid_beats_both": per_metric[PRIMARY], "per_metric": per_metric}


def per_query(searcher: Searcher, judged: Sequence[JudgedQuery]) -> list[dict[str, object]]:
    out = []
    for item in judged:
        row: dict[str, object] = {"query": item.query}
        for mode in EVAL_MODES:
            ranked = [r.url for r in searcher.search(item.query, k=K, mode=mode).results]
            first = next((i for i, u in enumerate(ranked, 1) if item.relevant.get(u, 0) > 0), None)
            row[mode] = {"first_relevant": first, "ndcg": round(ndcg_at_k(ranked, item.relevant, K), 3)}
        out.append(row)
    return out


# -- bench-side fusion variants (for --sweep) --------------------------------------------


@dataclass
class _Hit:
    url: str


@dataclass
class _Response:
    results: list[_Hit]


class WeightedHybrid:
    """Quacks like a Searcher for `evaluate`: hybrid with RRF weights, rrf_k and candidates of its own.

    Mirrors `Searcher.search` (same encoder, indexes, article grouping and RRF form)
    but scores an article w_dense / (rrf_k + dense rank) + w_bm25 / (rrf_k + bm25 rank).
    Every `mode` is answered with this hybrid.
    """

    def __init__(self, searcher: Searcher, dense_weight: float, bm25_weight: float, rrf_k: int, candidates: int):
        self._searcher = searcher
        self.weights = (dense_weight, bm25_weight)
        self.rrf_k = rrf_k
        self.candidates = candidates
        self._vectors: dict[str, np.ndarray] = {}

    def urls(self) -> frozenset[str]:
        return self._searcher.urls()

    def search(self, query: str, k: int = K, mode: str | None = None) -> _Response:
        loaded = self._searcher._loaded  # bench-only look inside, as bench/index.py does
        text = " ".join(query.split())
        vector = self._vectors.get(text)
        if vector is None:
            vector = self._vectors[text] = loaded.encoder.encode(text)
        candidates = max(self.candidates, CANDIDATES_PER_RESULT * k)
        rows, scores = vectors.search(loaded.dense, vector, candidates, None)
        dense = group_by_article(rows, scores, loaded.row_article)
        rows, scores = loaded.lexical.top(lexical.terms(text), candidates, None)
        bm25 = group_by_article(rows, scores, loaded.row_article)
        fused = np.zeros(len(loaded.articles))
        for ranking, weight in zip((dense, bm25), self.weights, strict=True):
            fused[ranking.articles] += weight / (self.rrf_k + np.arange(1, len(ranking) + 1))
        present = np.union1d(dense.articles, bm25.articles)
        order = np.lexsort((present, -fused[present]))
        return _Response([_Hit(loaded.articles[i].url) for i in present[order][:k]])


def hybrid_metrics(searcher: Any, judged: Sequence[JudgedQuery]) -> dict[str, float]:
    return evaluate(searcher, judged, k=K, modes=("hybrid",))["hybrid"]


def sweep(settings: Settings, judged: Sequence[JudgedQuery], baseline: dict[str, float]) -> dict[str, object]:
    """Search-time variants over one built index (no rebuild)."""
    out: dict[str, object] = {}
    searcher = Searcher.open(settings)
    try:
        check = hybrid_metrics(WeightedHybrid(searcher, 1.0, 1.0, settings.rrf_k, settings.candidates), judged)
        out["bench_fusion_reproduces_searcher"] = check == baseline
        out["rrf_k"] = {}
        for rrf_k in SWEEP_RRF_K:
            s = Searcher(settings.model_copy(update={"rrf_k": rrf_k}), searcher._loaded)
            out["rrf_k"][str(rrf_k)] = hybrid_metrics(s, judged)  # type: ignore[index]
        out["candidates"] = {}
        for candidates in SWEEP_CANDIDATES:
            s = Searcher(settings.model_copy(update={"candidates": candidates}), searcher._loaded)
            out["candidates"][str(candidates)] = hybrid_metrics(s, judged)  # type: ignore[index]
        out["weights_dense_bm25"] = {}
        for rrf_k in (settings.rrf_k, 10):
            for wd, wb in SWEEP_WEIGHTS:
                fused = WeightedHybrid(searcher, wd, wb, rrf_k, settings.candidates)
                out["weights_dense_bm25"][f"{wd}:{wb} rrf_k={rrf_k}"] = hybrid_metrics(fused, judged)  # type: ignore[index]
    finally:
        searcher.close()
    return out


# -- the two sets -----------------------------------------------------------------------


def run_set(settings: Settings, judged: Sequence[JudgedQuery]) -> tuple[dict[str, dict[str, float]], Searcher]:
    searcher = Searcher.open(settings)
    return evaluate(searcher, judged, k=K), searcher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="Also write the JSON result to this file.")
    parser.add_argument("--skip-sysdesign", action="store_true", help="Only the fixture set.")
    parser.add_argument("--cache-dir", type=Path, help="Keep embedding caches here between runs.")
    parser.add_argument("--queries", type=Path, default=SYSDESIGN_QUERIES, help="sysdesign judgements (by id).")
    parser.add_argument("--per-query", action="store_true", help="Per-query ranks and nDCG on sysdesign.")
    parser.add_argument("--sweep", action="store_true", help="Also try other settings for hybrid on sysdesign.")
    parser.add_argument("--fair", type=Path, default=FAIR_JUDGED, help="The fair judged set (by article id).")
    parser.add_argument("--fair-split", choices=FAIR_SPLITS, help="Only this split of the fair set (default: both).")
    parser.add_argument("--save-runs", type=Path, help="Save the fair set's runs here, for linklens eval --compare.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="linklens-relevance-cache-") as tmp_cache:
        cache_root = args.cache_dir if args.cache_dir else Path(tmp_cache)
        result = run(args, cache_root)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


def fair(args: argparse.Namespace, searcher: Searcher) -> dict[str, object] | str:
    """Dev and test of the fair set with intervals, per section and kind; saved as runs when asked."""
    if not args.fair.exists():
        return f"skipped: {args.fair} not judged yet (bench/pool.py, then bench/merge_grades.py)"
    everything = load_judgements(args.fair, url_template=SYSDESIGN_URL)
    out: dict[str, object] = {}
    saved = {}
    for split in (args.fair_split,) if args.fair_split else FAIR_SPLITS:
        judged = only_split(everything, split)
        log(f"fair set, {split}: {len(judged)} queries")
        runs = {mode: rank_queries(searcher, judged, mode, K) for mode in EVAL_MODES}
        out[split] = summarise(judged, runs, K)
        saved.update({f"{split}-{mode}": run for mode, run in runs.items()})
    if args.save_runs:
        save_runs(args.save_runs, saved, K, {"snapshot": searcher.stats(), "judgements": str(args.fair)})
        log(f"saved {len(saved)} runs to {args.save_runs}")
    return out


def run(args: argparse.Namespace, cache_root: Path) -> dict[str, object]:
    result: dict[str, object] = {"k": K}
    embedder = Embedder(configured_model(load_settings(data_dir=cache_root)))
    fixtures = fixture_judged_queries()
    counts: dict[str, object] = {"fixture": query_counts(fixtures)}
    summary: dict[str, object] = {}

    log("fixture set: building")
    with built_index(cache_root / "fixture", fill_store, embedder) as settings:
        metrics, searcher = run_set(settings, fixtures)
        searcher.close()
    result["fixture"] = metrics
    summary["fixture"] = verdict(metrics)

    if args.skip_sysdesign:
        result["sysdesign"] = "skipped (--skip-sysdesign)"
    elif not SYSDESIGN_CORPUS.exists():
        result["sysdesign"] = f"skipped: {SYSDESIGN_CORPUS} not found"
    else:
        rows = sysdesign_rows()
        judged = sysdesign_judged(args.queries, {r["id"] for r in rows})
        counts["sysdesign"] = {"articles": len(rows), **query_counts(judged)}
        log(f"sysdesign set: {len(rows)} articles, {len(judged)} queries; building (first time: minutes)")
        default_words = load_settings(data_dir=cache_root).passage_words
        cache = cache_root / f"sysdesign-words{default_words}"
        with built_index(cache, lambda store: fill_sysdesign(store, rows), embedder) as settings:
            metrics, searcher = run_set(settings, judged)
            if args.per_query:
                result["sysdesign_per_query"] = per_query(searcher, judged)
            result["fair"] = fair(args, searcher)
            searcher.close()
            result["sysdesign"] = metrics
            summary["sysdesign"] = verdict(metrics)
            if args.sweep:
                log("sweep: rrf_k, candidates, fusion weights")
                result["sweep"] = sweep(settings, judged, metrics["hybrid"])
        if args.sweep:
            result["sweep"]["passage_words"] = {}  # type: ignore[index]
            for words in SWEEP_PASSAGE_WORDS:
                log(f"sweep: passage_words={words} (rebuild)")
                overlap = min(load_settings(data_dir=cache_root).passage_overlap_words, words // 3)
                with built_index(
                    cache_root / f"sysdesign-words{words}",
                    lambda store: fill_sysdesign(store, rows),
                    embedder,
                    passage_words=words,
                    passage_overlap_words=overlap,
                ) as settings:
                    metrics, searcher = run_set(settings, judged)
                    searcher.close()
                result["sweep"]["passage_words"][str(words)] = metrics  # type: ignore[index]
    result["queries"] = counts
    result["summary"] = summary
    return result


if __name__ == "__main__":
    main()
