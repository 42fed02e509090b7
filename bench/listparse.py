"""List parsing speed: the bundled list (flattened onto one line, as received) and copies of it in one text.

    python bench/listparse.py [--copies 1,4,16] [--rounds 5] [--out results.json]

Timings live here, not in the tests: tests/test_listparse.py checks that the parsing work grows
linearly (a count of calls), this reports how long it takes on this machine (best of --rounds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest.listparse import parse_list  # noqa: E402

BUNDLED = Path(__file__).resolve().parents[1] / "data" / "awesome-scalability.txt"


def best_seconds(text: str, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        parse_list(text)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", default="1,4,16", help="copies of the bundled list per text, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    text = BUNDLED.read_text(encoding="utf-8")
    parse_list(text)  # the parser is built once per process
    results = []
    for copies in (int(c) for c in args.copies.split(",")):
        whole = " ".join([text] * copies)
        seconds = best_seconds(whole, args.rounds)
        results.append({"copies": copies, "bytes": len(whole.encode()), "seconds": round(seconds, 4),
                        "mb_per_s": round(len(whole.encode()) / 2**20 / seconds, 2)})
    report = json.dumps({"bench": "listparse", "rounds": args.rounds, "results": results}, indent=2)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
