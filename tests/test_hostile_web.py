"""`linklens crawl` on a web of servers that lie (tests/hostileweb): it ends, every link gets an honest state.

The crawl runs as a user runs it, in its own process, with short deadlines (so the suite stays
fast) and a wall-time bound derived from them. Tests named `..._extraction_...` check the part of
issue 7 done on the extraction side (sniffing, charsets, isolated extraction); the rest checks the
fetch side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from ingest.settings import Settings, load_settings
from ingest.store import Store
from tests.conftest import FAST_CRAWL_ENV
from tests.hostileweb import CREME_BRULEE, HostileWeb, Route
from tests.hostileweb.routes import (
    BOMB_LIST_PATH,
    GOOD_CHILD_PATHS,
    LIST_OF_LISTS_PATH,
    MALFORMED_ARGUMENT_URLS,
    MALFORMED_CHILD_URLS,
    MISSING_CHILD_PATH,
    STACKED_LIST_PATH,
    TRICKLING_LIST_PATH,
    child_list_markdown,
)
from tests.index_fixtures import BuiltIndex, seed_caches

pytest_plugins = ["tests.index_fixtures"]  # the session index: built (its ONNX export spares the index below one)

# FAST_CRAWL_ENV with a 2 MiB body cap, so the decompression bomb is cut quickly, and a read timeout well
# above the trickle's 0.1 s between bytes even on a loaded machine, so only the total deadline can cut it.
HOSTILE_ENV = dict(FAST_CRAWL_ENV, LINKLENS_MAX_BODY_BYTES=str(2 * 2**20), LINKLENS_READ_TIMEOUT_S="1.5",
                   LINKLENS_REQUEST_TIMEOUT_S="3")
# A hang guard, not a speed target (timings live in bench/crawl.py --hostile-only): without deadlines the
# trickle alone would never end, and the crawl's process would be stopped here and the test fail.
HANG_GUARD_S = 900.0
# What the bombs may add to the crawling process's peak RSS over a crawl of the good links alone. Each
# bomb decodes to 1 GiB; decoded whole (as httpx's decoder does with `gzip, gzip`) it would add that much.
BOMB_RSS_ALLOWANCE_BYTES = 256 * 2**20


@dataclass
class HostileCrawl:
    web: HostileWeb
    env: dict[str, str]
    settings: Settings
    list_file: Path
    summary: dict[str, object]
    rows: dict[str, dict[str, object]]  # route name -> link row
    peak_rss_bytes: int  # of the crawling process
    good_only_peak_rss_bytes: int  # of the same crawl over a list of the good links alone


def crawl_measured(env: dict[str, str], rss_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`linklens ARGS` in a process of its own that writes its peak RSS to `rss_file` (tests/peak_rss.py)."""
    return subprocess.run([sys.executable, "-m", "tests.peak_rss", str(rss_file), *args], env=env,
                          capture_output=True, text=True, timeout=HANG_GUARD_S)


def linklens(env: dict[str, str], *args: str, timeout: float = HANG_GUARD_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def rows_by_route(web: HostileWeb, settings: Settings) -> dict[str, dict[str, object]]:
    with Store.open(settings.store_path) as store:
        by_url = {str(r["url"]): r for r in store.link_rows()}
    return {route.name: by_url[route.url] for route in web.routes}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileCrawl]:
    root = tmp_path_factory.mktemp("hostile")
    with HostileWeb() as web:
        env = dict(os.environ, **HOSTILE_ENV, LINKLENS_ARCHIVE_URL=web.urls["archive"],
                   LINKLENS_DATA_DIR=str(root / "data"))
        list_file = web.write_list(root / "awesome-hostile.md")
        done = crawl_measured(env, root / "rss", "crawl", str(list_file), "--json")
        assert done.returncode == 0, done.stderr
        good_list = root / "awesome-good.md"
        good_list.write_text(child_list_markdown("Awesome Good", [r for r in web.routes if r.name.startswith("good")]))
        good_env = dict(env, LINKLENS_DATA_DIR=str(root / "good-data"))
        good = crawl_measured(good_env, root / "good-rss", "crawl", str(good_list), "--json")
        assert good.returncode == 0, good.stderr
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                if key.startswith("LINKLENS_"):
                    mp.setenv(key, value)
            settings = load_settings()
        yield HostileCrawl(web, env, settings, list_file, json.loads(done.stdout),
                           rows_by_route(web, settings), int((root / "rss").read_text()),
                           int((root / "good-rss").read_text()))


