"""Intervals, paired comparisons, per-group metrics and run files of `linklens eval`, on hand-made runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from index.eval_stats import bootstrap_interval, compare, summarise
from index.evaluate import (
    JudgedQuery,
    RankedQuery,
    Run,
    load_judgements,
    load_runs,
    only_split,
    parse_judgement,
    per_query_metrics,
    resolve_run,
    save_runs,
)
from ingest.errors import BadQueryError


def judged_set(n: int) -> list[JudgedQuery]:
    """n queries, each with one article graded 2 ("a<i>"); sections and kinds alternate."""
    return [
        JudgedQuery(
            f"query {i}",
            {f"a{i}": 2},
            id=f"q{i}",
            section="Caching" if i % 2 else "Queues",
            kind="keywords" if i % 3 == 0 else "question",
            split="dev" if i % 3 == 0 else "test",
        )
        for i in range(n)
    ]


def run_with_ranks(judged: list[JudgedQuery], ranks: list[int | None]) -> Run:
    """A run placing each query's relevant article at the given rank (None: not in the top 50)."""
    run: Run = {}
    for q, rank in zip(judged, ranks, strict=True):
        target = next(iter(q.relevant))
        deep = [f"noise{j}" for j in range(50)]
        if rank is not None:
            deep[rank - 1] = target
        run[q.key] = RankedQuery(deep[:10], deep)
    return run


def test_a_bootstrap_interval_is_reproducible_and_as_wide_as_the_noise() -> None:
    rng = np.random.default_rng(7)
    coin = rng.integers(0, 2, 100).astype(float).tolist()
    first = bootstrap_interval(coin)
    assert first == bootstrap_interval(coin)  # seeded
    assert first.low < first.mean < first.high
    # A mean of 100 fair coin flips: standard error 0.05, so a 95% interval is about ±0.1.
    assert 0.08 < (first.high - first.low) / 2 < 0.12
    many = bootstrap_interval(rng.integers(0, 2, 1600).astype(float).tolist())
    assert (many.high - many.low) < 0.35 * (first.high - first.low)  # 16× the queries: ~¼ the width
    flat = bootstrap_interval([0.5] * 30)
    assert (flat.low, flat.mean, flat.high) == (0.5, 0.5, 0.5)


def test_a_consistent_gain_is_beyond_noise_and_lists_every_query() -> None:
    judged = judged_set(30)
    baseline = run_with_ranks(judged, [3] * 30)
    candidate = run_with_ranks(judged, [1] * 30)
    report = compare(judged, baseline, candidate, k=10, labels=("old", "new"))
    ndcg = report["metrics"]["ndcg@10"]
    assert ndcg["old"] == pytest.approx(0.5) and ndcg["new"] == 1.0
    assert ndcg["difference"] == {"mean": 0.5, "low": 0.5, "high": 0.5}
    assert ndcg["beyond_noise"] is True
    assert (ndcg["better"], ndcg["worse"], ndcg["same"]) == (30, 0, 0)
    assert len(report["better"]) == 30 and report["worse"] == []
    recall = report["metrics"]["recall@10"]  # rank 3 and rank 1 are both in the top 10
    assert recall["beyond_noise"] is False and recall["same"] == 30
    assert set(report["by_section"]) == {"Caching", "Queues"}
    assert report["by_kind"]["keywords"]["queries"] == 10


def test_a_mixed_change_says_which_queries_moved_and_is_not_beyond_noise() -> None:
    judged = judged_set(6)
    baseline = run_with_ranks(judged, [1, 1, 2, 5, None, 1])
    candidate = run_with_ranks(judged, [1, 2, 1, 1, 40, 1])
    report = compare(judged, baseline, candidate, k=10)
    ndcg = report["metrics"]["ndcg@10"]
    assert (ndcg["better"], ndcg["worse"], ndcg["same"]) == (2, 1, 3)
    assert [row["query"] for row in report["better"]] == ["q3", "q2"]  # rank 5→1 gains more than 2→1
    assert [row["query"] for row in report["worse"]] == ["q1"]
    assert report["worse"][0]["difference"] < 0
    assert ndcg["difference"]["low"] < 0 < ndcg["difference"]["high"]
    assert ndcg["beyond_noise"] is False
    deep = report["metrics"]["recall@50"]  # q4 found at rank 40 only by the candidate
    assert (deep["better"], deep["worse"]) == (1, 0)


