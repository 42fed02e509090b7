"""Run the fixture web in the foreground, for benchmarks and subprocess tests.

    python -m tests.fixtureweb --articles PATH --hosts N --latency-ms 50 --ready-file F

Once every socket listens it writes the list README (``--list-file``, default ``<F>.md``) and
then, atomically, the JSON ready file ``F``: list_markdown_path, list_url, archive_url,
host_urls, expected_states, article_urls (slug -> URL), faults, pid. It stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from .pages import load_fixture_articles, load_sysdesign_articles
from .server import FixtureWeb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fixtureweb", description=__doc__.split("\n")[0])
    ap.add_argument("--articles", type=Path, default=None,
                    help="articles.json (list) or a sysdesign-style .jsonl; default tests/fixtures/articles.json")
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--slow-s", type=float, default=30.0, help="stall of the /faults/slow page")
    ap.add_argument("--first-ip", type=int, default=2, help="first host is 127.0.0.<first-ip>")
    ap.add_argument("--ready-file", type=Path, required=True)
    ap.add_argument("--list-file", type=Path, default=None)
    args = ap.parse_args(argv)

    if args.articles is not None and args.articles.suffix == ".jsonl":
        articles = load_sysdesign_articles(args.articles)
    else:
        articles = load_fixture_articles(args.articles)

    # Block the stop signals before the server thread exists (it inherits the mask), then wait
    # for them synchronously: no polling delay, and the signal is never delivered to the loop thread.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)

    with FixtureWeb(articles, n_hosts=args.hosts, latency_s=args.latency_ms / 1000,
                    slow_s=args.slow_s, first_ip=args.first_ip) as web:
        list_file = args.list_file or args.ready_file.with_name(args.ready_file.name + ".md")
        web.write_list_markdown(list_file)
        info = {
            "list_markdown_path": str(list_file.resolve()),
            "list_url": web.list_url,
            "archive_url": web.archive_url,
            "host_urls": web.host_urls,
            "expected_states": web.expected_states(),
            "article_urls": web.article_urls(),
            "faults": [{"name": f.name, "url": f.url, "state": f.state} for f in web.faults()],
            "pid": os.getpid(),
        }
        tmp = args.ready_file.with_name(args.ready_file.name + ".tmp")
        tmp.write_text(json.dumps(info, indent=2), encoding="utf-8")
        os.replace(tmp, args.ready_file)
        print(f"fixtureweb: {len(web.host_urls)} hosts, archive {web.archive_url}", file=sys.stderr, flush=True)
        signal.sigwait(stop_signals)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
