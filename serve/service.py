"""What the HTTP routes and the search page both call: input checks, cache, gate, searcher.

Why one place: the JSON API and the HTML page must accept the same input, give the
same messages and return the same ranking. Both are thin formatters over this.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from index.filters import section_filter
from index.limits import DEFAULT_K, MAX_K, MIN_K
from ingest.errors import BadQueryError
from ingest.redact import public_source
from ingest.textform import nfc
from serve.gate import CacheKey, ResponseCache, SearchGate
from serve.live import LiveIndex
from serve.problems import NotFoundError

MAX_QUERY_CHARS = 512


def normalise_query(q: str | None) -> str:
    """Trim and collapse whitespace, NFC-normalise, then check length: the form the searcher and the cache see."""
    text = nfc(" ".join((q or "").split()))
    if not text:
        raise BadQueryError("q must not be empty — ask a question, e.g. /search?q=how+to+shard+a+database")
    if len(text) > MAX_QUERY_CHARS:
        raise BadQueryError(f"q is {len(text)} characters; the limit is {MAX_QUERY_CHARS} — shorten the question")
    return text


def check_k(k: int) -> int:
    if not MIN_K <= k <= MAX_K:
        raise BadQueryError(f"k must be between {MIN_K} and {MAX_K}, got {k}")
    return k


def parse_k(raw: str | None) -> int:
    """k from a raw string (the page reads its own parameters); same rule and message as the API."""
    if raw is None or raw.strip() == "":
        return DEFAULT_K
    try:
        value = int(raw)
    except ValueError:
        raise BadQueryError(f"k must be a whole number between {MIN_K} and {MAX_K}, got {raw[:20]!r}") from None
    return check_k(value)


class SearchService:
    """The server's use of one `LiveIndex`; every blocking call goes through the gate."""

    def __init__(self, live: LiveIndex, gate: SearchGate, cache: ResponseCache) -> None:
        self.live = live
        self.gate = gate
        self.cache = cache

    async def search(self, q: str | None, k: int, section: str | Sequence[str] | None, host: str | None,
                     list_name: str | None = None, with_ids: bool = False) -> dict[str, Any]:
        """The search response dict (`SearchResponse.to_dict()` shape), cached per snapshot.

        `section` is a section path, its headings top first (`index.filters.section_filter`).
        Section, host and list rules (case, subsections, subdomains) are the searcher's;
        an unknown section or list comes back from it as a BadQueryError listing the valid ones.
        `with_ids` adds each article's `id` (the MCP tools hand it to `article`/`similar`);
        those answers skip the cache, which holds the HTTP API's shape.
        """
        started = time.perf_counter()
        searcher = self.live.require()
        query = normalise_query(q)
        check_k(k)
        path = section_filter(section)
        host = (host or "").strip() or None
        list_name = (list_name or "").strip() or None
        if with_ids:
            return await self.gate.run(
                lambda: searcher.search(query, k=k, section=path, host=host, list_name=list_name).to_dict(True)
            )
        key: CacheKey = (str(searcher.snapshot_id), query, k, path or (), host or "", list_name or "")
        cached = self.cache.get(key)
        if cached is not None:
            return {**cached, "took_ms": round((time.perf_counter() - started) * 1000, 3)}
        response = await self.gate.run(
            lambda: searcher.search(query, k=k, section=path, host=host, list_name=list_name).to_dict()
        )
        self.cache.put(key, response)
        return response

    def sections(self) -> list[tuple[tuple[str, ...], int]]:
        """Section paths with article counts. A copy of a list the snapshot holds: cheap, so not gated."""
        return [(tuple(path), int(count)) for path, count in self.live.require().sections()]

    def lists(self) -> list[dict[str, Any]]:
        """The indexed collection's lists with their counts. Read from the snapshot's facets: not gated.

        A list's `url` is shown without credentials, query or fragment, a local file by its name only
        (`public_source`): the snapshot may be served to anyone; `linklens lists` shows the full source."""
        return [{**entry, "url": public_source(entry.get("url"))} for entry in self.live.require().lists()]

    async def article(self, article_id: int) -> dict[str, Any]:
        searcher = self.live.require()
        found = await self.gate.run(searcher.article, article_id)
        if found is None:
            raise NotFoundError(f"no article {article_id} in snapshot {searcher.snapshot_id} — find ids via /search")
        return found

    async def similar(self, article_id: int, k: int, with_ids: bool = False) -> dict[str, Any]:
        check_k(k)
        searcher = self.live.require()

        def run() -> dict[str, Any] | None:
            if searcher.article(article_id) is None:
                return None
            return searcher.similar(article_id, k).to_dict(with_ids)

        response = await self.gate.run(run)
        if response is None:
            raise NotFoundError(f"no article {article_id} in snapshot {searcher.snapshot_id} — find ids via /search")
        return response
