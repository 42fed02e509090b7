"""Relevance levers of issue 8, each measured on the fair set's dev split against the old hybrid. JSON out.

Run: .venv/bin/python bench/levers.py [--cache-dir ../relevance-cache] [--split dev] [--only NAME ...]

Tune on dev, report test: this script evaluates the *dev* split only unless told
otherwise, and it is the record of what was tried. Every lever is a `Config` run
through one bench-side pipeline that mirrors `Searcher.search`, checked twice:
its default config reproduces the searcher's hybrid under the settings before
issue 8 (RRF, dense 1 : BM25 1; `baseline_reproduces_searcher_before`), and
`FINAL` reproduces the searcher's hybrid under today's defaults
(`final_reproduces_searcher_today`). Every config is compared query by query with
the old hybrid (`index.eval_stats.compare`: mean difference and its paired 95%
bootstrap interval, per metric); the `final+…` configs, each remaining lever on
top of the final configuration, are also compared with it (`vs_final`).

Passage layouts (size, overlap, heading path in the context) need their own
embeddings: each is built once into its own cache folder under `--cache-dir`
(minutes per layout on two shared cores the first time, seconds after). Query-side
and fusion levers are search-time only. Field-weighted BM25 indexes are rebuilt
in memory from the snapshot's passages (well under a second).

Besides the paired differences it reports, per config, the share of its top-10
articles that no judge saw (unjudged, counted as not relevant): a variant far
from the pooled ones is under-rated by pooling, and above ~5% it needs judging.
The sysdesign corpus is read at run time only; nothing of it is written.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import relevance  # noqa: E402

from index import fusion, lexical, vectors  # noqa: E402
from index.embedder import Embedder  # noqa: E402
from index.eval_stats import compare, summarise  # noqa: E402
from index.evaluate import JudgedQuery, Run, load_judgements, only_split, rank_queries  # noqa: E402
from index.fusion import ArticleRanking  # noqa: E402
from index.meta import META_FILE  # noqa: E402
from index.model_ref import configured_model  # noqa: E402
from index.search import CANDIDATES_PER_RESULT, Searcher  # noqa: E402
from ingest.settings import load_settings  # noqa: E402

DEFAULT_CACHE = REPO.parent / "relevance-cache"
K = 10
# name -> (passage words, overlap words, heading path in context, cache folder under --cache-dir)
LAYOUTS: dict[str, tuple[int, int, bool, str]] = {
    "w180": (180, 30, False, "sysdesign-words180"),
    "w180h": (180, 30, True, "sysdesign-w180-o30-headings"),
    "w150h": (150, 50, True, "sysdesign-w150-o50-headings"),
    "w90h": (90, 45, True, "sysdesign-w90-o45-headings"),
    "w100": (100, 30, False, "sysdesign-words100"),
    "w250": (250, 60, False, "sysdesign-words250-overlap60"),
}


def log(message: str) -> None:
    print(f"[levers] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Config:
    """One way to answer a query; the defaults are the hybrid before issue 8 (RRF, dense 1 : BM25 1)."""

    layout: str = "w180"
    retrievers: tuple[str, ...] = ("dense", "bm25")  # any of dense, bm25, mean (article-mean vectors)
    fusion: str = "rrf"  # rrf | minmax | zscore | max-norm | theoretical (cosine; BM25 / its upper bound)
    rrf_k: int = 60
    weights: tuple[float, ...] = (1.0, 1.0)  # per retriever, same order
    candidates: int = 100
    support_weight: float = 0.1
    support_passages: int = 2
    card_weight_dense: float = 1.0  # multiplies a title card's cosine
    card_weight_bm25: float = 1.0  # multiplies a title card's BM25 score
    context_repeat: int = 1  # BM25: the context (title, section, headings) counted this many times
    bm25_k1: float = lexical.BM25_K1
    bm25_b: float = lexical.BM25_B
    strip_question: str = "none"  # none | dense | bm25 | both: drop question boilerplate
    rm3: tuple[int, int, float] | None = None  # (feedback passages, expansion terms, weight of expansion)
    rm3_source: str = "bm25"  # bm25 | dense | hybrid: where the feedback passages come from
    acronyms: str = "none"  # none | bm25 | dense | both: expand acronyms mined from the corpus
    rocchio: tuple[int, float] | None = None  # dense feedback: (top passages, weight of their mean vector)
    note: str = ""


# -- per-layout state -------------------------------------------------------------------------


@dataclass
class Layout:
    """One built sysdesign index, opened, with what the bench-side pipeline needs from it."""

    name: str
    searcher: Searcher
    folder: Path
    _bm25: dict[tuple[int, float, float], lexical.LexicalIndex] = field(default_factory=dict)
    _vectors: dict[str, np.ndarray] = field(default_factory=dict)
    _means: np.ndarray | None = None
    _passages: list[tuple[str, str, str]] | None = None

    def __post_init__(self) -> None:
        self.loaded = self.searcher._loaded  # bench-only look inside, as bench/relevance.py does
        self.card = np.zeros(self.loaded.dense.ntotal, dtype=bool)
        self.card[[a.first_row for a in self.loaded.articles]] = True

    def passages(self) -> list[tuple[str, str, str]]:
        """(kind, context, text) per row."""
        if self._passages is None:
            with sqlite3.connect(f"file:{self.folder / META_FILE}?mode=ro", uri=True) as conn:
                found = conn.execute("SELECT kind, context, text FROM passages ORDER BY row").fetchall()
            self._passages = [(k, c, t) for k, c, t in found]
        return self._passages

    def bm25(self, repeat: int, k1: float, b: float) -> lexical.LexicalIndex:
        key = (repeat, k1, b)
        if key == (1, lexical.BM25_K1, lexical.BM25_B):
            return self.loaded.lexical
        if key not in self._bm25:
            import bm25s

            docs = [lexical.terms(c) * repeat + lexical.terms(t) for _, c, t in self.passages()]
            retriever = bm25s.BM25(k1=k1, b=b, method=lexical.BM25_METHOD)
            retriever.index(docs, show_progress=False)
            s = retriever.scores
            self._bm25[key] = lexical.LexicalIndex(
                s["data"], s["indices"], s["indptr"], dict(retriever.vocab_dict), len(docs)
            )
        return self._bm25[key]

    def vector(self, text: str) -> np.ndarray:
        if text not in self._vectors:
            self._vectors[text] = self.loaded.encoder.encode(text)
        return self._vectors[text]

    def article_means(self) -> np.ndarray:
        """One unit vector per article: the mean of its body passages (its card when it has none)."""
        if self._means is None:
            out = []
            for a in self.loaded.articles:
                own = np.arange(a.first_row + 1, a.first_row + a.passage_count)
                rows = own if len(own) else np.array([a.first_row])
                out.append(self.loaded.dense.vectors_of(rows).mean(axis=0))
            means = np.stack(out)
            self._means = means / np.linalg.norm(means, axis=1, keepdims=True)
        return self._means


# -- query side ---------------------------------------------------------------------------------

# Leading and trailing phrasings that make a question a question, not what it is about.
_QUESTION_LEAD = re.compile(
    r"^(?:how (?:do|can|should|would|could) (?:i|we|you)|how does|how do|how is|how are|what (?:is|are|does|do)"
    r"(?: the| a| an)?|what should (?:i|we)|why (?:does|do|is|are)|when should (?:i|we)|should (?:i|we)"
    r"|is it (?:safe|possible|ok|okay|a good idea) to|can (?:i|we)|is there a way to)\b\s*",
    re.IGNORECASE,
)
_QUESTION_TAIL = re.compile(
    r"[,;]?\s*(?:how (?:do|can|should) (?:i|we) (?:prevent|avoid|fix|handle|stop) (?:it|this|that)"
    r"|how do (?:i|we) (?:avoid|prevent|fix) (?:it|this|that)|what (?:do|should) (?:i|we) do(?: about it)?)\s*\??$",
    re.IGNORECASE,
)


def strip_question(text: str) -> str:
    stripped = _QUESTION_TAIL.sub("", _QUESTION_LEAD.sub("", text.strip())).strip(" ?,")
    return stripped or text


_ACRONYM_AFTER = re.compile(r"((?:[A-Za-z][\w'-]*\s+){1,6})\(([A-Z][A-Z0-9]{1,6})s?\)")
_ACRONYM_BEFORE = re.compile(r"\b([A-Z][A-Z0-9]{1,6})s?\s+\(((?:[A-Za-z][\w'-]*\s*){2,7})\)")


def mine_acronyms(texts: Sequence[str]) -> dict[str, str]:
    """{acronym (lower case): long form (lower case)} from "long form (ACR)" and "ACR (long form)" in the corpus."""
    votes: Counter[tuple[str, str]] = Counter()
    for text in texts:
        for m in _ACRONYM_AFTER.finditer(text):
            words, acronym = m.group(1).split(), m.group(2)
            parts = _initial_parts(words, acronym)
            if parts:
                votes[(acronym.lower(), " ".join(parts).lower())] += 1
        for m in _ACRONYM_BEFORE.finditer(text):
            acronym, words = m.group(1), m.group(2).split()
            parts = _initial_parts(words, acronym)
            if parts and len(parts) == len(words):
                votes[(acronym.lower(), " ".join(parts).lower())] += 1
    table: dict[str, str] = {}
    for (acronym, long), _ in votes.most_common():
        table.setdefault(acronym, long)
    return table


def _initial_parts(words: list[str], acronym: str) -> list[str] | None:
    """The last words whose initials (hyphen parts count) spell `acronym`, or None."""
    letters = acronym.lower()
    for n in range(1, len(words) + 1):
        tail = words[-n:]
        initials = "".join(p[0] for w in tail for p in w.split("-") if p).lower()
        if initials == letters:
            return tail
        if len(initials) > len(letters):
            return None
    return None


# -- the pipeline ------------------------------------------------------------------------------


class Pipeline:
    """Answers queries for one Config over the layouts; quacks like a Searcher for `rank_queries`."""

    def __init__(self, config: Config, layouts: dict[str, Layout], acronyms: dict[str, dict[str, str]]):
        self.config = config
        self.layout = layouts[config.layout]
        self.acronyms = acronyms.get(config.layout, {})
        self._long = {tuple(lexical.terms(v)): k for k, v in self.acronyms.items()}

    def urls(self) -> frozenset[str]:
        return self.layout.searcher.urls()

    def search(self, query: str, k: int = K, mode: str | None = None) -> Any:
        return _Response([_Hit(self.layout.loaded.articles[i].url) for i in self.rank(query, k)])

    def rank(self, query: str, k: int) -> list[int]:
        c = self.config
        loaded = self.layout.loaded
        text = " ".join(query.split())
        candidates = max(c.candidates, CANDIDATES_PER_RESULT * k)
        dense_text = strip_question(text) if c.strip_question in ("dense", "both") else text
        bm25_text = strip_question(text) if c.strip_question in ("bm25", "both") else text
        if c.acronyms in ("dense", "both"):
            dense_text = self._expand_text(dense_text)
        rankings: list[ArticleRanking] = []
        dense_rows = None
        for name in c.retrievers:
            if name == "dense":
                query_vector = self.layout.vector(dense_text)
                if c.rocchio is not None:
                    top, beta = c.rocchio
                    rows, _ = vectors.search(loaded.dense, query_vector, top)
                    query_vector = query_vector + beta * loaded.dense.vectors_of(rows).mean(axis=0)
                    query_vector = query_vector / np.linalg.norm(query_vector)
                rows, scores = vectors.search(loaded.dense, query_vector, candidates)
                scores = np.where(self.layout.card[rows], scores * c.card_weight_dense, scores)
                dense_rows = rows
                rankings.append(self._group(rows, scores))
            elif name == "bm25":
                rankings.append(self._bm25(bm25_text, candidates, dense_rows))
            elif name == "mean":
                scores = self.layout.article_means() @ self.layout.vector(dense_text)
                order = np.lexsort((np.arange(len(scores)), -scores))[: max(candidates // 2, k)]
                rows = np.array([loaded.articles[i].first_row for i in order], dtype=np.int64)
                rankings.append(ArticleRanking(order.astype(np.int64), scores[order].astype(np.float64), rows))
        if len(rankings) == 1:
            return rankings[0].articles[:k].tolist()
        return self._fuse(rankings)[:k]

    def _group(self, rows: np.ndarray, scores: np.ndarray) -> ArticleRanking:
        c = self.config
        order = np.lexsort((rows, -scores))
        rows, scores = rows[order], scores[order]
        return fusion.group_by_article(
            rows, scores, self.layout.loaded.row_article, c.support_weight, c.support_passages
        )

    def _bm25_weights(self, text: str) -> dict[str, float]:
        weights: Counter[str] = Counter()
        for t in lexical.terms(text):
            weights[t] += 1.0
        if self.config.acronyms in ("bm25", "both"):
            for extra in self._acronym_terms(text):
                weights[extra] = max(weights[extra], 0.5)
        return dict(weights)

    def _acronym_terms(self, text: str) -> list[str]:
        out: list[str] = []
        lowered = lexical.words(text)
        for word in lowered:
            if word in self.acronyms:
                out.extend(lexical.terms(self.acronyms[word]))
        stems = lexical.terms(text)
        for long, acronym in self._long.items():
            n = len(long)
            if n and any(tuple(stems[i : i + n]) == long for i in range(len(stems) - n + 1)):
                out.extend(lexical.terms(acronym))
        return [t for t in out if t not in stems]

    def _expand_text(self, text: str) -> str:
        extra = []
        for word in lexical.words(text):
            if word in self.acronyms:
                extra.append(self.acronyms[word])
        return f"{text} ({'; '.join(extra)})" if extra else text

    def _bm25(self, text: str, candidates: int, dense_rows: np.ndarray | None) -> ArticleRanking:
        c = self.config
        index = self.layout.bm25(c.context_repeat, c.bm25_k1, c.bm25_b)
        weights = self._bm25_weights(text)
        if c.rm3 is not None:
            weights = self._rm3(index, weights, dense_rows)
        scores = weighted_scores(index, weights)
        self._bm25_bound = upper_bound(index, weights)
        scores = np.where(self.layout.card, scores * c.card_weight_bm25, scores)
        hits = np.flatnonzero(scores > 0)
        if hits.size > candidates:
            hits = hits[np.argpartition(-scores[hits], candidates - 1)[:candidates]]
        return self._group(hits, scores[hits])

    def _rm3(
        self, index: lexical.LexicalIndex, weights: dict[str, float], dense_rows: np.ndarray | None
    ) -> dict[str, float]:
        """RM3: add the terms of the best feedback passages, weighted by their score share and term weight."""
        c = self.config
        assert c.rm3 is not None
        feedback, expansion, mix = c.rm3
        if c.rm3_source == "dense" and dense_rows is not None:
            rows = dense_rows[:feedback]
            doc_weights = np.ones(len(rows))
        else:
            scores = weighted_scores(index, weights)
            rows = np.argsort(-scores, kind="stable")[:feedback]
            rows = rows[scores[rows] > 0]
            doc_weights = scores[rows] / max(float(scores[rows].sum()), 1e-9)
        passages = self.layout.passages()
        model: Counter[str] = Counter()
        for row, w in zip(rows.tolist(), doc_weights.tolist(), strict=True):
            _, context, text = passages[row]
            counts = Counter(lexical.terms(context + " " + text))
            total = sum(counts.values()) or 1
            for term, n in counts.items():
                model[term] += w * n / total
        norm = sum(weights.values()) or 1.0
        out = {t: (1 - mix) * w / norm for t, w in weights.items()}
        top = [(t, v) for t, v in model.most_common() if not t.isdigit()][:expansion]
        total = sum(v for _, v in top) or 1.0
        for t, v in top:
            out[t] = out.get(t, 0.0) + mix * v / total
        return out

    def _fuse(self, rankings: list[ArticleRanking]) -> list[int]:
        c = self.config
        n = len(self.layout.loaded.articles)
        fused = np.zeros(n)
        present = np.zeros(n, dtype=bool)
        for name, ranking, weight in zip(c.retrievers, rankings, c.weights, strict=True):
            present[ranking.articles] = True
            if c.fusion == "rrf":
                fused[ranking.articles] += weight / (c.rrf_k + np.arange(1, len(ranking) + 1))
            else:
                s = ranking.scores.astype(np.float64)
                if c.fusion == "minmax":
                    s = (s - s.min()) / max(s.max() - s.min(), 1e-9)
                elif c.fusion == "zscore":
                    s = (s - s.mean()) / max(s.std(), 1e-9)
                    s = s - s.min()  # missing articles get the list's floor, not below it
                elif c.fusion == "max-norm":
                    s = s / max(s.max(), 1e-9)
                elif c.fusion == "theoretical" and name == "bm25":
                    s = s / max(self._bm25_bound, 1e-9)
                fused[ranking.articles] += weight * s
        ids = np.flatnonzero(present)
        return ids[np.lexsort((ids, -fused[ids]))].tolist()


def upper_bound(index: lexical.LexicalIndex, weights: dict[str, float]) -> float:
    """The highest BM25 score any passage could get for the query: each term's best passage score, summed."""
    total = 0.0
    for term, w in weights.items():
        i = index._vocab.get(term)
        if i is not None and w > 0 and index._indptr[i + 1] > index._indptr[i]:
            total += w * float(index._data[index._indptr[i] : index._indptr[i + 1]].max())
    return total


