"""Extraction benchmark: the isolated pool against the plain ProcessPoolExecutor it replaced, same pages;
and, with --fidelity, how often the text we store differs from trafilatura's own `extract()`, and why.

    python bench/extraction.py [--pages 200] [--rounds 8] [--out results.json]
    python bench/extraction.py --fidelity [--out fidelity.json]

Pages are the 400 real articles of ../shared/corpora/sysdesign when that folder exists, plus
the project's fixture articles, rendered as full blog pages (repeated up to --pages).

Reported, all in one run:
- throughput (pages/s) of both pools with the crawl's access pattern: asyncio, at most
  4 pages per worker in flight, each page extracted *and* compressed in the worker.
  `ProcessPoolExecutor` is the pre-isolation pool (forkserver, trafilatura preloaded);
  `ExtractionPool` is pebble, one process per worker, one page at a time, time and memory
  limits. Both stay up and rounds alternate which goes first, so machine noise hits both alike;
- in-process cost per page of sniffing and decoding next to extraction itself (one core).

--fidelity (issue 15) runs every page through `extract_document` (what a crawl's workers run and
the store keeps; tests/test_text_form.py checks that on the real crawl path) and compares its text
with `trafilatura.extract()` of the same bytes decoded with the codec they were really written in.
Pages: our charset fixture pages (tests/charset_pages.py), and the corpus pages (../shared
sysdesign when present, plus the fixture articles), a quarter of them served as UTF-8 under an
`iso-8859-1` header and a quarter with no charset at all. Reported: the share that differs, per reason.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.articles import bench_articles  # noqa: E402
from ingest.extract_job import WORKER_PRELOAD, extract_and_compress  # noqa: E402
from ingest.extraction_pool import ExtractionPool  # noqa: E402
from ingest.models import FetchedBody  # noqa: E402
from ingest.settings import DEFAULT_EXTRACT_MEMORY_MB, DEFAULT_EXTRACT_TIMEOUT_S  # noqa: E402
from tests.fixtureweb.pages import render_article_page  # noqa: E402

IN_FLIGHT_PER_WORKER = 4  # the crawl's EXTRACT_BACKLOG_PER_WORKER
MICROSECONDS = 1e6


def pages(count: int) -> tuple[list[FetchedBody], str]:
    articles, label = bench_articles(count)
    bodies = []
    for article in articles:
        url = f"http://bench.test/posts/{article.slug}"
        html = render_article_page(article, url).encode()
        bodies.append(FetchedBody(url, "text/html; charset=utf-8", html, False, "utf-8"))
    return bodies, label


async def through(extract: Callable[[FetchedBody], Awaitable[object]], bodies: list[FetchedBody],
                  workers: int) -> float:
    """Pages per second through `extract` with the crawl's bound on pages in flight."""
    slots = asyncio.Semaphore(IN_FLIGHT_PER_WORKER * workers)

    async def one(body: FetchedBody) -> None:
        async with slots:
            await extract(body)

    started = time.perf_counter()
    await asyncio.gather(*(one(b) for b in bodies))
    return len(bodies) / (time.perf_counter() - started)


