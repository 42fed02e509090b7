"""Fetch one URL the way a polite, resilient crawler should.

- Timeouts on connect, read and the whole request (asyncio deadline around each attempt).
- Bodies streamed and cut at a size cap, so a huge page never sits whole in memory.
- Redirects followed by hand, up to a limit, with loop detection and the final URL kept.
- Retries only where a retry can help (connection trouble, 408, 429, 5xx), with
  exponential backoff and jitter (tenacity), honouring Retry-After, bounded in attempts.
- Every request, retry or redirect hop is recorded as a FetchAttempt.
"""

from __future__ import annotations

import asyncio
import email.utils
import socket
import time
from dataclasses import dataclass, field
from enum import StrEnum

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from ingest.models import FetchAttempt, FetchedBody
from ingest.politeness import HostGate
from ingest.settings import Settings
from ingest.urls import host_of

NETWORK_DOWN_REASON = ("not tried yet: no host could be resolved, the network looks down — "
                       "run linklens crawl again when online")
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504, 507, 509, 520, 521, 522, 523, 524})
GONE_STATUS = frozenset({404, 410})
ACCEPT = "text/html,application/xhtml+xml,application/pdf;q=0.9,text/plain;q=0.8,*/*;q=0.5"
_DNS_HINTS = ("name or service not known", "nodename nor servname", "temporary failure in name resolution",
              "no address associated", "getaddrinfo failed", "name resolution")


class Failure(StrEnum):
    """Why a fetch produced no page; drives the link's final state."""

    GONE = "gone"  # 404/410
    DNS = "dns"
    REFUSED = "refused"
    EXHAUSTED = "exhausted"  # retries used up on retryable trouble
    REDIRECT_LOOP = "redirect_loop"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    HTTP = "http"  # other 4xx
    INVALID = "invalid"  # a URL httpx cannot even send
    OFFLINE = "offline"  # not tried: no host at all could be resolved


@dataclass
class FetchResult:
    """The end of a fetch: a body, a 304, or a failure with a reason in words."""

    url: str
    final_url: str
    status: int | None = None
    body: FetchedBody | None = None
    not_modified: bool = False
    failure: Failure | None = None
    reason: str = ""
    redirects: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.body is not None


class _Retryable(Exception):
    """Raised inside an attempt when trying again may help."""

    def __init__(self, reason: str, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after_s = retry_after_s


def _root_cause(exc: BaseException) -> BaseException:
    """httpx wraps the OS error a few levels deep; the innermost one tells refused from DNS."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return exc


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After is either seconds or an HTTP date; anything else is ignored."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HostClients:
    """One small HTTP connection pool per origin, all sharing one TLS context.

    Why not one big client: httpcore's pool scans every connection it holds on each
    request and response (measured: most of the crawler's CPU with 12 hosts and 32
    pooled connections). The politeness gate already caps requests per host, so a
    per-origin pool of that size never waits and stays O(1) per request.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._tls = httpx.create_ssl_context()
        self._timeout = httpx.Timeout(
            connect=settings.connect_timeout_s,
            read=settings.read_timeout_s,
            write=settings.read_timeout_s,
            pool=settings.request_timeout_s,
        )
        # + 1: robots.txt or an archive lookup may run beside the page requests
        size = settings.per_host_concurrency + 1
        self._limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        self._clients: dict[str, httpx.AsyncClient] = {}

    def for_url(self, url: httpx.URL) -> httpx.AsyncClient:
        key = f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}"
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = httpx.AsyncClient(
                timeout=self._timeout,
                limits=self._limits,
                verify=self._tls,
                follow_redirects=False,
                headers={"User-Agent": self._settings.user_agent, "Accept": ACCEPT},
                trust_env=False,
            )
        return client

    async def __aenter__(self) -> HostClients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