def weighted_scores(index: lexical.LexicalIndex, weights: dict[str, float]) -> np.ndarray:
    """BM25 of every passage for a query whose terms carry weights (a repeated term = weight 2)."""
    out = np.zeros(index.rows, dtype=np.float64)
    for term, w in weights.items():
        i = index._vocab.get(term)
        if i is None or w <= 0:
            continue
        s = slice(index._indptr[i], index._indptr[i + 1])
        out[index._indices[s]] += w * index._data[s]
    return out.astype(np.float32)


@dataclass
class _Hit:
    url: str


@dataclass
class _Response:
    results: list[_Hit]


# -- running -----------------------------------------------------------------------------------


def open_layouts(stack: ExitStack, cache_root: Path, names: Sequence[str]) -> Iterator[tuple[str, Layout]]:
    rows = relevance.sysdesign_rows()
    embedder = Embedder(configured_model(load_settings(data_dir=cache_root)))
    for name in names:
        words, overlap, headings, folder = LAYOUTS[name]
        log(f"layout {name}: {words} words, {overlap} overlap, headings {headings} (first time: minutes)")
        settings = stack.enter_context(
            relevance.built_index(
                cache_root / folder,
                lambda store: relevance.fill_sysdesign(store, rows),
                embedder,
                passage_words=words,
                passage_overlap_words=overlap,
                passage_headings=headings,
            )
        )
        searcher = Searcher.open(settings)
        stack.callback(searcher.close)
        from index import snapshot

        yield name, Layout(name, searcher, snapshot.current_folder(settings.snapshots_dir, settings.data_dir))