def fetch_side(web: HostileWeb) -> list[Route]:
    return [r for r in web.routes if not r.extract_work]


def test_the_crawl_ends_with_nothing_pending(hostile: HostileCrawl) -> None:
    states = hostile.summary["states"]
    assert isinstance(states, dict) and "pending" not in states, states
    assert sum(states.values()) == len(hostile.web.routes)


def test_every_link_ends_in_its_expected_state_with_the_reason_in_words(hostile: HostileCrawl) -> None:
    wrong = {}
    for route in fetch_side(hostile.web):
        row = hostile.rows[route.name]
        reason = str(row["reason"] or "").lower()
        if row["state"] != route.state or route.reason not in reason:
            wrong[route.name] = (route.state, route.reason, row["state"], row["reason"])
    assert not wrong, wrong
    assert all(row["reason"] for row in hostile.rows.values())


def test_good_neighbours_and_recovered_pages_keep_their_text(hostile: HostileCrawl) -> None:
    checked = 0
    with Store.open(hostile.settings.store_path) as store:
        for route in fetch_side(hostile.web):
            if route.article is None:
                continue
            document = store.document(int(hostile.rows[route.name]["id"]))  # type: ignore[arg-type]
            assert document is not None and not document.thin, route.name
            flat = " ".join(document.text.split())
            for paragraph in route.article.paragraphs:
                assert " ".join(paragraph.split()[:8]) in flat, (route.name, paragraph[:60])
            checked += 1
    assert checked >= 9


def test_a_lying_content_encoding_is_fetched_once_more_as_identity(hostile: HostileCrawl) -> None:
    for path in ("/lying-gzip", "/unknown-encoding", "/stacked-honest"):
        asked = [h.get("accept-encoding") for h in hostile.web.request_headers(path)]
        assert asked == ["gzip, deflate", "identity"], (path, asked)
    # one that lies whatever is asked: two requests per attempt, no more, and a reason
    for path in ("/lying-deflate", "/stacked-bomb"):
        always = [h.get("accept-encoding") for h in hostile.web.request_headers(path)]
        assert always == ["gzip, deflate", "identity"], (path, always)


def test_decompression_bombs_leave_the_crawls_peak_memory_bounded(hostile: HostileCrawl) -> None:
    """Three bombs of 1 GiB decoded each (streamed, sent whole, stacked `gzip, gzip`): the crawling process's
    peak RSS stays within an allowance of the same crawl without them, and what is kept is cut at the cap."""
    assert hostile.peak_rss_bytes < hostile.good_only_peak_rss_bytes + BOMB_RSS_ALLOWANCE_BYTES, \
        (hostile.peak_rss_bytes >> 20, hostile.good_only_peak_rss_bytes >> 20)
    assert hostile.web.bomb_bytes >= 4 * BOMB_RSS_ALLOWANCE_BYTES  # so a bomb decoded whole would fail this
    with Store.open(hostile.settings.store_path) as store:
        for name in ("gzip-bomb", "one-chunk-bomb"):
            body = store.body(int(hostile.rows[name]["id"]))  # type: ignore[arg-type]
            assert body is not None and body.truncated, name
            assert len(body.body) == hostile.settings.max_body_bytes == 2 * 2**20, name
    stacked = hostile.rows["stacked-bomb"]
    assert stacked["state"] == "failed" and "stacked" in str(stacked["reason"]), stacked


def test_trickling_body_is_cut_by_the_total_deadline_and_not_retried(hostile: HostileCrawl) -> None:
    row = hostile.rows["trickle"]
    assert f"no complete answer within {hostile.settings.request_timeout_s:g} s" in str(row["reason"])
    assert hostile.web.hits("main", "/trickle") == 1  # a deadline is final: retrying would trickle again


