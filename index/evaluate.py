"""Relevance evaluation: nDCG@k, recall@k, recall@50 and MRR@k of search configurations over judged queries.

Runs the same `Searcher.search` the CLI and server use, once per mode, so the
numbers describe what users get. Judgements are JSONL lines
`{"query": "...", "relevant": {"<url>": grade}}` with grade 2 (answers it),
1 (useful) or 0 (judged not relevant). Optional fields describe the query:
`id`, `section`, `kind` ("keywords" or "question") and `split` ("dev" or
"test"); reports break metrics down by section and kind when they are there.
nDCG uses the grades as linear gains (the trec_eval convention); recall and MRR
count any grade ≥ 1 as relevant.

What one configuration returned for every query is a *run*; runs can be saved
to a file (`save_runs`) and compared later with another configuration without
searching again (see `index.eval_stats`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.errors import BadQueryError

if TYPE_CHECKING:
    from index.search import Searcher

logger = logging.getLogger(__name__)

EVAL_MODES = ("dense", "bm25", "hybrid")
DEFAULT_K = 10
# Recall this deep says whether a better ranker (or a re-ranker) could still find an article.
DEEP_RECALL_K = 50
METRIC_DIGITS = 4
JUDGEMENT_EXAMPLE = 'each line must look like {"query": "...", "relevant": {"https://...": 2}}'
QUERY_FIELDS = ("id", "section", "kind", "split")
RUN_FILE_FORMAT = "linklens-eval-runs/1"
RUN_EXAMPLE = "write one with: linklens eval JUDGED --save-run FILE"
ID_PLACEHOLDER = "{id}"


@dataclass(frozen=True)
class JudgedQuery:
    """One judged query; `relevant` maps a URL to its grade. The other fields are optional labels."""

    query: str
    relevant: dict[str, int]  # url -> grade
    id: str | None = None
    section: str | None = None
    kind: str | None = None
    split: str | None = None

    @property
    def key(self) -> str:
        """How runs name this query: its id if it has one, else its text."""
        return self.id or self.query


@dataclass(frozen=True)
class RankedQuery:
    """What one configuration returned for one query: `top` from a search for k, `deep` for DEEP_RECALL_K.

    One search for the deeper of the two: a search's order does not depend on k
    (issue 17), so `top` is its first k, exactly what a user asking for k sees.
    """

    top: list[str]
    deep: list[str]


Run = dict[str, RankedQuery]  # JudgedQuery.key -> what came back


# -- judgements ------------------------------------------------------------------------


def load_judgements(path: Path, url_template: str | None = None) -> list[JudgedQuery]:
    """Read a JSONL judgement file; a malformed line raises BadQueryError naming the file and line.

    `url_template` (e.g. "https://sysdesign.example/{id}") turns judged article ids into URLs.
    """
    if url_template is not None and ID_PLACEHOLDER not in url_template:
        raise BadQueryError(f"the URL template {url_template!r} lacks {ID_PLACEHOLDER} — e.g. https://site/{{id}}")
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BadQueryError(f"cannot read judgements {path} ({exc.strerror or exc}) — check the path") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = parse_judgement(line)
        except ValueError as exc:
            raise BadQueryError(f"{path}:{number}: {exc} — {JUDGEMENT_EXAMPLE}") from None
        if url_template is not None:
            relevant = {url_template.replace(ID_PLACEHOLDER, key): g for key, g in item.relevant.items()}
            item = JudgedQuery(item.query, relevant, item.id, item.section, item.kind, item.split)
        out.append(item)
    if not out:
        raise BadQueryError(f"{path} holds no judged queries — {JUDGEMENT_EXAMPLE}")
    keys = [item.key for item in out]
    if len(set(keys)) != len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise BadQueryError(f"{path}: the query {twice!r} is judged twice — merge its judgements into one line")
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
    labels: dict[str, str | None] = {}
    for name in QUERY_FIELDS:
        value = row.get(name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ValueError(f"'{name}' must be a non-empty string when given, got {value!r}")
        labels[name] = value.strip() if value is not None else None
    return JudgedQuery(query.strip(), dict(relevant), **labels)


def only_split(judged: Sequence[JudgedQuery], split: str | None) -> list[JudgedQuery]:
    """The queries of one split ("dev", "test"); all of them for None. An empty result is an error."""
    if split is None:
        return list(judged)
    chosen = [q for q in judged if q.split == split]
    if not chosen:
        found = sorted({q.split for q in judged if q.split})
        hint = f"splits in the file: {', '.join(found)}" if found else "the file has no 'split' fields"
        raise BadQueryError(f"no judged query is in split {split!r} — {hint}")
    return chosen


# -- metrics -------------------------------------------------------------------------------


def ndcg_at_k(ranked: Sequence[str], grades: Mapping[str, int], k: int) -> float:
    gains = [grades.get(url, 0) for url in ranked[:k]]
    ideal = sorted((g for g in grades.values() if g > 0), reverse=True)[:k]
    idcg = _dcg(ideal)
    return _dcg(gains) / idcg if idcg else 0.0


def recall_at_k(ranked: Sequence[str], grades: Mapping[str, int], k: int) -> float:
    relevant = {url for url, g in grades.items() if g > 0}
    return len(relevant.intersection(ranked[:k])) / len(relevant) if relevant else 0.0


def mrr_at_k(ranked: Sequence[str], grades: Mapping[str, int], k: int) -> float:
    for rank, url in enumerate(ranked[:k], start=1):
        if grades.get(url, 0) > 0:
            return 1.0 / rank
    return 0.0


def _dcg(gains: Sequence[int]) -> float:
    return sum(g / math.log2(rank + 1) for rank, g in enumerate(gains, start=1))


def metric_names(k: int) -> list[str]:
    """The reported metrics in order: nDCG@k, recall@k, recall@50, MRR@k (recall@k once if k ≥ 50)."""
    names = [f"ndcg@{k}", f"recall@{k}", f"recall@{DEEP_RECALL_K}", f"mrr@{k}"]
    return list(dict.fromkeys(names))


def query_metrics(ranked: RankedQuery, grades: Mapping[str, int], k: int) -> dict[str, float]:
    """Every metric of one query; the @k ones from `top`, recall@50 from `deep`."""
    return {
        f"ndcg@{k}": ndcg_at_k(ranked.top, grades, k),
        f"recall@{k}": recall_at_k(ranked.top, grades, k),
        f"recall@{DEEP_RECALL_K}": recall_at_k(ranked.deep, grades, DEEP_RECALL_K),
        f"mrr@{k}": mrr_at_k(ranked.top, grades, k),
    }


def per_query_metrics(run: Run, judged: Sequence[JudgedQuery], k: int) -> list[dict[str, float]]:
    """Metrics of each judged query in order; a query missing from `run` is an error, not a silent 0."""
    missing = [q.key for q in judged if q.key not in run]
    if missing:
        raise BadQueryError(
            f"the run lacks {len(missing)} judged queries (e.g. {missing[0]!r}) — it was made for other "
            "judgements; evaluate it again with this file"
        )
    return [query_metrics(run[q.key], q.relevant, k) for q in judged]


def mean_metrics(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    names = list(rows[0]) if rows else []
    return {name: round(sum(r[name] for r in rows) / len(rows), METRIC_DIGITS) for name in names}


# -- searching ----------------------------------------------------------------------------


def rank_queries(searcher: Searcher, judged: Sequence[JudgedQuery], mode: str, k: int = DEFAULT_K) -> Run:
    """The run of one search mode: for each query, the top k and the top DEEP_RECALL_K articles' URLs."""
    deep_k = max(k, DEEP_RECALL_K)
    run: Run = {}
    for item in judged:
        deep = [r.url for r in searcher.search(item.query, k=deep_k, mode=mode).results]
        run[item.key] = RankedQuery(deep[:k], deep)
    return run