def unjudged_share(run: Run, judged: Sequence[JudgedQuery]) -> float:
    seen = total = 0
    for q in judged:
        top = run[q.key].top[:K]
        total += len(top)
        seen += sum(1 for url in top if url not in q.relevant)
    return seen / max(total, 1)


# What the product does now (index.search with default settings), chosen on dev.
FINAL = Config(fusion="zscore", weights=(1.5, 1.0))
# The settings that give the searcher the hybrid before issue 8.
BEFORE = {"fusion": "rrf", "dense_weight": 1.0}


def configs() -> dict[str, Config]:
    """Every lever alone, then combinations: name -> config. Today's hybrid is 'baseline'."""
    base = Config()
    out: dict[str, Config] = {"baseline": base, "final": FINAL}
    out["dense"] = replace(base, retrievers=("dense",), weights=(1.0,))
    out["bm25"] = replace(base, retrievers=("bm25",), weights=(1.0,))
    # passage layouts
    for name in LAYOUTS:
        if name != "w180":
            out[f"layout:{name}"] = replace(base, layout=name)
            out[f"layout:{name}:dense"] = replace(base, layout=name, retrievers=("dense",), weights=(1.0,))
            out[f"layout:{name}:bm25"] = replace(base, layout=name, retrievers=("bm25",), weights=(1.0,))
    # fusion
    for rrf_k in (10, 30, 120):
        out[f"fusion:rrf_k={rrf_k}"] = replace(base, rrf_k=rrf_k)
    for wd, wb in ((1.5, 1.0), (2.0, 1.0), (1.0, 0.5), (1.0, 1.5)):
        out[f"fusion:weights={wd}:{wb}"] = replace(base, weights=(wd, wb))
    for method in ("minmax", "zscore", "max-norm"):
        out[f"fusion:{method}"] = replace(base, fusion=method)
        out[f"fusion:{method}:2:1"] = replace(base, fusion=method, weights=(2.0, 1.0))
    for depth in (50, 200, 400):
        out[f"fusion:candidates={depth}"] = replace(base, candidates=depth)
    # representations
    out["repr:article-mean"] = replace(base, retrievers=("dense", "bm25", "mean"), weights=(1.0, 1.0, 1.0))
    out["repr:article-mean:0.5"] = replace(base, retrievers=("dense", "bm25", "mean"), weights=(1.0, 1.0, 0.5))
    for w in (0.0, 0.8, 1.2):
        out[f"repr:card-dense×{w}"] = replace(base, card_weight_dense=w)
        out[f"repr:card-bm25×{w}"] = replace(base, card_weight_bm25=w)
    # aggregation
    for sw, sp in ((0.0, 0), (0.2, 2), (0.3, 2), (0.1, 4), (0.2, 4)):
        out[f"aggregate:support={sw}×{sp}"] = replace(base, support_weight=sw, support_passages=sp)
    # document side
    for repeat in (2, 3):
        out[f"bm25:context×{repeat}"] = replace(base, context_repeat=repeat)
    for k1, b in ((0.9, 0.4), (1.2, 0.5), (1.5, 0.75), (0.9, 0.75)):
        out[f"bm25:k1={k1},b={b}"] = replace(base, bm25_k1=k1, bm25_b=b)
    # query side
    for where in ("dense", "bm25", "both"):
        out[f"query:strip-question:{where}"] = replace(base, strip_question=where)
        out[f"query:acronyms:{where}"] = replace(base, acronyms=where)
    for fb, terms, mix in ((10, 10, 0.3), (5, 10, 0.3), (10, 20, 0.5), (10, 10, 0.1)):
        out[f"query:rm3={fb},{terms},{mix}"] = replace(base, rm3=(fb, terms, mix))
    out["query:rm3-dense=5,10,0.3"] = replace(base, rm3=(5, 10, 0.3), rm3_source="dense")
    out["query:rm3-dense=10,20,0.5"] = replace(base, rm3=(10, 20, 0.5), rm3_source="dense")
    out["query:rm3-dense=10,10,0.3"] = replace(base, rm3=(10, 10, 0.3), rm3_source="dense")
    for top, beta in ((3, 0.3), (5, 0.5), (10, 0.5)):
        out[f"query:rocchio={top},{beta}"] = replace(base, rocchio=(top, beta))
    out.update(combinations())
    out.update(on_top_of_final())
    return out


