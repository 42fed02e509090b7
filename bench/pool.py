"""Pool candidates for judging the fair query set: the top 20 articles of every retrieval variant, per query.

Run: .venv/bin/python bench/pool.py [--cache-dir ../relevance-cache] [--out-dir ../judging]

Why pooling: judging all 400 articles for 170 queries is 68,000 grades; judging
the union of what every variant we may test ranks in its top 20 is a few
thousand, and any article no variant ranks that high cannot move the metrics of
those variants much (the TREC method). Variants (three indexes of the sysdesign
corpus, built as `bench/relevance.py` builds them, embeddings cached under
`--cache-dir` so a rerun embeds nothing):

* on today's defaults (180-word passages, 30 words overlap): dense, bm25 and
  hybrid exactly as `Searcher.search` answers; dense and BM25 over the title
  cards only; BM25 with RM3-style expansion (terms of the top feedback passages);
  dense over one mean vector per article;
* 100-word passages (30 overlap) and 250-word passages (60 overlap): dense and hybrid.

It writes, OUTSIDE the repository (they hold corpus text), judging batches
`batch-NN.jsonl` (one line per query: qid, query, and its candidates in a seeded
random order, each with article id, title, section, the article's first words and
the passages that match the query best) and `pool.json` (which variant found which
article at which rank, for the overlap figures and for `bench/merge_grades.py`).
Only counts go to stdout as JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import relevance  # noqa: E402

from index import lexical  # noqa: E402
from index.embedder import Embedder  # noqa: E402
from index.fusion import group_by_article  # noqa: E402
from index.model_ref import configured_model  # noqa: E402
from index.search import Searcher  # noqa: E402
from ingest.settings import load_settings  # noqa: E402

FAIR_QUERIES = REPO / "bench" / "fair_queries.jsonl"
DEFAULT_CACHE = REPO.parent / "relevance-cache"
DEFAULT_OUT = REPO.parent / "judging"
POOL_DEPTH = 20  # articles per variant and query
BATCHES = 8
SHUFFLE_SEED = 8  # candidate order within a query, so judges see no system's ranking
EXCERPT_WORDS = 120
LEAD_WORDS = 80
EXCERPTS_DENSE = 2  # best passages by meaning ...
EXCERPTS_BM25 = 1  # ... and by words, distinct
CANDIDATE_PASSAGES = 400  # passages looked at per retriever (deep enough for 20 articles)
# RM3-style expansion: terms of the best FEEDBACK_PASSAGES BM25 passages, weighted by
# passage score and term frequency; the original terms count ORIGINAL_WEIGHT times.
FEEDBACK_PASSAGES = 10
EXPANSION_TERMS = 10
ORIGINAL_WEIGHT = 2
# (name, passage words, overlap words, cache folder) of the indexes built.
INDEXES = (
    ("w180", 180, 30, "sysdesign-words180"),
    ("w100", 100, 30, "sysdesign-words100"),
    ("w250", 250, 60, "sysdesign-words250-overlap60"),
)


def log(message: str) -> None:
    print(f"[pool] {message}", file=sys.stderr, flush=True)


@dataclass
class Index:
    """One built index, opened for search, plus what the bench-side variants need from it."""

    name: str
    searcher: Searcher

    def __post_init__(self) -> None:
        loaded = self.searcher._loaded  # bench-only look inside, as bench/relevance.py does
        self.loaded = loaded
        self.card_rows = np.array([a.first_row for a in loaded.articles], dtype=np.int64)
        self.card_mask = np.zeros(loaded.dense.ntotal, dtype=bool)
        self.card_mask[self.card_rows] = True
        self.ids = [a.url.rsplit("/", 1)[1] for a in loaded.articles]
        self._means: np.ndarray | None = None

    def article_means(self) -> np.ndarray:
        """One unit vector per article: the mean of its body passages (the card when it has none)."""
        if self._means is None:
            rows = []
            for a in self.loaded.articles:
                own = np.arange(a.first_row + 1, a.first_row + a.passage_count)
                rows.append(self.loaded.dense.vectors_of(own if len(own) else np.array([a.first_row])))
            means = np.stack([r.mean(axis=0) for r in rows])
            self._means = means / np.linalg.norm(means, axis=1, keepdims=True)
        return self._means

    def by_mode(self, query: str, mode: str) -> list[str]:
        return [r.url.rsplit("/", 1)[1] for r in self.searcher.search(query, k=POOL_DEPTH, mode=mode).results]

    def dense_cards(self, query: str) -> list[str]:
        rows, scores = self.loaded.dense.exact(self.loaded.encoder.encode(query), POOL_DEPTH, self.card_rows)
        return self._articles(rows, scores)

    def bm25_cards(self, query: str) -> list[str]:
        rows, scores = self.loaded.lexical.top(lexical.terms(query), POOL_DEPTH, self.card_mask)
        return self._articles(rows, scores)

    def bm25_rm3(self, query: str) -> list[str]:
        terms = lexical.terms(query)
        rows, scores = self.loaded.lexical.top(terms, FEEDBACK_PASSAGES)
        texts = self.loaded.meta.passage_texts(rows.tolist())
        weights: Counter[str] = Counter()
        for row, score in zip(rows.tolist(), scores.tolist(), strict=True):
            counts = Counter(lexical.terms(texts.get(row, "")))
            total = sum(counts.values()) or 1
            for term, n in counts.items():
                weights[term] += score * n / total
        expansion = [t for t, _ in weights.most_common() if t not in terms and not t.isdigit()][:EXPANSION_TERMS]
        rows, scores = self.loaded.lexical.top(terms * ORIGINAL_WEIGHT + expansion, CANDIDATE_PASSAGES)
        return self._articles(rows, scores)

    def dense_mean(self, query: str) -> list[str]:
        scores = self.article_means() @ self.loaded.encoder.encode(query)
        return [self.ids[i] for i in np.argsort(-scores, kind="stable")[:POOL_DEPTH]]

    def _articles(self, rows: np.ndarray, scores: np.ndarray) -> list[str]:
        ranking = group_by_article(rows, scores, self.loaded.row_article)
        return [self.ids[i] for i in ranking.articles[:POOL_DEPTH].tolist()]

    def excerpts(self, query: str, article_ids: list[str]) -> dict[str, list[str]]:
        """Per article, its passages that match `query` best: EXCERPTS_DENSE by meaning, EXCERPTS_BM25 by words."""
        loaded = self.loaded
        vector = loaded.encoder.encode(query)
        bm25 = loaded.lexical.scores(lexical.terms(query))
        chosen: dict[str, list[int]] = {}
        for article_id in article_ids:
            a = loaded.articles[self.ids.index(article_id)]
            body = np.arange(a.first_row + 1, a.first_row + a.passage_count)
            if not len(body):
                chosen[article_id] = []
                continue
            cosine = loaded.dense.vectors_of(body) @ vector
            rows = [int(body[i]) for i in np.argsort(-cosine, kind="stable")[:EXCERPTS_DENSE]]
            for i in np.argsort(-bm25[body], kind="stable"):
                if bm25[body[i]] > 0 and int(body[i]) not in rows:
                    rows.append(int(body[i]))
                    break
            chosen[article_id] = sorted(rows)[: EXCERPTS_DENSE + EXCERPTS_BM25]
        texts = loaded.meta.passage_texts([r for rows in chosen.values() for r in rows])
        return {aid: [clip(texts[r], EXCERPT_WORDS) for r in rows] for aid, rows in chosen.items()}


def clip(text: str, words: int) -> str:
    tokens = text.split()
    return " ".join(tokens[:words]) + (" …" if len(tokens) > words else "")


def same_start(excerpt: str, text: str, words: int = 20) -> bool:
    """Does the excerpt begin like the article (so it would repeat the lead the judge already sees)?"""
    return excerpt.split()[:words] == text.split()[:words]


def variants(indexes: dict[str, Index]) -> dict[str, Callable[[str], list[str]]]:
    w180, w100, w250 = indexes["w180"], indexes["w100"], indexes["w250"]
    return {
        "dense": lambda q: w180.by_mode(q, "dense"),
        "bm25": lambda q: w180.by_mode(q, "bm25"),
        "hybrid": lambda q: w180.by_mode(q, "hybrid"),
        "dense-cards": w180.dense_cards,
        "bm25-cards": w180.bm25_cards,
        "bm25-rm3": w180.bm25_rm3,
        "dense-article-mean": w180.dense_mean,
        "dense-w100": lambda q: w100.by_mode(q, "dense"),
        "hybrid-w100": lambda q: w100.by_mode(q, "hybrid"),
        "dense-w250": lambda q: w250.by_mode(q, "dense"),
        "hybrid-w250": lambda q: w250.by_mode(q, "hybrid"),
    }


@dataclass
class Pooled:
    qid: str
    query: str
    found: dict[str, dict[str, int]]  # article id -> {variant: rank}


def pool_queries(queries: list[dict], runners: dict[str, Callable[[str], list[str]]]) -> list[Pooled]:
    out = []
    for q in queries:
        found: dict[str, dict[str, int]] = {}
        for name, run in runners.items():
            for rank, article_id in enumerate(run(q["query"]), start=1):
                found.setdefault(article_id, {})[name] = rank
        out.append(Pooled(q["id"], q["query"], found))
    return out


def overlap(pooled: list[Pooled], names: list[str]) -> dict[str, object]:
    """Mean Jaccard of variants' top-20 sets, and how many candidates each variant alone found."""
    sets = [{n: {a for a, by in p.found.items() if n in by} for n in names} for p in pooled]
    jaccard = {
        f"{a} | {b}": round(float(np.mean([len(s[a] & s[b]) / max(1, len(s[a] | s[b])) for s in sets])), 3)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    }
    alone = {n: sum(1 for p in pooled for by in p.found.values() if set(by) == {n}) for n in names}
    return {"mean_jaccard_top20": jaccard, "candidates_only_this_variant_found": alone}


