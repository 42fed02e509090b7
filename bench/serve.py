"""Benchmark the HTTP server at several index sizes and print one JSON report. Not a test.

Per index (the fixture, synthetic 10k/100k snapshots, or any built data folder):
* snapshot load: `Searcher.open` in this process, and a real server from process
  start to ready (every worker answering with the snapshot loaded);
* concurrency 1: HTTP p50 against in-process `Searcher.search` p50 on the same
  queries, interleaved (bench/servers.py says how), with the thin stdlib client and with httpx;
* concurrency 32 (closed loop, Retry-After honoured): p50/p99, QPS, errors and
  503 sheds, every request a distinct query so the response cache never answers;
* memory: one worker's peak RSS, and the total of `--workers 4` (RSS and PSS,
  supervisor included) against one worker's, after traffic has reached every worker,
  and how soon the forked workers are ready.

`--nginx`: three replicas behind nginx (deploy/nginx.conf) over a copy of the
fixture index, under steady load across shedding, a publish, a SIGKILL and a
restart (bench/replicas.py): failed requests, retries, reload and restart times.

Sizes are served from bench/index.py's data folders (real-like passages, see
bench/synthetic.py; `--index-cache`, its `--cache`), with the snapshot its last
run built there. Prepare and build them first without the shared lock, then time
under it:

    python bench/index.py --prepare --sizes 10000,100000,1000000   # then one bench/index.py run builds them
    flock /tmp/linklens-bench.lock python bench/serve.py --sizes 10000,100000,1000000 --out bench/results/serve.json
    flock /tmp/linklens-bench.lock python bench/serve.py --sizes '' --data-dir /path/to/data-folder  # any index
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import logging
import os
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import platformdirs

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.servers import RssSampler, closed_loop, concurrency_one, memory_mb, running_server  # noqa: E402
from bench.synthetic import DEFAULT_CACHE as SYNTHETIC_CACHE  # noqa: E402
from ingest.settings import Settings, load_settings  # noqa: E402

DEFAULT_CACHE = Path(platformdirs.user_cache_dir("linklens-bench")) / "serve"
DEFAULT_DURATION_S = 10.0
HIGH_CONCURRENCY = 32
C1_QUERIES = 200
REPLICA_WORKERS = 4
REPLICA_WARMUP_S = 4.0
REPLICA_WARMUP_CONCURRENCY = 8
QUERY_SEED = 20240611

TARGET_C1_OVERHEAD_MS = 2.0
TARGET_P99_MS = 300.0
TARGET_READY_S = 2.0
TARGET_REPLICA_MEMORY_RATIO = 1.5

# Words mixed into the judged questions to make every request a distinct cache key.
VARIANT_WORDS = [
    "database",
    "cache",
    "latency",
    "shard",
    "replica",
    "queue",
    "leader",
    "consensus",
    "partition",
    "throughput",
    "outage",
    "retry",
    "timeout",
    "backpressure",
    "index",
    "storage",
    "cluster",
    "failover",
    "tenant",
    "traffic",
    "load",
    "balancer",
    "hashing",
    "ring",
    "stream",
    "batch",
    "event",
    "log",
    "write",
    "read",
    "consistency",
    "availability",
    "budget",
    "error",
    "capacity",
    "scaling",
]


def query_variants(seed: int = QUERY_SEED) -> Iterator[str]:
    """An endless stream of distinct questions: each judged query plus two topic words, shuffled."""
    from tests.fixtures.relevance import judged_queries

    bases = [q.query for q in judged_queries()]
    combos = list(itertools.product(bases, VARIANT_WORDS, VARIANT_WORDS))
    random.Random(seed).shuffle(combos)
    for n, (base, first, second) in enumerate(itertools.cycle(combos)):
        lap = n // len(combos)
        yield f"{base} {first} {second}" + (f" {lap}" if lap else "")


# -- the indexes --------------------------------------------------------------------------------


def build_fixture_index(folder: Path) -> Settings:
    """The test suite's fixture corpus, built with the real model into `folder` (once)."""
    settings = load_settings(data_dir=folder)
    if (settings.snapshots_dir / "CURRENT").exists():
        return settings
    from index.build import build_index
    from ingest.store import Store
    from tests.index_fixtures import fill_store

    log(f"building the fixture index in {folder}")
    with Store.open(settings.store_path) as store:
        fill_store(store)
        build_index(settings, store)
    return settings