def on_top_of_final() -> dict[str, Config]:
    """Each remaining lever added to FINAL: kept only if it beats FINAL itself beyond noise (reported as vs_final)."""
    f = FINAL
    return {
        "final+headings": replace(f, layout="w180h"),
        "final+rm3-dense=10,10,0.3": replace(f, rm3=(10, 10, 0.3), rm3_source="dense"),
        "final+rm3=10,10,0.3": replace(f, rm3=(10, 10, 0.3)),
        "final+rocchio=3,0.3": replace(f, rocchio=(3, 0.3)),
        "final+article-mean:0.5": replace(f, retrievers=("dense", "bm25", "mean"), weights=(1.5, 1.0, 0.75)),
        "final+support=0": replace(f, support_weight=0.0),
        "final+support=0.2×2": replace(f, support_weight=0.2),
        "final+card-dense×0.8": replace(f, card_weight_dense=0.8),
        "final+bm25:context×2": replace(f, context_repeat=2),
        "final+bm25:k1=1.2,b=0.5": replace(f, bm25_b=0.5),
        "final+strip-question": replace(f, strip_question="both"),
        "final+candidates=200": replace(f, candidates=200),
        "final+headings+rm3-dense": replace(f, layout="w180h", rm3=(10, 10, 0.3), rm3_source="dense"),
    }


