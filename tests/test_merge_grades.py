"""bench/merge_grades.py: judges' grades become a judged file `linklens eval` reads, or a clear refusal."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from index.evaluate import JudgedQuery, load_judgements

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "merge_grades.py"
QUERIES = [
    {"id": "cache-01", "query": "hot key expires", "section": "Caching", "kind": "question", "split": "test"},
    {"id": "queue-01", "query": "dead letter queue", "section": "Queues", "kind": "keywords", "split": "dev"},
    {"id": "api-01", "query": "graphql or rest", "section": "APIs", "kind": "question", "split": "dev"},
]
POOL = {"cache-01": ["a", "b", "c"], "queue-01": ["d", "e"], "api-01": ["f"]}


def judging(tmp_path: Path, grades: dict[str, list[dict]]) -> tuple[Path, Path]:
    folder = tmp_path / "judging"
    folder.mkdir()
    pool = {
        "depth": 20,
        "queries": {q: {"query": "", "found": {a: {"dense": 1} for a in ids}} for q, ids in POOL.items()},
    }
    (folder / "pool.json").write_text(json.dumps(pool))
    for name, rows in grades.items():
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps(q) + "\n" for q in QUERIES))
    return folder, queries


def merge(folder: Path, queries: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, str(SCRIPT), "--judging-dir", str(folder), "--queries", str(queries), "--out", str(out)]
    return subprocess.run([*args, *extra], capture_output=True, text=True, timeout=60)


def g(qid: str, article: str, grade: object) -> dict:
    return {"qid": qid, "article_id": article, "grade": grade}


def test_grades_merge_into_a_judged_file_that_eval_reads(tmp_path: Path) -> None:
    folder, queries = judging(
        tmp_path,
        {
            "grades-01.jsonl": [g("cache-01", "a", 2), g("cache-01", "b", 0), g("cache-01", "c", 1)],
            "grades-02.jsonl": [g("queue-01", "d", 0), g("queue-01", "e", 0), g("api-01", "f", 0), g("api-01", "f", 0)],
        },
    )
    out = tmp_path / "judged.jsonl"
    proc = merge(folder, queries, out)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["queries_written"] == 1
    assert stats["queries_dropped_nothing_relevant"] == ["queue-01", "api-01"]
    assert stats["grades"] == {"0": 4, "1": 1, "2": 1}
    judged = load_judgements(out, url_template="https://sysdesign.example/{id}")
    assert judged == [
        JudgedQuery(
            "hot key expires",
            {"https://sysdesign.example/a": 2, "https://sysdesign.example/c": 1, "https://sysdesign.example/b": 0},
            "cache-01",
            "Caching",
            "question",
            "test",
        )
    ]


def test_bad_grades_are_refused_naming_the_line(tmp_path: Path) -> None:
    cases = {
        "not pooled": ([g("cache-01", "z", 2)], "article 'z' was not pooled for cache-01"),
        "bad grade": ([g("cache-01", "a", 3)], "grade must be 0, 1 or 2, got 3"),
        "unknown query": ([g("nope-01", "a", 1)], "unknown qid 'nope-01'"),
        "contradiction": ([g("cache-01", "a", 2), g("cache-01", "a", 0)], "graded 0 here and 2 before"),
    }
    for name, (rows, message) in cases.items():
        (tmp_path / name).mkdir()
        folder, queries = judging(tmp_path / name, {"grades-01.jsonl": rows})
        out = tmp_path / f"{name}.jsonl"
        proc = merge(folder, queries, out)
        assert proc.returncode == 1, (name, proc.stdout)
        assert message in proc.stderr and "Traceback" not in proc.stderr, (name, proc.stderr)
        assert not out.exists()


def test_ungraded_candidates_stop_the_merge_unless_allowed(tmp_path: Path) -> None:
    folder, queries = judging(tmp_path, {"grades-01.jsonl": [g("cache-01", "a", 2)]})
    out = tmp_path / "judged.jsonl"
    refused = merge(folder, queries, out)
    assert refused.returncode == 1 and "5 pooled candidates have no grade" in refused.stderr
    allowed = merge(folder, queries, out, "--allow-missing")
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["pooled_but_ungraded"] == 5
    assert [q.id for q in load_judgements(out)] == ["cache-01"]


def test_the_judged_file_lives_in_the_repository_and_the_judging_folder_outside() -> None:
    spec = importlib.util.spec_from_file_location("merge_grades", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.FAIR_JUDGED.parent.name == "bench"
    assert module.DEFAULT_JUDGING.name == "judging" and not module.DEFAULT_JUDGING.is_relative_to(SCRIPT.parents[1])
