"""Split the fair query set once into dev (⅓) and test (⅔), stratified by section and kind.

Run: .venv/bin/python bench/fair_split.py [--queries bench/fair_queries.jsonl]

Why stratified and seeded: dev (for tuning) and test (for reporting) must ask the
same mix of sections and of keyword vs question queries, and anyone can check that
the split was not picked after seeing results — the same seed and ids give the same
split. Queries are grouped by (section, kind), each group is shuffled with one
seeded generator, the groups are laid end to end, and every third query from the
first on goes to dev, so each group is within one query of a third in dev.

The split is written into the file as a `split` field. Rows that already carry one
keep it (split once: later edits, such as dropping a question nothing answers, never
move a query between dev and test); only rows without one are assigned.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FAIR_QUERIES = REPO / "bench" / "fair_queries.jsonl"
SPLIT_SEED = 20240808
DEV_EVERY = 3  # one query in three goes to dev
DEV, TEST = "dev", "test"


def assign_splits(rows: list[dict], seed: int = SPLIT_SEED) -> dict[str, str]:
    """{query id: "dev" | "test"} for `rows` (each with id, section, kind), stratified and seeded."""
    groups: dict[tuple[str, str], list[str]] = {}
    for row in sorted(rows, key=lambda r: r["id"]):
        groups.setdefault((row["section"], row["kind"]), []).append(row["id"])
    rng = random.Random(seed)
    laid_out: list[str] = []
    for key in sorted(groups):
        ids = groups[key]
        rng.shuffle(ids)
        laid_out.extend(ids)
    return {qid: DEV if i % DEV_EVERY == 0 else TEST for i, qid in enumerate(laid_out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=Path, default=FAIR_QUERIES)
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.queries.read_text(encoding="utf-8").splitlines() if line.strip()]
    fresh = [r for r in rows if "split" not in r]
    splits = assign_splits(fresh)
    for row in fresh:
        row["split"] = splits[row["id"]]
    args.queries.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    counts = Counter((r["split"], r["section"], r["kind"]) for r in rows)
    for key in sorted(counts):
        print(*key, counts[key], sep="\t")
    print("total", Counter(r["split"] for r in rows))


if __name__ == "__main__":
    main()
