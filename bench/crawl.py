"""Crawl benchmark: ~500 pages from the local fixture web vs the extraction-only ceiling; the hostile web.

    python bench/crawl.py [--pages 500] [--hosts 12] [--latency-ms 50] [--out results.json] [--no-hostile]

The fixture web runs in its own process (so it does not share our GIL), serving the
400 real articles of ../shared/corpora/sysdesign when that folder exists, plus the
project's own fixture articles, repeated under new slugs up to --pages. The list
holds only article links (fault pages would measure timeouts, not throughput).

Reported, all in one run: crawl pages/s, extraction ms/page (one core), the
extraction-only ceiling (the same stored pages extracted and compressed through the
crawl's own extraction pool, no network), the ratio of the two (target ≥ 0.8), and peak memory of the
crawler with its extraction workers (target < 500 MB).

Then the hostile web (tests/hostileweb: lying encodings, gzip bombs of 1 GB decoded (streamed, sent
whole, stacked `gzip, gzip`), a body trickling one byte every 2 s, a server that never answers,
malformed links and redirects, ...) crawled by `linklens crawl` in its own process with default
settings, as a user would: wall time (target: ends within 3 minutes), peak memory of that process
and its extraction workers (target < 500 MB; sampled), the crawling process's own exact peak RSS
(`getrusage`, through tests/peak_rss.py), and the links whose state is not the expected one. And
`crawl --lists-from` over the hostile list of lists (good children, a child trickling its headers,
a 404 child, malformed children): wall time, peak RSS, the lists read and the ones skipped with why.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.articles import bench_articles  # noqa: E402
from ingest.crawler import EXTRACT_BACKLOG_PER_WORKER, Crawler, extraction_pool  # noqa: E402
from ingest.extraction_pool import ExtractionPool  # noqa: E402
from ingest.models import FetchedBody  # noqa: E402
from ingest.settings import load_settings  # noqa: E402
from ingest.sources import load_list  # noqa: E402
from ingest.store import Store  # noqa: E402

TARGET_RATIO = 0.8
TARGET_PEAK_MB = 500
TARGET_HOSTILE_S = 180
HOSTILE_TRICKLE_INTERVAL_S = 2.0  # one byte every 2 s: each read is within the read timeout
HOSTILE_BOMB_BYTES = 1 << 30


class PeakMemory:
    """Samples RSS of a process (this one by default) plus its children (the extraction workers) every 200 ms.

    Sparse sampling on purpose: walking /proc for children costs CPU the crawl would miss.
    `peak_bytes` is the peak of the sum; `root_peak_bytes` and `children_peak_bytes` the peaks of
    each part (bench/ray_crawl.py reports a Ray driver apart from Ray's own processes).
    """

    def __init__(self, exclude_pid: int | None = None, root_pid: int | None = None) -> None:
        self.exclude_pid = exclude_pid  # the fixture web: a child of ours, but not part of the crawler
        self.root_pid = root_pid
        self.peak_bytes = 0
        self.root_peak_bytes = 0
        self.children_peak_bytes = 0
        self.child_cpu_s: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            me = psutil.Process(self.root_pid)
            while not self._stop.is_set():
                self._sample(me)
                time.sleep(0.2)
        except psutil.Error:  # the measured process ended
            return

    def _sample(self, me: psutil.Process) -> None:
        root = me.memory_info().rss
        children = 0
        for child in me.children(recursive=True):
            if child.pid == self.exclude_pid:
                continue
            try:
                children += child.memory_info().rss
                times = child.cpu_times()
                self.child_cpu_s[child.pid] = times.user + times.system
            except psutil.Error:  # a worker that just ended
                pass
        self.root_peak_bytes = max(self.root_peak_bytes, root)
        self.children_peak_bytes = max(self.children_peak_bytes, children)
        self.peak_bytes = max(self.peak_bytes, root + children)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def corpus(pages: int) -> tuple[list[dict[str, object]], str]:
    """Articles to serve, as dicts in the fixture format, and a label saying where they came from."""
    articles, label = bench_articles(pages)
    return [asdict(article) for article in articles], label


def start_web(articles_file: Path, hosts: int, latency_ms: float, workdir: Path) -> tuple[subprocess.Popen, dict]:
    ready = workdir / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fixtureweb", "--articles", str(articles_file), "--hosts", str(hosts),
         "--latency-ms", str(latency_ms), "--ready-file", str(ready)],
        cwd=REPO, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("fixture web did not start")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())


def measured_crawl(env: dict[str, str], workdir: Path, *args: str) -> dict[str, object]:
    """`linklens ARGS` in its own process: its JSON summary, wall time, sampled and exact peak memory."""
    rss_file = workdir / f"rss-{time.monotonic_ns()}"
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "tests.peak_rss", str(rss_file), *args], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with PeakMemory(root_pid=proc.pid) as memory:
        out, err = proc.communicate(timeout=30 * 60)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"linklens {' '.join(args)} failed: {err[-2000:]}")
    return {
        "summary": json.loads(out),
        "wall_seconds": round(seconds, 1),
        "peak_memory_mb": round(memory.peak_bytes / 2**20, 1),
        "crawl_process_peak_rss_mb": round(int(rss_file.read_text()) / 2**20, 1),
    }


def hostile_crawl() -> dict[str, object]:
    """`linklens crawl` over the hostile web with default settings, then `--lists-from` its list of lists."""
    from tests.hostileweb import HostileWeb
    from tests.hostileweb.routes import LIST_OF_LISTS_PATH

    with tempfile.TemporaryDirectory(prefix="linklens-bench-hostile-") as tmp, \
            HostileWeb(trickle_interval_s=HOSTILE_TRICKLE_INTERVAL_S, bomb_bytes=HOSTILE_BOMB_BYTES) as web:
        work = Path(tmp)
        list_file = web.write_list(work / "awesome-hostile.md")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LINKLENS_")}
        env.update(LINKLENS_DATA_DIR=str(work / "data"), LINKLENS_ARCHIVE_URL=web.urls["archive"])
        crawl = measured_crawl(env, work, "crawl", str(list_file), "--json")
        with Store.open(work / "data" / "linklens.sqlite3") as store:
            rows = {str(r["url"]): r for r in store.link_rows()}
        unexpected = {r.name: {"expected": r.state, "got": rows[r.url]["state"], "reason": rows[r.url]["reason"]}
                      for r in web.routes if not r.extract_work and rows[r.url]["state"] != r.state}
        env.update(LINKLENS_DATA_DIR=str(work / "lists-data"))
        lists = measured_crawl(env, work, "crawl", "--lists-from", web.url("second", LIST_OF_LISTS_PATH), "--json")
    summary, lists_summary = crawl.pop("summary"), lists.pop("summary")
    assert isinstance(summary, dict) and isinstance(lists_summary, dict)
    return {
        "links": len(web.routes),
        "states": summary["states"],
        **crawl,
        "unexpected_states": unexpected,
        "target_wall_seconds": TARGET_HOSTILE_S,
        "target_peak_memory_mb": TARGET_PEAK_MB,
        "lists_from": {
            **lists,
            "lists_read": [x["source"] for x in lists_summary["lists"]],
            "skipped": lists_summary["skipped_lists"],
            "states": lists_summary["states"],
        },
        "settings": "defaults (request deadline 60 s, read timeout 20 s, 4 attempts, 1 s per-host delay)",
    }


def link_local_case() -> dict[str, object]:
    """Links into link-local space (bench/link_local.py), crawled inside a network namespace of their own."""
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return {"skipped": f"network namespaces unavailable ({probe.stderr.strip()}): this case runs only where "
                           "nothing can leave the machine"}
    proc = subprocess.run(["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" -m bench.link_local',
                           sys.executable], cwd=REPO, capture_output=True, text=True, timeout=30 * 60)
    if proc.returncode != 0:
        raise SystemExit(f"link-local case failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


async def extraction_seconds(pool: ExtractionPool, bodies: list[FetchedBody], workers: int) -> float:
    """Seconds to extract `bodies` with as many pages in flight as the crawl allows, after a warm-up."""
    await asyncio.gather(*(pool.extract(b, "t") for b in bodies[:workers]))
    slots = asyncio.Semaphore(EXTRACT_BACKLOG_PER_WORKER * workers)

    async def one(body: FetchedBody) -> None:
        async with slots:
            await pool.extract(body, "t")

    t0 = time.perf_counter()
    await asyncio.gather(*(one(b) for b in bodies))
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=500)
    parser.add_argument("--hosts", type=int, default=12)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no-hostile", action="store_true", help="skip the hostile-web crawl (~2 minutes)")
    parser.add_argument("--hostile-only", action="store_true", help="only the hostile-web crawl")
    args = parser.parse_args()
    if args.hostile_only:
        emit({"benchmark": "crawl", "hostile_web": hostile_crawl(), "link_local": link_local_case()}, args.out)
        return

    with tempfile.TemporaryDirectory(prefix="linklens-bench-") as tmp:
        work = Path(tmp)
        articles, label = corpus(args.pages)
        articles_file = work / "articles.json"
        articles_file.write_text(json.dumps(articles))
        web, info = start_web(articles_file, args.hosts, args.latency_ms, work)
        try:
            listing = ["# Bench list", "", "## Articles", ""]
            listing += [f"* [{slug}]({url})" for slug, url in info["article_urls"].items()]
            list_file = work / "list.md"
            list_file.write_text("\n".join(listing) + "\n")
            # Default politeness, relaxed for loopback: no per-host delay; limits stay at their defaults.
            settings = load_settings(data_dir=work / "data", per_host_delay_s=0.0, archive_url=info["archive_url"])
            links = load_list(str(list_file), settings).links
            with Store.open(settings.store_path) as store, PeakMemory(exclude_pid=web.pid) as memory:
                store.add_links(links)
                server_cpu0 = psutil.Process(web.pid).cpu_times()
                self_cpu0 = psutil.Process().cpu_times()
                started = time.perf_counter()
                summary = Crawler(settings, store).run()
                crawl_s = time.perf_counter() - started
                self_cpu1 = psutil.Process().cpu_times()
                server_cpu1 = psutil.Process(web.pid).cpu_times()
                bodies = [store.body(a.link_id) for a in store.articles()]
        finally:
            web.terminate()
            web.wait(10)

    bodies = [b for b in bodies if b is not None]
    from ingest.extract import extract_document  # only now: the crawler's own process never loads it
    # one core, in-process: the cost of one page's extraction
    sample = bodies[: min(100, len(bodies))]
    per_page = []
    for body in sample:
        t0 = time.perf_counter()
        extract_document(body, "title")
        per_page.append((time.perf_counter() - t0) * 1000)
    # the ceiling: the same pages through the crawl's own extraction pool (extract + compress), no network
    workers = settings.extract_workers or os.cpu_count() or 1
    with extraction_pool(settings) as pool:
        ceiling_s = asyncio.run(extraction_seconds(pool, bodies, workers))

    crawl_rate = summary.crawled / crawl_s
    ceiling_rate = len(bodies) / ceiling_s
    result = {
        "benchmark": "crawl",
        "corpus": label,
        "hosts": args.hosts,
        "latency_ms": args.latency_ms,
        "pages": summary.crawled,
        "states": summary.counts,
        "crawl_seconds": round(crawl_s, 2),
        "crawl_pages_per_s": round(crawl_rate, 1),
        "extraction_ms_per_page_p50": round(statistics.median(per_page), 1),
        "extraction_ms_per_page_mean": round(statistics.fmean(per_page), 1),
        "extraction_only_pages_per_s": round(ceiling_rate, 1),
        "crawl_vs_ceiling": round(crawl_rate / ceiling_rate, 3),
        "target_crawl_vs_ceiling": TARGET_RATIO,
        "cpu_s_crawler_main": round(self_cpu1.user + self_cpu1.system - self_cpu0.user - self_cpu0.system, 2),
        "cpu_s_extraction_workers": round(sum(memory.child_cpu_s.values()), 2),
        "cpu_s_fixture_server": round(server_cpu1.user + server_cpu1.system - server_cpu0.user - server_cpu0.system,
                                      2),
        "peak_memory_mb": round(memory.peak_bytes / 2**20, 1),
        "target_peak_memory_mb": TARGET_PEAK_MB,
        "cores": os.cpu_count(),
    }
    if not args.no_hostile:
        result["hostile_web"] = hostile_crawl()
        result["link_local"] = link_local_case()
    emit(result, args.out)


def emit(result: dict[str, object], out: Path | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        out.write_text(text + "\n")


if __name__ == "__main__":
    main()