def compare_pools(bodies: list[FetchedBody], workers: int, rounds: int,
                  isolated_workers: int) -> tuple[list[float], list[float]]:
    """Pages/s of each pool per round. Both pools stay up; rounds alternate which goes first, so a
    neighbour's load on this shared machine lands on both alike."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(WORKER_PRELOAD)
    with ProcessPoolExecutor(workers, mp_context=context) as executor, \
            ExtractionPool(isolated_workers, DEFAULT_EXTRACT_TIMEOUT_S, DEFAULT_EXTRACT_MEMORY_MB) as pool:

        async def run() -> tuple[list[float], list[float]]:
            loop = asyncio.get_running_loop()

            def old(b: FetchedBody) -> Awaitable[object]:
                return loop.run_in_executor(executor, extract_and_compress, b, "t")

            async def new(b: FetchedBody) -> object:
                extraction = await pool.extract(b, "t")
                if extraction.failure:
                    raise SystemExit(f"isolated pool failed on a good page: {extraction.failure}")
                return extraction

            warm = bodies[: 2 * workers]
            await asyncio.gather(*(old(b) for b in warm), *(new(b) for b in warm))
            executor_rates, isolated_rates = [], []
            for i in range(rounds):
                if i % 2:
                    isolated_rates.append(await through(new, bodies, workers))
                    executor_rates.append(await through(old, bodies, workers))
                else:
                    executor_rates.append(await through(old, bodies, workers))
                    isolated_rates.append(await through(new, bodies, workers))
            return executor_rates, isolated_rates

        return asyncio.run(run())


def per_page_costs(bodies: list[FetchedBody]) -> dict[str, float]:
    """Microseconds per page of sniffing and decoding, next to milliseconds of extraction, in this process."""
    from ingest.decode import decode_text
    from ingest.extract import extract_document
    from ingest.sniff import sniff

    sample = bodies[: min(200, len(bodies))]
    sniff_us, decode_us, utf8_us, extract_ms = [], [], [], []
    for body in sample:
        t0 = time.perf_counter()
        sniff(body.body, body.content_type)
        t1 = time.perf_counter()
        decode_text(body.body, body.content_type)
        t2 = time.perf_counter()
        body.body.decode("utf-8")
        t3 = time.perf_counter()
        extract_document(body, "t")
        t4 = time.perf_counter()
        sniff_us.append((t1 - t0) * MICROSECONDS)
        decode_us.append((t2 - t1) * MICROSECONDS)
        utf8_us.append((t3 - t2) * MICROSECONDS)
        extract_ms.append((t4 - t3) * 1000)
    sniff_decode_ms = (statistics.fmean(sniff_us) + statistics.fmean(decode_us)) / 1000
    return {
        "page_kb_mean": round(statistics.fmean(len(b.body) for b in sample) / 1024, 1),
        "sniff_us_p50": round(statistics.median(sniff_us), 1),
        "decode_us_p50": round(statistics.median(decode_us), 1),
        "plain_utf8_decode_us_p50": round(statistics.median(utf8_us), 1),
        "extract_ms_p50": round(statistics.median(extract_ms), 2),
        "sniff_and_decode_share_of_extraction": round(sniff_decode_ms / statistics.fmean(extract_ms), 4),
    }


def fidelity(corpus_pages: int) -> dict[str, object]:
    """Share of pages whose stored text differs from trafilatura's `extract()` of the truly decoded bytes."""
    import trafilatura

    from ingest.extract import extract_document
    from tests.charset_pages import charset_pages

    cases = [(f"fixture:{p.name}", FetchedBody(f"http://bench.test{p.path}", p.content_type, p.body, False),
              p.encoding) for p in charset_pages()]
    articles, label = bench_articles(corpus_pages)
    for i, article in enumerate(articles):
        url = f"http://bench.test/posts/{article.slug}"
        content_type = ("text/html; charset=iso-8859-1", "text/html", "text/html; charset=utf-8",
                        "text/html; charset=utf-8")[i % 4]
        cases.append((f"corpus:{article.slug}",
                      FetchedBody(url, content_type, render_article_page(article, url).encode(), False), "utf-8"))
    reasons: dict[str, list[str]] = {}
    for name, body, encoding in cases:
        document = extract_document(body, "t")
        reference = trafilatura.extract(body.body.decode(encoding, "replace"), url=body.url, include_comments=False,
                                        include_tables=True, deduplicate=False) or ""
        reasons.setdefault(_why_different(document, reference.strip()), []).append(name)
    differing = {why: names for why, names in reasons.items() if why != "same"}
    counted = sum(len(names) for names in differing.values())
    fixtures = [name for name, _, _ in cases if name.startswith("fixture:")]
    return {
        "benchmark": "extraction fidelity",
        "corpus": label,
        "pages": len(cases),
        "differing_share": round(counted / len(cases), 4),
        "differing_share_fixture_pages": round(
            sum(1 for names in differing.values() for n in names if n in fixtures) / len(fixtures), 4),
        "differing_share_corpus_pages": round(
            sum(1 for names in differing.values() for n in names if n not in fixtures)
            / max(1, len(cases) - len(fixtures)), 4),
        "reasons": {why: {"pages": len(names), "examples": names[:5]} for why, names in sorted(reasons.items())},
    }


def _why_different(document: object, reference: str) -> str:
    """Why the stored text is not trafilatura's text of the same page, in a few words ("same" when it is)."""
    from ingest.models import Document

    assert isinstance(document, Document)
    if document.failure:
        return "ours ends the link failed: " + document.failure.split(":")[0] + " (trafilatura keeps the U+FFFD)"
    text = document.text
    if text == reference:
        return "same"
    if " ".join(text.split()) == " ".join(reference.split()):
        return "whitespace only"
    if document.description and text.startswith(document.description) and text.endswith(reference):
        return "media page: ours adds the og:description to the article"
    if document.thin:
        return "thin page: ours keeps the list title or description instead"
    if "\ufffd" in reference and "\ufffd" not in text:
        return "trafilatura's text has U+FFFD where ours has none"
    return "other text difference"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=200, help="pages per round and pool")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--isolated-workers", type=int, default=0, help="processes of the isolated pool; 0 = --workers")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--fidelity", action="store_true", help="only compare stored text with trafilatura.extract()")
    args = parser.parse_args()
    if args.fidelity:
        text = json.dumps(fidelity(args.pages), indent=2, ensure_ascii=False)
        print(text)
        if args.out:
            args.out.write_text(text + "\n")
        return

    bodies, label = pages(args.pages)
    isolated_workers = args.isolated_workers or args.workers
    executor, isolated = compare_pools(bodies, args.workers, args.rounds, isolated_workers)
    result = {
        "benchmark": "extraction",
        "corpus": label,
        "workers": args.workers,
        "isolated_workers": isolated_workers,
        "rounds": args.rounds,
        "process_pool_executor_pages_per_s": [round(r, 1) for r in executor],
        "isolated_pool_pages_per_s": [round(r, 1) for r in isolated],
        "isolated_vs_executor_total": round(sum(isolated) / sum(executor), 3),
        "isolated_vs_executor_per_round": [round(i / e, 3) for i, e in zip(isolated, executor, strict=True)],
        "per_page": per_page_costs(bodies),
        "cores": os.cpu_count(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
