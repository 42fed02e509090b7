"""Merge the judges' grades into the fair judged set: bench/fair_judged.jsonl (article ids and grades only).

Run: .venv/bin/python bench/merge_grades.py [--judging-dir ../judging] [--out bench/fair_judged.jsonl]

Reads `pool.json` (what `bench/pool.py` pooled per query), every `grades-NN.jsonl`
(lines `{"qid": ..., "article_id": ..., "grade": 0|1|2}`) and the questions in
`bench/fair_queries.jsonl`, and writes one line per query in the format
`linklens eval` reads, keyed by article id like `bench/sysdesign_queries.jsonl`:
`{"id", "query", "section", "kind", "split", "relevant": {"<article id>": grade, ...}}`.
Every pooled candidate's grade is kept, 0s included (so "judged not relevant" and
"never judged" stay apart); unpooled articles count as not relevant.

Refuses to write (exit 1, naming the first problem) when a grade is not 0, 1 or 2,
names a query or an article that was not pooled for it, contradicts another grade
of the same pair, or when pooled candidates are left ungraded (`--allow-missing`
writes anyway and counts them). A query without any article graded 1 or 2 is left
out and listed: nothing in the corpus answers it, so it cannot be scored.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FAIR_QUERIES = REPO / "bench" / "fair_queries.jsonl"
FAIR_JUDGED = REPO / "bench" / "fair_judged.jsonl"
DEFAULT_JUDGING = REPO.parent / "judging"
GRADES = (0, 1, 2)
QUERY_FIELDS = ("id", "query", "section", "kind", "split")


class MergeError(Exception):
    """Grades that cannot be merged; the message names the file, line and what is wrong."""


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                out.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise MergeError(f"{path}:{number}: not JSON ({exc.msg})") from None
    return out


def collect_grades(files: list[Path], pooled: dict[str, set[str]]) -> dict[str, dict[str, int]]:
    """{qid: {article id: grade}} from the grade files, checked against the pool."""
    grades: dict[str, dict[str, int]] = {}
    for path in files:
        for number, row in read_jsonl(path):
            where = f"{path}:{number}"
            qid, article, grade = row.get("qid"), row.get("article_id"), row.get("grade")
            if qid not in pooled:
                raise MergeError(f"{where}: unknown qid {qid!r} — it is not in pool.json")
            if article not in pooled[qid]:
                raise MergeError(f"{where}: article {article!r} was not pooled for {qid}")
            if grade not in GRADES or isinstance(grade, bool):
                raise MergeError(f"{where}: grade must be 0, 1 or 2, got {grade!r}")
            before = grades.setdefault(qid, {}).get(article)
            if before is not None and before != grade:
                raise MergeError(f"{where}: {qid}/{article} graded {grade} here and {before} before — settle on one")
            grades[qid][article] = grade
    return grades


def merge(
    queries: list[dict], pooled: dict[str, set[str]], grades: dict[str, dict[str, int]]
) -> tuple[list[dict], dict[str, object]]:
    """The judged lines (queries in file order) and counts: graded, missing, dropped queries."""
    lines, dropped, missing = [], [], 0
    for q in queries:
        qid = q["id"]
        given = grades.get(qid, {})
        missing += len(pooled.get(qid, set()) - set(given))
        if not any(g > 0 for g in given.values()):
            dropped.append(qid)
            continue
        relevant = dict(sorted(given.items(), key=lambda item: (-item[1], item[0])))
        lines.append({**{f: q[f] for f in QUERY_FIELDS}, "relevant": relevant})
    counts = Counter(g for given in grades.values() for g in given.values())
    stats = {
        "queries_written": len(lines),
        "queries_dropped_nothing_relevant": dropped,
        "grades": {str(g): counts.get(g, 0) for g in GRADES},
        "pooled_but_ungraded": missing,
        "by_split": dict(Counter(line["split"] for line in lines)),
    }
    return lines, stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judging-dir", type=Path, default=DEFAULT_JUDGING)
    parser.add_argument("--queries", type=Path, default=FAIR_QUERIES)
    parser.add_argument("--out", type=Path, default=FAIR_JUDGED)
    parser.add_argument("--allow-missing", action="store_true", help="Write even if pooled candidates lack a grade.")
    args = parser.parse_args()
    try:
        pool = json.loads((args.judging_dir / "pool.json").read_text(encoding="utf-8"))
        pooled = {qid: set(entry["found"]) for qid, entry in pool["queries"].items()}
        files = sorted(args.judging_dir.glob("grades-*.jsonl"))
        if not files:
            raise MergeError(f"no grades-NN.jsonl in {args.judging_dir} — the judges write them there")
        queries = [row for _, row in read_jsonl(args.queries)]
        lines, stats = merge(queries, pooled, collect_grades(files, pooled))
        if stats["pooled_but_ungraded"] and not args.allow_missing:
            raise MergeError(
                f"{stats['pooled_but_ungraded']} pooled candidates have no grade — finish the batches, "
                "or write anyway with --allow-missing"
            )
    except (OSError, KeyError, MergeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.out.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    print(json.dumps({"written": str(args.out), "grade_files": [f.name for f in files], **stats}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