def combinations() -> dict[str, Config]:
    """The promising levers together (chosen from the single-lever table on dev)."""
    out: dict[str, Config] = {}
    for layout in LAYOUTS:
        base = Config(layout=layout)
        tag = f"combo[{layout}]"
        for method, w in (("zscore", 1.5), ("zscore", 2.0), ("zscore", 3.0), ("minmax", 1.0), ("minmax", 1.5)):
            fused = replace(base, fusion=method, weights=(w, 1.0))
            out[f"{tag}:{method}{w}"] = fused
            out[f"{tag}:{method}{w}+rm3d"] = replace(fused, rm3=(10, 20, 0.5), rm3_source="dense")
            out[f"{tag}:{method}{w}+mean"] = replace(
                fused, retrievers=("dense", "bm25", "mean"), weights=(w, 1.0, 0.5 * w)
            )
            out[f"{tag}:{method}{w}+rm3d+mean"] = replace(
                out[f"{tag}:{method}{w}+mean"], rm3=(10, 20, 0.5), rm3_source="dense"
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--split", choices=("dev", "test"), default="dev")
    parser.add_argument("--only", nargs="*", help="Config names (or prefixes) to run besides the baseline.")
    parser.add_argument("--layouts", nargs="*", default=list(LAYOUTS), help="Layouts to open.")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.split == "test":
        log("WARNING: evaluating the TEST split; only the final configuration may be run on it, once")
    judged = only_split(load_judgements(relevance.FAIR_JUDGED, url_template=relevance.SYSDESIGN_URL), args.split)
    chosen = configs()
    if args.only:
        chosen = {
            n: c for n, c in chosen.items() if n in ("baseline", "final") or any(n.startswith(p) for p in args.only)
        }
    chosen = {n: c for n, c in chosen.items() if c.layout in args.layouts}
    started = time.perf_counter()
    result: dict[str, Any] = {"split": args.split, "queries": len(judged), "k": K, "levers": {}}
    with ExitStack() as stack:
        layouts = dict(open_layouts(stack, args.cache_dir, args.layouts))
        acronyms = {n: mine_acronyms([c + ". " + t for _, c, t in lay.passages()]) for n, lay in layouts.items()}
        result["acronyms_mined"] = {n: len(t) for n, t in acronyms.items()}
        today = layouts["w180"].searcher
        before = Searcher(today._settings.model_copy(update=BEFORE), today._loaded)
        runs: dict[str, Run] = {}
        for name, config in chosen.items():
            runs[name] = rank_queries(Pipeline(config, layouts, acronyms), judged, "hybrid", K)  # type: ignore[arg-type]
        result["baseline_reproduces_searcher_before"] = runs["baseline"] == rank_queries(before, judged, "hybrid", K)
        if "final" in runs:
            result["final_reproduces_searcher_today"] = runs["final"] == rank_queries(today, judged, "hybrid", K)
        summary = summarise(judged, runs, K)
        for name, run in runs.items():
            cmp = compare(judged, runs["baseline"], run, K)
            result["levers"][name] = {
                "metrics": summary["configurations"][name]["metrics"],
                "vs_baseline": {
                    m: {
                        **v["difference"],
                        "beyond_noise": v["beyond_noise"],
                        "better": v["better"],
                        "worse": v["worse"],
                    }
                    for m, v in cmp["metrics"].items()
                },
                "unjudged_top10": round(unjudged_share(run, judged), 3),
            }
            if name.startswith("final+"):
                ontop = compare(judged, runs["final"], run, K)["metrics"]
                result["levers"][name]["vs_final"] = {
                    m: {**v["difference"], "beyond_noise": v["beyond_noise"]} for m, v in ontop.items()
                }
            log(
                f"{name}: ndcg {result['levers'][name]['metrics']['ndcg@10']['mean']:.4f} "
                f"Δ {cmp['metrics']['ndcg@10']['difference']['mean']:+.4f} "
                f"[{cmp['metrics']['ndcg@10']['difference']['low']:+.4f}, "
                f"{cmp['metrics']['ndcg@10']['difference']['high']:+.4f}] "
                f"R@50 {result['levers'][name]['metrics']['recall@50']['mean']:.3f}"
            )
    result["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
