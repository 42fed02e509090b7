"""From ranked passages to ranked articles: grouping, and reciprocal rank fusion of dense and BM25.

Why fuse at the article level: an article with four passages about caching
would otherwise fill a passage-level list and push other articles out of both
rankings before they are fused. Each retriever's passage list is first turned
into an article ranking (an article ranks by its best passage, plus a small
bonus for further matching passages), and the two article rankings are fused
with RRF: score = Σ 1 / (rrf_k + rank). RRF needs no score calibration between
cosine and BM25, which have unrelated scales.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Weight of an article's second-best, third-best... passage relative to its best:
# several matching passages are evidence the article is about the topic, but
# less than one strong passage (tuned on the judged fixture queries).
SUPPORT_WEIGHT = 0.1
SUPPORT_PASSAGES = 2


@dataclass(frozen=True)
class RankedArticle:
    """An article (by index into the searcher's article list), its score, and the passage row to show."""

    article: int
    score: float
    best_row: int


def group_by_article(rows: np.ndarray, scores: np.ndarray, row_article: np.ndarray) -> list[RankedArticle]:
    """Articles in order of their best passage's score, plus SUPPORT_WEIGHT × their next passages' scores.

    `rows`/`scores` are one retriever's passages, best first. Ties break by article
    index, i.e. by position in the list.
    """
    best: dict[int, RankedArticle] = {}
    support: dict[int, list[float]] = {}
    for row, score in zip(rows.tolist(), scores.tolist(), strict=True):
        article = int(row_article[row])
        if article not in best:
            best[article] = RankedArticle(article, score, row)
            support[article] = []
        elif len(support[article]) < SUPPORT_PASSAGES:
            support[article].append(score)
    ranked = [RankedArticle(a, r.score + SUPPORT_WEIGHT * sum(support[a]), r.best_row) for a, r in best.items()]
    ranked.sort(key=lambda r: (-r.score, r.article))
    return ranked


def reciprocal_rank_fusion(rankings: Sequence[list[RankedArticle]], rrf_k: int) -> list[RankedArticle]:
    """Fuse article rankings with RRF; an article's passage is the one from the ranking that ranks it best."""
    fused: dict[int, float] = {}
    shown: dict[int, tuple[int, int]] = {}  # article -> (its best rank in any ranking, row)
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            fused[item.article] = fused.get(item.article, 0.0) + 1.0 / (rrf_k + rank)
            if item.article not in shown or rank < shown[item.article][0]:
                shown[item.article] = (rank, item.best_row)
    out = [RankedArticle(a, s, shown[a][1]) for a, s in fused.items()]
    out.sort(key=lambda r: (-r.score, r.article))
    return out