class Fetcher:
    """Fetches URLs through a HostGate; stateless apart from the shared pools and gate."""

    def __init__(self, settings: Settings, clients: HostClients, gate: HostGate) -> None:
        self._settings = settings
        self._clients = clients
        self._gate = gate

    async def fetch(
        self,
        url: str,
        attempts: list[FetchAttempt],
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        from_archive: bool = False,
        max_attempts: int | None = None,
    ) -> FetchResult:
        """Fetch `url`, retrying where it helps. Appends every request made to `attempts`."""
        s = self._settings
        retrying = AsyncRetrying(
            stop=stop_after_attempt(max_attempts or s.max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_Retryable),
            reraise=True,
        )
        headers: dict[str, str] = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        number = 0
        try:
            async for attempt in retrying:
                with attempt:
                    number += 1
                    return await self._follow(url, headers, attempts, number, from_archive)
        except _Retryable as exc:
            return FetchResult(
                url=url,
                final_url=url,
                status=exc.status,
                failure=Failure.EXHAUSTED,
                reason=f"{exc.reason}, gave up after {number} attempts",
            )
        raise AssertionError("unreachable: tenacity either returns or re-raises")

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        base = self._settings.backoff_base_s
        backoff = wait_exponential_jitter(multiplier=base, jitter=base, max=self._settings.backoff_max_s)
        delay = backoff(state)
        if isinstance(exc, _Retryable) and exc.retry_after_s is not None:
            delay = max(delay, min(exc.retry_after_s, self._settings.max_retry_after_s))
        return delay

    async def _follow(
        self, url: str, headers: dict[str, str], attempts: list[FetchAttempt], number: int, from_archive: bool
    ) -> FetchResult:
        """One attempt: request, then follow redirects hop by hop until a final response."""
        seen = [url]
        current = url
        while True:
            host = host_of(current)
            if self._gate.network_down:
                return FetchResult(url, current, failure=Failure.OFFLINE, reason=NETWORK_DOWN_REASON,
                                   redirects=seen[1:])
            async with self._gate.slot(host):
                # checked after the wait too: the host may have failed while we queued for it
                dead_host = self._gate.unreachable(host)
                if dead_host:
                    return FetchResult(url, current, failure=Failure.DNS, reason=dead_host, redirects=seen[1:])
                outcome = await self._request(current, headers, attempts, number, from_archive)
            if isinstance(outcome, FetchResult):
                outcome.url = url
                outcome.redirects = seen[1:]
                return outcome
            # a redirect: outcome is the next URL
            if outcome in seen:
                return FetchResult(url, current, failure=Failure.REDIRECT_LOOP,
                                   reason=f"redirect loop: {' -> '.join(seen + [outcome])}", redirects=seen[1:])
            if len(seen) > self._settings.max_redirects:
                return FetchResult(url, current, failure=Failure.TOO_MANY_REDIRECTS,
                                   reason=f"more than {self._settings.max_redirects} redirects", redirects=seen[1:])
            seen.append(outcome)
            current = outcome

    async def _request(
        self, url: str, headers: dict[str, str], attempts: list[FetchAttempt], number: int, from_archive: bool
    ) -> FetchResult | str:
        """Send one request. Returns a final result, the next URL of a redirect, or raises _Retryable."""
        started = time.time()
        clock = time.perf_counter()
        status: int | None = None

        def record(error: str | None) -> None:
            attempts.append(FetchAttempt(url, number, started, (time.perf_counter() - clock) * 1000, status, error,
                                         from_archive))

        try:
            async with asyncio.timeout(self._settings.request_timeout_s):
                target = httpx.URL(url)
                client = self._clients.for_url(target)
                request = client.build_request("GET", target, headers=headers)
                response = await client.send(request, stream=True)
                self._gate.mark_network_seen()
                try:
                    status = response.status_code
                    result = await self._handle(url, response)
                finally:
                    await response.aclose()
        except _Retryable as exc:
            record(exc.reason)
            raise
        except httpx.ConnectError as exc:
            message = str(exc) or type(exc).__name__
            lowered = message.lower()
            root = _root_cause(exc)
            if isinstance(root, socket.gaierror) or any(hint in lowered for hint in _DNS_HINTS):
                record(f"DNS failure: {message}")
                self._gate.mark_unreachable(host_of(url), f"DNS failure for {host_of(url)}: {message}")
                return FetchResult(url, url, failure=Failure.DNS, reason=f"DNS failure: {message}")
            if isinstance(root, ConnectionRefusedError) or "refused" in lowered:
                record(f"connection refused: {message}")
                return FetchResult(url, url, failure=Failure.REFUSED, reason=f"connection refused: {message}")
            record(f"connection error: {message}")
            raise _Retryable(f"connection error: {message}") from None
        except (httpx.TimeoutException, TimeoutError) as exc:
            reason = f"timed out ({type(exc).__name__})"
            record(reason)
            raise _Retryable(reason, status) from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            reason = f"connection broken: {exc or type(exc).__name__}"
            record(reason)
            raise _Retryable(reason, status) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.LocalProtocolError) as exc:
            record(f"invalid request: {exc}")
            return FetchResult(url, url, failure=Failure.INVALID, reason=f"cannot request this URL: {exc}")
        record(None if isinstance(result, str) or result.ok or result.not_modified else result.reason)
        return result

    async def _handle(self, url: str, response: httpx.Response) -> FetchResult | str:
        status = response.status_code
        if status == 304:  # before the redirect check: httpx counts every 3xx as a redirect
            return FetchResult(url, url, status, not_modified=True, reason="not modified since last crawl")
        if response.is_redirect:
            location = response.headers.get("location")
            if not location:
                return FetchResult(url, url, status, failure=Failure.HTTP, reason=f"HTTP {status} without Location")
            return str(response.url.join(location))
        if status in RETRYABLE_STATUS:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if retry_after is not None:
                self._gate.push_back(host_of(url), min(retry_after, self._settings.max_retry_after_s))
            raise _Retryable(f"HTTP {status}", status, retry_after)
        if status in GONE_STATUS:
            return FetchResult(url, url, status, failure=Failure.GONE, reason=f"HTTP {status}")
        if status >= 400:
            return FetchResult(url, url, status, failure=Failure.HTTP, reason=f"HTTP {status}")
        body, truncated = await self._read_capped(response)
        return FetchResult(
            url,
            url,
            status,
            body=FetchedBody(
                url=url,
                content_type=response.headers.get("content-type", ""),
                body=body,
                truncated=truncated,
                encoding=response.charset_encoding,
                etag=response.headers.get("etag"),
                last_modified=response.headers.get("last-modified"),
            ),
            reason=f"HTTP {status}" + (f", body cut at {len(body)} bytes" if truncated else ""),
        )

    async def _read_capped(self, response: httpx.Response) -> tuple[bytes, bool]:
        """Stream at most max_body_bytes (decoded); the rest is never read."""
        cap = self._settings.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            if size + len(chunk) > cap:
                chunks.append(chunk[: cap - size])
                return b"".join(chunks), True
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks), False