def evaluate(
    searcher: Searcher, judged: Sequence[JudgedQuery], k: int = DEFAULT_K, modes: Sequence[str] = EVAL_MODES
) -> dict[str, dict[str, float]]:
    """Mean metrics per mode: `{mode: {"ndcg@k", "recall@k", "recall@50", "mrr@k"}}`."""
    if not judged:
        raise BadQueryError("no judged queries to evaluate")
    warn_unknown_urls(searcher.urls(), judged)
    return {mode: mean_metrics(per_query_metrics(rank_queries(searcher, judged, mode, k), judged, k)) for mode in modes}


def warn_unknown_urls(known: frozenset[str], judged: Sequence[JudgedQuery]) -> None:
    """Judged URLs missing from the index can never be found; say so instead of silently scoring 0."""
    missing = sorted({url for item in judged for url in item.relevant if url not in known})
    if missing:
        logger.warning("%d judged URLs are not in the index (e.g. %s)", len(missing), missing[0])


# -- run files -----------------------------------------------------------------------------


def save_runs(path: Path, runs: Mapping[str, Run], k: int, about: Mapping[str, Any]) -> None:
    """Write labelled runs (e.g. {"hybrid": run}) and what produced them (snapshot, settings) to `path`."""
    document = {
        "format": RUN_FILE_FORMAT,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "k": k,
        "deep_k": max(k, DEEP_RECALL_K),
        "about": dict(about),
        "runs": {label: {key: {"top": r.top, "deep": r.deep} for key, r in run.items()} for label, run in runs.items()},
    }
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def load_runs(path: Path) -> tuple[int, dict[str, Run]]:
    """(k, labelled runs) saved in `path`; a file that is not a run file raises BadQueryError saying so."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadQueryError(f"cannot read the run file {path} ({exc.strerror or exc}) — {RUN_EXAMPLE}") from None
    except ValueError as exc:
        raise BadQueryError(f"{path} is not JSON ({exc}) — {RUN_EXAMPLE}") from None
    if not isinstance(document, dict) or document.get("format") != RUN_FILE_FORMAT:
        raise BadQueryError(f"{path} is not a linklens run file (format {RUN_FILE_FORMAT}) — {RUN_EXAMPLE}")
    try:
        return int(document["k"]), {
            label: {key: RankedQuery(list(r["top"]), list(r["deep"])) for key, r in run.items()}
            for label, run in document["runs"].items()
        }
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadQueryError(f"{path} is a damaged run file ({exc!r}) — {RUN_EXAMPLE}") from None


def resolve_run(
    spec: str, judged: Sequence[JudgedQuery], k: int, open_searcher: Callable[[], Searcher]
) -> tuple[str, Run]:
    """(label, run) for one side of a comparison: a search mode run now, or `FILE[#label]` saved before.

    `open_searcher` is only called for a mode, so comparing two saved files needs no index.
    """
    if spec in EVAL_MODES:
        return spec, rank_queries(open_searcher(), judged, spec, k)
    path, label = Path(spec), ""
    if not path.exists() and "#" in spec:
        path_text, _, label = spec.rpartition("#")
        path = Path(path_text)
    if not path.exists():
        raise BadQueryError(
            f"{spec!r} is neither a mode ({', '.join(EVAL_MODES)}) nor an existing run file — {RUN_EXAMPLE}"
        )
    saved_k, runs = load_runs(path)
    if saved_k != k:
        raise BadQueryError(f"{path} was saved with --k {saved_k}; compare it with --k {saved_k}")
    if not label:
        if len(runs) != 1:
            names = ", ".join(f"{path}#{name}" for name in runs)
            raise BadQueryError(f"{path} holds {len(runs)} runs — name one: {names}")
        label = next(iter(runs))
    if label not in runs:
        raise BadQueryError(f"{path} holds no run {label!r} — it holds: {', '.join(runs)}")
    return f"{path.name}#{label}", runs[label]