def test_meta_refresh_is_followed_like_a_redirect(hostile: HostileCrawl) -> None:
    row = hostile.rows["meta-refresh"]
    article = hostile.web.route("meta-refresh").article
    assert article is not None and str(row["final_url"]).endswith(f"/posts/{article.slug}")
    assert str(row["final_url"]).startswith(hostile.web.urls["second"])


def test_every_redirect_hop_is_checked_against_robots_txt(hostile: HostileCrawl) -> None:
    assert hostile.web.hits("robots-deny", "/page") == 0  # neither listed nor redirected-to page is fetched
    assert hostile.web.hits("robots-deny", "/robots.txt") == 1
    assert hostile.web.hits("robots-503", "/page") == 0
    assert "redirected to" in str(hostile.rows["redirect-to-disallowed"]["reason"])


def test_a_refresh_sends_no_unsendable_validator_and_still_ends(hostile: HostileCrawl) -> None:
    """The non-ASCII ETag is never stored, so --refresh cannot choke on sending it back."""
    done = linklens(hostile.env, "crawl", str(hostile.list_file), "--refresh", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert "pending" not in summary["states"]
    etag_requests = hostile.web.request_headers("/etag")
    assert len(etag_requests) == 2 and "if-none-match" not in etag_requests[1]
    after = rows_by_route(hostile.web, hostile.settings)
    assert {n: r["state"] for n, r in after.items() if n in {x.name for x in fetch_side(hostile.web)}} == \
        {r.name: r.state for r in fetch_side(hostile.web)}


@pytest.mark.slow
def test_good_neighbours_are_searchable(hostile: HostileCrawl, built: BuiltIndex) -> None:
    seed_caches(built.settings, hostile.settings)  # the session's ONNX export: not exported a second time
    indexed = linklens(hostile.env, "index", "--json", timeout=600)
    assert indexed.returncode == 0, indexed.stderr
    for i, name in enumerate(("good-1", "good-3", "lying-gzip", "http10-no-length")):
        route = hostile.web.route(name)
        assert route.article is not None
        args = ("search", route.article.title, "--json", "--k", "3")
        if i == 0:  # one search as a user runs it, in its own process
            found = linklens(hostile.env, *args)
            assert found.returncode == 0, found.stderr
            stdout = found.stdout
        else:  # the rest in this process: the same command, without another interpreter start
            answer = CliRunner().invoke(app, list(args), env={"LINKLENS_DATA_DIR": hostile.env["LINKLENS_DATA_DIR"]})
            assert answer.exit_code == 0, answer.output
            stdout = answer.stdout
        urls = [r["url"] for r in json.loads(stdout)["results"]]
        assert urls and urls[0] == route.url, (name, urls)


# -- the extraction side of issue 7 (sniffing, charsets, isolated extraction) ------------------------


def test_extraction_binary_bodies_end_unsupported_with_their_type_in_words(hostile: HostileCrawl) -> None:
    wrong = {}
    for route in hostile.web.routes:
        if route.extract_work and route.state == "unsupported":
            row = hostile.rows[route.name]
            if row["state"] != route.state or route.reason not in str(row["reason"] or "").lower():
                wrong[route.name] = (route.state, route.reason, row["state"], row["reason"])
    assert not wrong, wrong
    with Store.open(hostile.settings.store_path) as store:
        for name in ("zip", "octet-stream", "png-as-html", "empty-200"):
            document = store.document(int(hostile.rows[name]["id"]))  # type: ignore[arg-type]
            assert document is None or not document.text.strip(), (name, document)


def test_extraction_charset_lies_and_a_bom_decode_as_written(hostile: HostileCrawl) -> None:
    with Store.open(hostile.settings.store_path) as store:
        for name in ("charset-lie", "bom"):
            assert hostile.rows[name]["state"] == "ok"
            document = store.document(int(hostile.rows[name]["id"]))  # type: ignore[arg-type]
            assert document is not None
            assert CREME_BRULEE in document.text, (name, document.text[:200])
            assert "Ã" not in document.text and "\ufffd" not in document.text


def test_extraction_pathological_html_ends_and_the_crawl_goes_on(hostile: HostileCrawl) -> None:
    row = hostile.rows["deep-html"]
    assert row["state"] == hostile.web.route("deep-html").state, row
    assert all(hostile.rows[n]["state"] == "ok" for n in ("good-1", "good-2", "good-3"))


# -- lists go through the same fetch stack -----------------------------------------------------------


def test_a_list_whose_headers_trickle_ends_at_the_deadline_with_the_reason(hostile: HostileCrawl,
                                                                            tmp_path: Path) -> None:
    env = dict(hostile.env, LINKLENS_DATA_DIR=str(tmp_path / "data"))
    done = linklens(env, "crawl", hostile.web.url("second", TRICKLING_LIST_PATH))
    assert done.returncode == 1, done.stderr
    assert f"no complete answer within {hostile.settings.request_timeout_s:g} s" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_list_download_is_decoded_by_the_same_bounded_decoder(hostile: HostileCrawl) -> None:
    from ingest.errors import SourceError
    from ingest.sources import MAX_LIST_BYTES, load_list

    web = hostile.web
    stacked = load_list(web.url("second", STACKED_LIST_PATH), hostile.settings)
    assert [link.url for link in stacked.links] == [r.url for r in web.routes if r.name.startswith("good")]
    assert [h.get("accept-encoding") for h in web.request_headers(STACKED_LIST_PATH)] == ["gzip, deflate",
                                                                                         "identity"]
    with pytest.raises(SourceError) as refused:
        load_list(web.url("second", BOMB_LIST_PATH), hostile.settings)
    assert f"larger than {MAX_LIST_BYTES // 2**20} MB" in str(refused.value)


@pytest.mark.parametrize("url", MALFORMED_ARGUMENT_URLS)
def test_a_malformed_list_url_is_one_sentence_not_a_traceback(hostile: HostileCrawl, tmp_path: Path,
                                                              url: str) -> None:
    env = dict(hostile.env, LINKLENS_DATA_DIR=str(tmp_path / "data"))
    done = linklens(env, "crawl", url)
    assert done.returncode == 1, done.stderr
    assert "cannot request this URL" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_lists_from_skips_trickling_malformed_and_missing_children_and_crawls_the_good_ones(
        hostile: HostileCrawl, tmp_path: Path) -> None:
    web = hostile.web
    env = dict(hostile.env, LINKLENS_DATA_DIR=str(tmp_path / "data"))
    done = linklens(env, "crawl", "--lists-from", web.url("second", LIST_OF_LISTS_PATH), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    skipped = {s["source"]: s["reason"] for s in summary["skipped_lists"]}
    deadline = hostile.settings.request_timeout_s
    assert f"no complete answer within {deadline:g} s" in skipped[web.url("second", TRICKLING_LIST_PATH)]
    assert "HTTP 404" in skipped[web.url("second", MISSING_CHILD_PATH)]
    for url in MALFORMED_CHILD_URLS:
        assert "cannot request this URL" in skipped[url], (url, skipped)
    assert len(skipped) == 2 + len(MALFORMED_CHILD_URLS)
    assert sorted(x["source"] for x in summary["lists"]) == sorted(web.url("second", p) for p in GOOD_CHILD_PATHS)
    with Store.open(tmp_path / "data" / "linklens.sqlite3") as store:
        states = {str(r["url"]): r["state"] for r in store.link_rows()}
    good = [r.url for r in web.routes if r.name.startswith("good")]
    assert states == dict.fromkeys(good, "ok")

    # the collection is remembered: a bare crawl reads the same list of lists and ends the same way
    again = linklens(env, "crawl", "--json")
    assert again.returncode == 0, again.stderr
    assert {s["source"] for s in json.loads(again.stdout)["skipped_lists"]} == set(skipped)
