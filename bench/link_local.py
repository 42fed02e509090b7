"""The crawl's address policy under attack: links into link-local space, run where nothing can leave.

Run by `bench/crawl.py --hostile-only` inside a network namespace of its own (`unshare -n`, only
loopback up): a loopback server answers with a 302 and a meta refresh into 169.254.169.254, a list
file links there directly (IPv4, IPv6 link-local, IPv4-mapped) and to a good page; `linklens crawl`
runs with default settings. Each hostile link must end `blocked` by the policy — decided before any
connection (inside the namespace a connection attempt would fail "network unreachable" instead).
Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

METADATA_URL = "http://169.254.169.254/latest/meta-data/"
PAGE = ("<html><head><title>Good page</title></head><body><article><p>"
        + "A good neighbour page with enough words to be extracted as an article. " * 20
        + "</p></article></body></html>").encode()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/to-metadata":
            self.send_response(302)
            self.send_header("Location", METADATA_URL)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = PAGE
        if self.path == "/refresh":
            body = f'<html><head><meta http-equiv="refresh" content="0; url={METADATA_URL}"></head></html>'.encode()
        elif self.path != "/page":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    hostile = [METADATA_URL, "http://[fe80::1]/latest/", "http://[::ffff:169.254.169.254]/latest/meta-data/",
               f"{base}/to-metadata", f"{base}/refresh"]
    with tempfile.TemporaryDirectory(prefix="linklens-bench-ssrf-") as tmp:
        list_file = Path(tmp) / "awesome-ssrf.md"
        items = [f"* [Link {i}]({url})" for i, url in enumerate([*hostile, f"{base}/page"])]
        list_file.write_text("# SSRF\n\n## Links\n\n" + "\n".join(items) + "\n", encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LINKLENS_")}
        env.update(LINKLENS_DATA_DIR=str(Path(tmp) / "data"))
        proc = subprocess.run([sys.executable, "-m", "cli.main", "crawl", str(list_file), "--json"], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=30 * 60)
        if proc.returncode != 0:
            raise SystemExit(f"crawl failed: {proc.stderr[-2000:]}")
        from ingest.settings import load_settings
        from ingest.store import Store

        with Store.open(load_settings(data_dir=Path(tmp) / "data").store_path) as store:
            rows = {str(r["url"]): r for r in store.link_rows()}
    server.shutdown()
    cases = {url: {"state": rows[url]["state"], "reason": rows[url]["reason"]} for url in hostile}
    print(json.dumps({
        "links": len(rows),
        "hostile_blocked": sum(case["state"] == "blocked" for case in cases.values()),
        "hostile": len(hostile),
        "good_page": rows[f"{base}/page"]["state"],
        "cases": cases,
    }))


if __name__ == "__main__":
    main()
