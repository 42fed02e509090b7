"""Relevance benchmark: dense, BM25, the old hybrid and today's final configuration side by side. Prints JSON.

Run: .venv/bin/python bench/relevance.py [--out FILE] [--skip-sysdesign] [--cache-dir DIR] [--per-query]
     [--fair-split dev|test] [--save-runs FILE] [--no-latency]

Three judged sets, each evaluated through the same `Searcher.search` users get:
* fixture: tests/fixtures/articles.json filled into a store exactly as the tests do
  (`tests.index_fixtures.fill_store`), judged by tests/fixtures/queries.jsonl;
* sysdesign: the 400 articles of ../shared/corpora/sysdesign/articles.jsonl (when
  present), one link per article at https://sysdesign.example/<id>, judged by
  bench/sysdesign_queries.jsonl (90 questions of our own, keyed by article id). The
  corpus text is read at run time only; nothing of it is written into the repository;
* fair (issue 8): the same sysdesign index on bench/fair_judged.jsonl, questions
  written before reading the articles and judged by pooling (bench/pool.py,
  bench/merge_grades.py), on its dev and test splits with 95% bootstrap intervals,
  per section and per query kind (`index.eval_stats.summarise`).
Configurations: `dense`, `bm25`, `hybrid` (the hybrid before issue 8: reciprocal
rank fusion, dense 1 : BM25 1), `final` (today's defaults: standardised score
fusion, dense 1.5 : BM25 1; chosen on dev with bench/levers.py), and `final_float` /
`final_int8` (the same with each query encoder), plus the paired comparisons
final − hybrid and final_int8 − final_float per split (`index.eval_stats.compare`). Tune on dev;
report test. `--fair-split dev` evaluates dev only. `--save-runs FILE` saves the
fair runs for `linklens eval --compare`.

Latency: the in-process p50/p99 of `Searcher.search(query, k=10)` (query encoding
included) over the fair set's 170 questions, final and old hybrid in the same run,
timed while holding /tmp/linklens-bench.lock (the lock every reported benchmark
takes, so two benchmarks never overlap on the shared cores); `--no-latency` skips it.
Each build happens in a temporary data folder. Embeddings are cached under
`--cache-dir` (default: a temporary folder), one sub-folder per corpus and passage
size, so a second run with the same folder embeds nothing (~4 min saved on sysdesign).
`--per-query` adds, per sysdesign query and mode, the rank of the first relevant
article and nDCG@10. Progress goes to stderr; only the JSON result goes to stdout.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from index.build import build_index  # noqa: E402
from index.embedder import Embedder  # noqa: E402
from index.eval_stats import compare, summarise  # noqa: E402
from index.evaluate import (  # noqa: E402
    EVAL_MODES,
    JudgedQuery,
    Run,
    evaluate,
    load_judgements,
    ndcg_at_k,
    only_split,
    rank_queries,
    save_runs,
)
from index.model_ref import configured_model  # noqa: E402
from index.search import Searcher  # noqa: E402
from ingest.models import CrawlOutcome, Document, LinkState, ListedLink, ListPlacement  # noqa: E402
from ingest.settings import Settings, load_settings  # noqa: E402
from ingest.store import Store  # noqa: E402
from tests.fixtures.relevance import judged_queries as fixture_judged_queries  # noqa: E402
from tests.index_fixtures import fill_store  # noqa: E402

# Beside the repository; a git worktree one folder deeper (../../shared) finds it too.
SYSDESIGN_CORPUS = next(
    (p for p in (REPO.parent / "shared" / "corpora" / "sysdesign" / "articles.jsonl",
                 REPO.parent.parent / "shared" / "corpora" / "sysdesign" / "articles.jsonl") if p.exists()),
    REPO.parent / "shared" / "corpora" / "sysdesign" / "articles.jsonl",
)  # fmt: skip
SYSDESIGN_QUERIES = REPO / "bench" / "sysdesign_queries.jsonl"
FAIR_JUDGED = REPO / "bench" / "fair_judged.jsonl"
FAIR_SPLITS = ("dev", "test")
FAIR_QUERIES = REPO / "bench" / "fair_queries.jsonl"
SYSDESIGN_URL = "https://sysdesign.example/{id}"
K = 10
PRIMARY = "ndcg@10"
# The settings that give the searcher the hybrid before issue 8 (reciprocal rank fusion, 1 : 1).
BEFORE_ISSUE_8 = {"fusion": "rrf", "dense_weight": 1.0}
# Today's defaults with each query encoder (issue 18: is the 8-bit one as good as the float one?).
QUERY_PRECISIONS = ("float", "int8")
BENCH_LOCK = Path("/tmp/linklens-bench.lock")
LATENCY_ROUNDS = 5
LATENCY_WARMUP = 20


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
        ListedLink(SYSDESIGN_URL.format(id=r["id"]), [ListPlacement((r["section"],), r["title"], i)])
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
    """Does the final configuration beat both single modes, per metric (strictly greater)?"""
    per_metric = {
        name: metrics["final"][name] > max(metrics["dense"][name], metrics["bm25"][name]) for name in metrics["final"]
    }
    return {"final_beats_both": per_metric[PRIMARY], "per_metric": per_metric}


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


# -- the sets -----------------------------------------------------------------------------


class Configurations:
    """The searchers behind the four configurations: today's defaults, and the hybrid before issue 8."""

    def __init__(self, settings: Settings) -> None:
        self.today = Searcher.open(settings)
        self.before = Searcher.open(settings.model_copy(update=BEFORE_ISSUE_8))
        self.precisions = {p: Searcher.open(settings.model_copy(update={"query_precision": p}))
                           for p in QUERY_PRECISIONS}  # fmt: skip

    def runs(self, judged: Sequence[JudgedQuery]) -> dict[str, Run]:
        return {
            "dense": rank_queries(self.today, judged, "dense", K),
            "bm25": rank_queries(self.today, judged, "bm25", K),
            "hybrid": rank_queries(self.before, judged, "hybrid", K),
            "final": rank_queries(self.today, judged, "hybrid", K),
            **{f"final_{p}": rank_queries(s, judged, "hybrid", K) for p, s in self.precisions.items()},
        }

    def metrics(self, judged: Sequence[JudgedQuery]) -> dict[str, dict[str, float]]:
        """Mean metrics per configuration (the old sets' shape: no intervals)."""
        today = evaluate(self.today, judged, k=K)
        before = evaluate(self.before, judged, k=K, modes=("hybrid",))
        return {"dense": today["dense"], "bm25": today["bm25"], "hybrid": before["hybrid"], "final": today["hybrid"]}

    def close(self) -> None:
        self.today.close()
        self.before.close()
        for searcher in self.precisions.values():
            searcher.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="Also write the JSON result to this file.")
    parser.add_argument("--skip-sysdesign", action="store_true", help="Only the fixture set.")
    parser.add_argument("--cache-dir", type=Path, help="Keep embedding caches here between runs.")
    parser.add_argument("--queries", type=Path, default=SYSDESIGN_QUERIES, help="sysdesign judgements (by id).")
    parser.add_argument("--per-query", action="store_true", help="Per-query ranks and nDCG on sysdesign.")
    parser.add_argument("--fair", type=Path, default=FAIR_JUDGED, help="The fair judged set (by article id).")
    parser.add_argument("--fair-split", choices=FAIR_SPLITS, help="Only this split of the fair set (default: both).")
    parser.add_argument("--save-runs", type=Path, help="Save the fair set's runs here, for linklens eval --compare.")
    parser.add_argument("--no-latency", action="store_true", help="Skip timing the final configuration.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="linklens-relevance-cache-") as tmp_cache:
        cache_root = args.cache_dir if args.cache_dir else Path(tmp_cache)
        result = run(args, cache_root)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


def fair(args: argparse.Namespace, configurations: Configurations) -> dict[str, object] | str:
    """Dev and test of the fair set: intervals, per section and kind, final vs hybrid paired; runs saved if asked."""
    if not args.fair.exists():
        return f"skipped: {args.fair} not judged yet (bench/pool.py, then bench/merge_grades.py)"
    everything = load_judgements(args.fair, url_template=SYSDESIGN_URL)
    out: dict[str, object] = {}
    saved = {}
    for split in (args.fair_split,) if args.fair_split else FAIR_SPLITS:
        judged = only_split(everything, split)
        log(f"fair set, {split}: {len(judged)} queries")
        runs = configurations.runs(judged)
        out[split] = {
            **summarise(judged, runs, K),
            "final_vs_hybrid": compare(judged, runs["hybrid"], runs["final"], K, labels=("hybrid", "final")),
            "int8_vs_float_queries": compare(
                judged, runs["final_float"], runs["final_int8"], K, labels=("final_float", "final_int8")
            ),
        }
        saved.update({f"{split}-{label}": run for label, run in runs.items()})
    if args.save_runs:
        save_runs(args.save_runs, saved, K, {"snapshot": configurations.today.stats(), "judgements": str(args.fair)})
        log(f"saved {len(saved)} runs to {args.save_runs}")
    return out


def latency(configurations: Configurations) -> dict[str, object]:
    """In-process search latency (query encoding included) of the final configuration and the old hybrid.

    Timed while holding the shared bench lock, both in the same run and interleaved
    query by query, so their ratio is meaningful on a noisy machine even when the
    absolute figures are not.
    """
    queries = [json.loads(line)["query"] for line in FAIR_QUERIES.read_text(encoding="utf-8").splitlines() if line]
    out: dict[str, object] = {"queries": len(queries), "rounds": LATENCY_ROUNDS, "k": K}
    BENCH_LOCK.touch(exist_ok=True)
    with BENCH_LOCK.open("r+") as lock:
        log(f"latency: waiting for {BENCH_LOCK}")
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            pairs = (("final", configurations.today), ("hybrid", configurations.before))
            timings: dict[str, list[float]] = {label: [] for label, _ in pairs}
            for _, searcher in pairs:
                for q in queries[:LATENCY_WARMUP]:
                    searcher.search(q, k=K)
            for round_ in range(LATENCY_ROUNDS):
                for i, q in enumerate(queries):
                    # interleaved, alternating which goes first, so both see the same machine
                    for label, searcher in pairs if (i + round_) % 2 == 0 else pairs[::-1]:
                        started = time.perf_counter()
                        searcher.search(q, k=K)
                        timings[label].append((time.perf_counter() - started) * 1000)
            for label, values in timings.items():
                out[label] = {
                    "p50_ms": round(float(np.percentile(values, 50)), 3),
                    "p99_ms": round(float(np.percentile(values, 99)), 3),
                }
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    out["final_over_hybrid_p50"] = round(out["final"]["p50_ms"] / out["hybrid"]["p50_ms"], 3)  # type: ignore[index]
    return out


def run(args: argparse.Namespace, cache_root: Path) -> dict[str, object]:
    result: dict[str, object] = {"k": K, "configurations": {
        "dense": "dense only", "bm25": "BM25 only",
        "hybrid": "before issue 8: reciprocal rank fusion (rrf_k 60), dense 1 : BM25 1",
        "final": "today's defaults: standardised score fusion, dense 1.5 : BM25 1",
        "final_float": "today's defaults with the float query encoder (LINKLENS_QUERY_PRECISION=float)",
        "final_int8": "today's defaults with the 8-bit query encoder (LINKLENS_QUERY_PRECISION=int8)",
    }}  # fmt: skip
    embedder = Embedder(configured_model(load_settings(data_dir=cache_root)))
    fixtures = fixture_judged_queries()
    counts: dict[str, object] = {"fixture": query_counts(fixtures)}
    summary: dict[str, object] = {}

    log("fixture set: building")
    with built_index(cache_root / "fixture", fill_store, embedder) as settings:
        configurations = Configurations(settings)
        metrics = configurations.metrics(fixtures)
        configurations.close()
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
            configurations = Configurations(settings)
            try:
                metrics = configurations.metrics(judged)
                if args.per_query:
                    result["sysdesign_per_query"] = per_query(configurations.today, judged)
                result["fair"] = fair(args, configurations)
                if not args.no_latency:
                    result["latency"] = latency(configurations)
            finally:
                configurations.close()
            result["sysdesign"] = metrics
            summary["sysdesign"] = verdict(metrics)
    result["queries"] = counts
    result["summary"] = summary
    return result


if __name__ == "__main__":
    main()
