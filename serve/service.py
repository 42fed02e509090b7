"""What the HTTP routes and the search page both call: input checks, cache, gate, searcher.

Why one place: the JSON API and the HTML page must accept the same input, give the
same messages and return the same ranking. Both are thin formatters over this.
"""

from __future__ import annotations

import time
from typing import Any

from ingest.errors import BadQueryError
from serve.gate import CacheKey, ResponseCache, SearchGate
from serve.live import LiveIndex
from serve.problems import NotFoundError

MAX_QUERY_CHARS = 512
MAX_HOST_CHARS = 255
DEFAULT_K = 10
MIN_K = 1
MAX_K = 50
MAX_SECTIONS_LISTED = 40


def normalise_query(q: str | None) -> str:
    """Trim and collapse whitespace, then check length: the form the searcher and the cache see."""
    text = " ".join((q or "").split())
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
        self._sections: tuple[str, list[tuple[str, int]]] | None = None

    async def search(self, q: str | None, k: int, section: str | None, host: str | None) -> dict[str, Any]:
        """The search response dict (`SearchResponse.to_dict()` shape), cached per snapshot."""
        started = time.perf_counter()
        searcher = self.live.require()
        query = normalise_query(q)
        check_k(k)
        section = (section or "").strip() or None
        host = (host or "").strip().lower() or None
        if host is not None and len(host) > MAX_HOST_CHARS:
            raise BadQueryError(f"host is {len(host)} characters; the limit is {MAX_HOST_CHARS}")
        if section is not None:
            await self._check_section(section)
        snapshot_id = str(searcher.snapshot_id)
        key: CacheKey = (snapshot_id, query, k, section or "", host or "")
        cached = self.cache.get(key)
        if cached is not None:
            return {**cached, "took_ms": round((time.perf_counter() - started) * 1000, 3)}
        response = await self.gate.run(lambda: searcher.search(query, k=k, section=section, host=host).to_dict())
        self.cache.put(key, response)
        return response

    async def sections(self) -> list[tuple[str, int]]:
        """Sections with article counts, computed once per snapshot."""
        searcher = self.live.require()
        snapshot_id = str(searcher.snapshot_id)
        if self._sections is None or self._sections[0] != snapshot_id:
            listed = await self.gate.run(searcher.sections)
            self._sections = (snapshot_id, [(str(name), int(count)) for name, count in listed])
        return self._sections[1]

    async def article(self, article_id: int) -> dict[str, Any]:
        searcher = self.live.require()
        found = await self.gate.run(searcher.article, article_id)
        if found is None:
            raise NotFoundError(f"no article {article_id} in snapshot {searcher.snapshot_id} — find ids via /search")
        return found

    async def similar(self, article_id: int, k: int) -> dict[str, Any]:
        check_k(k)
        searcher = self.live.require()
        if await self.gate.run(searcher.article, article_id) is None:
            raise NotFoundError(f"no article {article_id} in snapshot {searcher.snapshot_id} — find ids via /search")
        response = await self.gate.run(searcher.similar, article_id, k)
        return response.to_dict()

    async def _check_section(self, section: str) -> None:
        names = [name for name, _ in await self.sections()]
        if section in names:
            return
        listed = ", ".join(repr(n) for n in names[:MAX_SECTIONS_LISTED])
        more = f" and {len(names) - MAX_SECTIONS_LISTED} more (see /sections)" if len(names) > MAX_SECTIONS_LISTED else ""
        raise BadQueryError(f"unknown section {section[:80]!r} — valid sections: {listed}{more}")