def synthetic_index(cache: Path, size: int) -> Path:
    """bench/index.py's data folder of `size` real-like passages, with the snapshot its last run built there."""
    from bench.index import data_dir_for
    from bench.synthetic import snapshot_of_size

    folder = data_dir_for(cache, size)
    if not (folder / "snapshots" / "CURRENT").exists():
        raise SystemExit(
            f"no {size}-passage index in {folder} — prepare and build it first: bench/index.py --prepare "
            f"--sizes {size}, then LINKLENS_DATA_DIR={folder} linklens index (or a bench/index.py run)"
        )
    snapshot_of_size(folder, size)
    return folder


def resolve_indexes(args: argparse.Namespace) -> list[Path]:
    folders = [Path(d) for d in args.data_dir]
    for size in args.sizes:
        folders.append(build_fixture_index(args.cache_dir / "fixture").data_dir if size == "fixture"
                       else synthetic_index(args.index_cache, int(size)))  # fmt: skip
    return folders


# -- one index ------------------------------------------------------------------------------------


def measure(data_dir: Path, args: argparse.Namespace, queries: Iterator[str]) -> dict[str, Any]:
    from index.search import Searcher

    settings = load_settings(data_dir=data_dir)
    started = time.perf_counter()
    searcher = Searcher.open(settings)
    open_s = time.perf_counter() - started
    stats = searcher.stats()
    log(f"{data_dir}: {stats['passages']} passages ({stats['index_kind']})")
    env = {"LINKLENS_MAX_INFLIGHT": str(args.max_inflight)} if args.max_inflight else {}
    report: dict[str, Any] = {
        "data_dir": str(data_dir),
        "passages": stats["passages"],
        "articles": stats["articles"],
        "index_kind": stats["index_kind"],
    }
    try:
        with running_server(data_dir, 1, env) as server, RssSampler(server) as rss:
            log("  concurrency 1 (interleaved with in-process)")
            report["c1"] = concurrency_one(server, searcher, [next(queries) for _ in range(args.c1_queries)])
            log(f"  concurrency {HIGH_CONCURRENCY} for {args.duration:.0f} s")
            report[f"c{HIGH_CONCURRENCY}"] = closed_loop(server, HIGH_CONCURRENCY, args.duration, queries)
            under_load = memory_mb(server.processes())
            ready_one = server.ready_s
        under_load["peak_rss_mb"] = round(rss.peak_bytes / 2**20, 1)
    finally:
        searcher.close()
    # This process maps the same snapshot while its searcher lives, which lowers a server's PSS (shared
    # pages are charged 1/N): the memory runs below start after it is gone, with the same warm-up each.
    del searcher
    gc.collect()
    report["load"] = {"searcher_open_s": round(open_s, 3), "server_ready_s": ready_one}
    report["memory"] = {"one_worker_after_c32": under_load}
    if args.replicas > 1:
        log(f"  memory: one worker, then --workers {args.replicas} (ready time too), the same warm-up each")
        one_worker = warmed_memory(data_dir, 1, env, queries)
        report["memory"]["one_worker"] = one_worker
        total = warmed_memory(data_dir, args.replicas, env, queries)
        report["load"][f"server_ready_s_{args.replicas}_workers"] = total.pop("ready_s")
        report["memory"][f"workers_{args.replicas}"] = {
            **total,
            "rss_ratio_to_one_worker": round(total["rss_mb"] / one_worker["rss_mb"], 2),
            "pss_ratio_to_one_worker": round(total["pss_mb"] / one_worker["pss_mb"], 2),
        }
    report["targets"] = judge(report, args.replicas)
    return report


def warmed_memory(data_dir: Path, workers: int, env: dict[str, str], queries: Iterator[str]) -> dict[str, Any]:
    """Memory of a server with `workers` after a short closed loop has reached every worker."""
    with running_server(data_dir, workers, env) as server:
        closed_loop(server, REPLICA_WARMUP_CONCURRENCY, REPLICA_WARMUP_S, queries)
        processes = server.processes()
        total: dict[str, Any] = memory_mb(processes)
        total["supervisor_rss_mb"] = memory_mb(processes[:1])["rss_mb"]
        total["ready_s"] = server.ready_s
    return total


