"""Telling a gain from noise: bootstrap intervals, paired comparisons and per-group metrics of runs.

Why a bootstrap over queries: a mean over 50–150 queries moves by several points
of nDCG when other, equally fair queries are asked; the interval says how far.
Resampling the queries (with replacement, seeded, so a report is reproducible)
makes no assumption about the metric's distribution, which for nDCG per query is
lumpy (many 0s and 1s). A paired comparison resamples the *per-query differences*
of two configurations on the same queries: the queries' own difficulty cancels,
so the interval of the difference is much narrower than the two intervals side by
side, and "beyond noise" means that interval excludes 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from index.evaluate import METRIC_DIGITS, JudgedQuery, Run, metric_names, per_query_metrics

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95
GROUP_FIELDS = ("section", "kind")
# Per-query differences smaller than this count as "same" (float noise, not a change).
SAME_WITHIN = 1e-9


@dataclass(frozen=True)
class Interval:
    """A mean and its bootstrap interval (CONFIDENCE, percentile method)."""

    mean: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, float]:
        return {name: round(getattr(self, name), METRIC_DIGITS) for name in ("mean", "low", "high")}


def resample_indexes(n: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """(resamples, n) query indexes drawn with replacement; the same seed gives the same draws."""
    if n < 1:
        raise ValueError("cannot resample zero queries")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def interval(values: Sequence[float] | np.ndarray, draws: np.ndarray) -> Interval:
    """Mean of `values` and the percentile interval of its mean over `draws` (from `resample_indexes`)."""
    array = np.asarray(values, dtype=np.float64)
    means = array[draws].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float(array.mean()), float(low), float(high))


def bootstrap_interval(
    values: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> Interval:
    return interval(values, resample_indexes(len(values), resamples, seed))


def describe(rows: Sequence[Mapping[str, float]], names: Sequence[str], seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """{metric: interval} over per-query metric rows, every metric from the same resamples."""
    draws = resample_indexes(len(rows), seed=seed)
    return {name: interval([r[name] for r in rows], draws).to_dict() for name in names}


def groups(judged: Sequence[JudgedQuery], field: str) -> dict[str, list[int]]:
    """Query positions by the value of a label (section, kind); queries without it are left out."""
    out: dict[str, list[int]] = {}
    for i, q in enumerate(judged):
        value = getattr(q, field)
        if value:
            out.setdefault(value, []).append(i)
    return dict(sorted(out.items()))


def summarise(
    judged: Sequence[JudgedQuery], runs: Mapping[str, Run], k: int, seed: int = BOOTSTRAP_SEED
) -> dict[str, Any]:
    """Per configuration: every metric with its interval, and the same per section and per kind when labelled.

    `metrics` holds the plain means ({label: {metric: mean}}), the shape `linklens eval --json`
    always had; `configurations` holds the intervals and groups.
    """
    names = metric_names(k)
    out: dict[str, Any] = {
        "queries": len(judged),
        "k": k,
        "confidence": CONFIDENCE,
        "resamples": BOOTSTRAP_RESAMPLES,
        "seed": seed,
        "metrics": {},
        "configurations": {},
    }
    for label, run in runs.items():
        rows = per_query_metrics(run, judged, k)
        entry: dict[str, Any] = {"metrics": describe(rows, names, seed)}
        for field in GROUP_FIELDS:
            found = groups(judged, field)
            if found:
                entry[f"by_{field}"] = {
                    value: {"queries": len(where), **describe([rows[i] for i in where], names, seed)}
                    for value, where in found.items()
                }
        out["configurations"][label] = entry
        out["metrics"][label] = {name: value["mean"] for name, value in entry["metrics"].items()}
    return out


def compare(
    judged: Sequence[JudgedQuery],
    baseline: Run,
    candidate: Run,
    k: int,
    labels: tuple[str, str] = ("baseline", "candidate"),
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """Paired comparison of `candidate` against `baseline` on the same judged queries.

    Per metric: both means, the mean difference (candidate − baseline) with its
    paired bootstrap interval, whether that interval excludes 0, and on how many
    queries the candidate did better / worse / the same. For the first metric
    (nDCG@k) it also lists the queries that changed, largest change first, and
    the difference per section and per kind.
    """
    names = metric_names(k)
    primary = names[0]
    rows_a = per_query_metrics(baseline, judged, k)
    rows_b = per_query_metrics(candidate, judged, k)
    draws = resample_indexes(len(judged), seed=seed)
    metrics: dict[str, Any] = {}
    for name in names:
        a = np.array([r[name] for r in rows_a])
        b = np.array([r[name] for r in rows_b])
        delta = b - a
        diff = interval(delta, draws)
        metrics[name] = {
            labels[0]: round(float(a.mean()), METRIC_DIGITS),
            labels[1]: round(float(b.mean()), METRIC_DIGITS),
            "difference": diff.to_dict(),
            "beyond_noise": diff.excludes_zero(),
            "better": int((delta > SAME_WITHIN).sum()),
            "worse": int((delta < -SAME_WITHIN).sum()),
            "same": int((np.abs(delta) <= SAME_WITHIN).sum()),
        }
    changes = [
        (
            rb[primary] - ra[primary],
            {
                "query": q.key,
                "text": q.query,
                labels[0]: round(ra[primary], METRIC_DIGITS),
                labels[1]: round(rb[primary], METRIC_DIGITS),
                "difference": round(rb[primary] - ra[primary], METRIC_DIGITS),
            },
        )
        for q, ra, rb in zip(judged, rows_a, rows_b, strict=True)
    ]
    changes.sort(key=lambda change: -abs(change[0]))
    out: dict[str, Any] = {
        "baseline": labels[0],
        "candidate": labels[1],
        "queries": len(judged),
        "k": k,
        "confidence": CONFIDENCE,
        "resamples": BOOTSTRAP_RESAMPLES,
        "seed": seed,
        "metrics": metrics,
        "primary": primary,
        "better": [row for delta, row in changes if delta > SAME_WITHIN],
        "worse": [row for delta, row in changes if delta < -SAME_WITHIN],
    }
    for field in GROUP_FIELDS:
        found = groups(judged, field)
        if found:
            out[f"by_{field}"] = {
                value: {
                    "queries": len(where),
                    "difference": interval(
                        [rows_b[i][primary] - rows_a[i][primary] for i in where],
                        resample_indexes(len(where), seed=seed),
                    ).to_dict(),
                }
                for value, where in found.items()
            }
    return out
