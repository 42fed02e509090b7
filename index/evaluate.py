"""Relevance evaluation: nDCG@k, recall@k and MRR@k of each search mode over judged queries.

Runs the same `Searcher.search` the CLI and server use, once per mode, so the
numbers describe what users get. Judgements are JSONL lines
`{"query": "...", "relevant": {"<url>": grade}}` with grade 2 (answers it),
1 (useful) or 0 (judged not relevant). nDCG uses the grades as linear gains (the
trec_eval convention); recall and MRR count any grade ≥ 1 as relevant.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ingest.errors import BadQueryError

if TYPE_CHECKING:
    from index.search import Searcher

logger = logging.getLogger(__name__)

EVAL_MODES = ("dense", "bm25", "hybrid")
DEFAULT_K = 10
METRIC_DIGITS = 4
JUDGEMENT_EXAMPLE = 'each line must look like {"query": "...", "relevant": {"https://...": 2}}'


@dataclass(frozen=True)
class JudgedQuery:
    query: str
    relevant: dict[str, int]  # url -> grade


def load_judgements(path: Path) -> list[JudgedQuery]:
    """Read a JSONL judgement file; a malformed line raises BadQueryError naming the file and line."""
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BadQueryError(f"cannot read judgements {path} ({exc.strerror or exc}) — check the path") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(parse_judgement(line))
        except ValueError as exc:
            raise BadQueryError(f"{path}:{number}: {exc} — {JUDGEMENT_EXAMPLE}") from None
    if not out:
        raise BadQueryError(f"{path} holds no judged queries — {JUDGEMENT_EXAMPLE}")
    return out


def parse_judgement(line: str) -> JudgedQuery:
    """One judgement line; ValueError says what is wrong with it."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise ValueError("expected an object with 'query' and 'relevant'")
    query = row.get("query")
    relevant = row.get("relevant")
    if not isinstance(query, str) or not query.strip():
        raise ValueError("'query' must be a non-empty string")
    if not isinstance(relevant, dict) or not relevant:
        raise ValueError("'relevant' must be a non-empty object of url -> grade")
    for url, grade in relevant.items():
        if not isinstance(grade, int) or isinstance(grade, bool) or grade < 0:
            raise ValueError(f"grade of {url!r} must be a whole number ≥ 0, got {grade!r}")
    if not any(g > 0 for g in relevant.values()):
        raise ValueError("at least one url needs a grade ≥ 1")
    return JudgedQuery(query.strip(), dict(relevant))


def ndcg_at_k(ranked: Sequence[str], grades: dict[str, int], k: int) -> float:
    gains = [grades.get(url, 0) for url in ranked[:k]]
    ideal = sorted((g for g in grades.values() if g > 0), reverse=True)[:k]
    idcg = _dcg(ideal)
    return _dcg(gains) / idcg if idcg else 0.0


def recall_at_k(ranked: Sequence[str], grades: dict[str, int], k: int) -> float:
    relevant = {url for url, g in grades.items() if g > 0}
    return len(relevant.intersection(ranked[:k])) / len(relevant) if relevant else 0.0


def mrr_at_k(ranked: Sequence[str], grades: dict[str, int], k: int) -> float:
    for rank, url in enumerate(ranked[:k], start=1):
        if grades.get(url, 0) > 0:
            return 1.0 / rank
    return 0.0


def _dcg(gains: Sequence[int]) -> float:
    return sum(g / math.log2(rank + 1) for rank, g in enumerate(gains, start=1))


def evaluate(
    searcher: Searcher, judged: Sequence[JudgedQuery], k: int = DEFAULT_K, modes: Sequence[str] = EVAL_MODES
) -> dict[str, dict[str, float]]:
    """Mean metrics per mode: `{mode: {"ndcg@k", "recall@k", "mrr@k"}}`."""
    if not judged:
        raise BadQueryError("no judged queries to evaluate")
    _warn_unknown_urls(searcher, judged)
    out: dict[str, dict[str, float]] = {}
    for mode in modes:
        totals = {f"ndcg@{k}": 0.0, f"recall@{k}": 0.0, f"mrr@{k}": 0.0}
        for item in judged:
            ranked = [r.url for r in searcher.search(item.query, k=k, mode=mode).results]
            totals[f"ndcg@{k}"] += ndcg_at_k(ranked, item.relevant, k)
            totals[f"recall@{k}"] += recall_at_k(ranked, item.relevant, k)
            totals[f"mrr@{k}"] += mrr_at_k(ranked, item.relevant, k)
        out[mode] = {name: round(total / len(judged), METRIC_DIGITS) for name, total in totals.items()}
    return out


def _warn_unknown_urls(searcher: Searcher, judged: Sequence[JudgedQuery]) -> None:
    """Judged URLs missing from the index can never be found; say so instead of silently scoring 0."""
    known = searcher.urls()
    missing = sorted({url for item in judged for url in item.relevant if url not in known})
    if missing:
        logger.warning("%d judged URLs are not in the index (e.g. %s)", len(missing), missing[0])