def test_a_summary_breaks_metrics_down_by_section_and_kind() -> None:
    judged = judged_set(12)
    ranks: list[int | None] = [1 if q.section == "Caching" else None for q in judged]
    report = summarise(judged, {"hybrid": run_with_ranks(judged, ranks)}, k=10)
    entry = report["configurations"]["hybrid"]
    assert entry["metrics"]["ndcg@10"]["mean"] == 0.5
    assert entry["by_section"]["Caching"]["ndcg@10"] == {"mean": 1.0, "low": 1.0, "high": 1.0}
    assert entry["by_section"]["Queues"]["queries"] == 6
    assert entry["by_section"]["Queues"]["recall@50"]["mean"] == 0.0
    assert {k: v["queries"] for k, v in entry["by_kind"].items()} == {"keywords": 4, "question": 8}
    unlabelled = [JudgedQuery(q.query, q.relevant) for q in judged]
    plain = summarise(unlabelled, {"hybrid": run_with_ranks(unlabelled, ranks)}, k=10)
    assert plain["configurations"]["hybrid"]["metrics"] == entry["metrics"]
    assert "by_section" not in plain["configurations"]["hybrid"]


def test_a_run_missing_a_judged_query_is_an_error() -> None:
    judged = judged_set(3)
    run = run_with_ranks(judged, [1, 1, 1])
    del run["q2"]
    with pytest.raises(BadQueryError, match="lacks 1 judged queries"):
        per_query_metrics(run, judged, 10)


def test_optional_labels_are_read_and_checked(tmp_path: Path) -> None:
    line = '{"query": "q", "relevant": {"x": 2}, "id": "c-1", "section": "Caching", "kind": "keywords", "split": "dev"}'
    assert parse_judgement(line) == JudgedQuery("q", {"x": 2}, "c-1", "Caching", "keywords", "dev")
    with pytest.raises(ValueError, match="'section' must be a non-empty string"):
        parse_judgement('{"query": "q", "relevant": {"x": 2}, "section": 3}')
    path = tmp_path / "judged.jsonl"
    path.write_text(line + "\n" + line.replace('"dev"', '"test"') + "\n")
    with pytest.raises(BadQueryError, match="judged twice"):
        load_judgements(path)
    path.write_text(line + "\n" + line.replace("c-1", "c-2").replace('"dev"', '"test"') + "\n")
    judged = load_judgements(path, url_template="https://sysdesign.example/{id}")
    assert judged[0].relevant == {"https://sysdesign.example/x": 2}
    assert [q.id for q in only_split(judged, "test")] == ["c-2"]
    with pytest.raises(BadQueryError, match="splits in the file: dev, test"):
        only_split(judged, "validation")
    with pytest.raises(BadQueryError, match="lacks \\{id\\}"):
        load_judgements(path, url_template="https://sysdesign.example/")


def test_saved_runs_come_back_and_are_chosen_by_label(tmp_path: Path) -> None:
    judged = judged_set(4)
    runs = {"dense": run_with_ranks(judged, [1, 2, 3, 4]), "hybrid": run_with_ranks(judged, [2, 1, None, 1])}
    path = tmp_path / "before.json"
    save_runs(path, runs, k=10, about={"snapshot": "s1"})
    assert load_runs(path) == (10, runs)
    assert json.loads(path.read_text())["about"] == {"snapshot": "s1"}

    def no_index() -> None:
        raise AssertionError("a saved run must not open the index")

    label, run = resolve_run(f"{path}#hybrid", judged, 10, no_index)  # type: ignore[arg-type]
    assert (label, run) == ("before.json#hybrid", runs["hybrid"])
    with pytest.raises(BadQueryError, match="holds 2 runs — name one"):
        resolve_run(str(path), judged, 10, no_index)  # type: ignore[arg-type]
    with pytest.raises(BadQueryError, match="saved with --k 10"):
        resolve_run(f"{path}#dense", judged, 20, no_index)  # type: ignore[arg-type]
    with pytest.raises(BadQueryError, match="neither a mode"):
        resolve_run(str(tmp_path / "nope.json"), judged, 10, no_index)  # type: ignore[arg-type]
    (tmp_path / "other.json").write_text('{"runs": {}}')
    with pytest.raises(BadQueryError, match="not a linklens run file"):
        resolve_run(str(tmp_path / "other.json"), judged, 10, no_index)  # type: ignore[arg-type]