def judge(report: dict[str, Any], replicas: int) -> dict[str, Any]:
    c1, high = report["c1"], report[f"c{HIGH_CONCURRENCY}"]
    targets: dict[str, Any] = {
        "http_c1_overhead_ms": {
            "target": TARGET_C1_OVERHEAD_MS,
            "value": c1["overhead_ms"],
            "ok": c1["overhead_ms"] <= TARGET_C1_OVERHEAD_MS,
            "definition": "HTTP p50 (thin client) - in-process p50, same queries, interleaved",
        },
        f"p99_ms_c{HIGH_CONCURRENCY}": {"target": TARGET_P99_MS, "value": high["p99_ms"],
                                        "ok": high["p99_ms"] <= TARGET_P99_MS, "shed_503": high["shed_503"]},
        f"errors_c{HIGH_CONCURRENCY}": {"target": 0, "value": high["errors"], "ok": high["errors"] == 0},
        "server_ready_s": {"target": TARGET_READY_S, "value": report["load"]["server_ready_s"],
                           "ok": report["load"]["server_ready_s"] <= TARGET_READY_S},
    }  # fmt: skip
    ready_workers = report["load"].get(f"server_ready_s_{replicas}_workers")
    if ready_workers is not None:
        targets[f"server_ready_s_{replicas}_workers"] = {
            "target": TARGET_READY_S, "value": ready_workers, "ok": ready_workers <= TARGET_READY_S,
            "definition": "process start to every forked worker answering with the snapshot loaded",
        }  # fmt: skip
    replicas_memory = report["memory"].get(f"workers_{replicas}")
    if replicas_memory is not None:
        ratio = replicas_memory["pss_ratio_to_one_worker"]
        targets[f"workers_{replicas}_memory_ratio"] = {
            "target": TARGET_REPLICA_MEMORY_RATIO,
            "value": ratio,
            "ok": ratio <= TARGET_REPLICA_MEMORY_RATIO,
            "definition": "total PSS of the supervisor + workers / PSS of one single-process server, each after "
            "the same warm-up with nothing else mapping the snapshot (RSS counts shared pages once per process; "
            "see rss_ratio_to_one_worker)",
        }
    return targets


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sizes",
        default="10000,100000",
        help="synthetic snapshot sizes in passages, and/or 'fixture' (comma-separated; '' for none)",
    )
    parser.add_argument(
        "--data-dir",
        action="append",
        default=[],
        help="a data folder holding a built index (repeatable), e.g. the 1M snapshot",
    )
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where the fixture index is kept")
    parser.add_argument(
        "--index-cache", type=Path, default=SYNTHETIC_CACHE,
        help="bench/index.py's --cache: its data folders index-<size>/ are served for --sizes",
    )  # fmt: skip
    parser.add_argument("--build-only", action="store_true", help="build the fixture index if missing and stop")
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION_S, help="seconds at concurrency 32")
    parser.add_argument("--c1-queries", type=int, default=C1_QUERIES, help="queries at concurrency 1")
    parser.add_argument("--replicas", type=int, default=REPLICA_WORKERS, help="workers for the memory run (1: skip)")
    parser.add_argument("--max-inflight", type=int, help="the server's LINKLENS_MAX_INFLIGHT (default: its setting)")
    parser.add_argument("--nginx", action="store_true", help="also run three replicas behind nginx (bench/replicas.py)")
    parser.add_argument("--out", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    folders = resolve_indexes(args)
    if args.build_only:
        log("built: " + ", ".join(map(str, folders)))
        return 0
    queries = query_variants()
    report = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "load_avg": os.getloadavg()},
        "server_max_inflight_per_worker": args.max_inflight or load_settings().max_inflight,
        "indexes": [measure(folder, args, queries) for folder in folders],
    }
    if args.nginx:
        from bench.replicas import run as run_replicas

        log("three replicas behind nginx: shedding, a publish, a SIGKILL and a restart under load")
        report["replicas_nginx"] = run_replicas(build_fixture_index(args.cache_dir / "fixture").data_dir)
    text = json.dumps(report, indent=2)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