def write_batches(
    out_dir: Path, pooled: list[Pooled], rows: dict[str, dict], excerpts: dict[str, dict[str, list[str]]]
) -> list[dict[str, object]]:
    """Queries dealt round-robin (by id) into BATCHES files; returns each file's name and counts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ordered = sorted(pooled, key=lambda p: p.qid)
    written = []
    for b in range(BATCHES):
        path = out_dir / f"batch-{b + 1:02d}.jsonl"
        lines = []
        for p in ordered[b::BATCHES]:
            ids = sorted(p.found)
            random.Random(f"{SHUFFLE_SEED}-{p.qid}").shuffle(ids)
            candidates = [
                {
                    "article_id": aid,
                    "title": rows[aid]["title"],
                    "section": rows[aid]["section"],
                    "lead": clip(rows[aid]["text"], LEAD_WORDS),
                    "passages": [x for x in excerpts[p.qid][aid] if not same_start(x, rows[aid]["text"])],
                }
                for aid in ids
            ]
            lines.append(json.dumps({"qid": p.qid, "query": p.query, "candidates": candidates}, ensure_ascii=False))
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        written.append(
            {
                "file": path.name,
                "queries": len(lines),
                "candidates": sum(len(ordered[i].found) for i in range(b, len(ordered), BATCHES)),
            }
        )
    return written


def open_indexes(stack: ExitStack, cache_root: Path, rows: list[dict]) -> Iterator[tuple[str, Index]]:
    """Build (from the embedding caches when warm) and open every index in INDEXES; closed by `stack`."""
    embedder = Embedder(configured_model(load_settings(data_dir=cache_root)))
    for name, words, overlap_words, folder in INDEXES:
        log(f"index {name}: {words}-word passages, {overlap_words} overlap (first time: minutes)")
        settings = stack.enter_context(
            relevance.built_index(
                cache_root / folder,
                lambda store: relevance.fill_sysdesign(store, rows),
                embedder,
                passage_words=words,
                passage_overlap_words=overlap_words,
                **relevance.BEFORE_ISSUE_8,  # the hybrid that was pooled: RRF 1 : 1
            )
        )
        searcher = Searcher.open(settings)
        stack.callback(searcher.close)
        yield name, Index(name, searcher)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="Embedding caches (kept).")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help="Where batches go (outside the repo).")
    parser.add_argument("--queries", type=Path, default=FAIR_QUERIES)
    args = parser.parse_args()
    if args.out_dir.resolve().is_relative_to(REPO):
        raise SystemExit(f"--out-dir {args.out_dir} is inside the repository; batches hold corpus text")
    if not relevance.SYSDESIGN_CORPUS.exists():
        raise SystemExit(f"{relevance.SYSDESIGN_CORPUS} not found — the pool needs the sysdesign corpus")
    queries = [json.loads(line) for line in args.queries.read_text(encoding="utf-8").splitlines() if line.strip()]
    corpus = relevance.sysdesign_rows()
    rows = {r["id"]: r for r in corpus}
    started = time.perf_counter()
    with ExitStack() as stack:
        indexes = dict(open_indexes(stack, args.cache_dir, corpus))
        runners = variants(indexes)
        log(f"pooling {len(queries)} queries × {len(runners)} variants, top {POOL_DEPTH} each")
        pooled = pool_queries(queries, runners)
        excerpts = {p.qid: indexes["w100"].excerpts(p.query, sorted(p.found)) for p in pooled}
    sizes = [len(p.found) for p in pooled]
    batches = write_batches(args.out_dir, pooled, rows, excerpts)
    pool_file = {
        "depth": POOL_DEPTH,
        "variants": list(runners),
        "queries": {p.qid: {"query": p.query, "found": p.found} for p in pooled},
    }
    (args.out_dir / "pool.json").write_text(json.dumps(pool_file, indent=1) + "\n", encoding="utf-8")
    result = {
        "queries": len(pooled),
        "variants": list(runners),
        "depth": POOL_DEPTH,
        "candidates_total": sum(sizes),
        "candidates_per_query": {"mean": round(float(np.mean(sizes)), 1), "min": min(sizes), "max": max(sizes)},
        "batches": batches,
        **overlap(pooled, list(runners)),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
