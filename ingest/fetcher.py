"""Fetch one URL the way a polite, resilient crawler should, whatever the server sends.

- A total deadline per attempt (`request_timeout_s`: connect, headers and body, redirect hops
  included; time spent waiting for politeness is not counted), so a body trickling one byte at a
  time is cut and the link ends "too slow"; connect and read timeouts inside it.
- Bodies read raw from the wire and decoded by our own bounded decoder (ingest/content_coding.py),
  the size cap counted on decoded bytes as they are produced, so neither a huge page nor a
  decompression bomb (one layer or stacked) ever sits whole in memory.
- A body whose Content-Encoding cannot be decoded (a lying gzip header, an encoding we never asked
  for, codings stacked on one another) is requested once more with `Accept-Encoding: identity`,
  else the fetch fails with the reason; no decoding error escapes.
- The same machinery fetches pages, lists, robots.txt and web archive answers (only the cap
  differs), so a deadline or a cap cannot be strong in one place and missing in its twin; any URL
  httpx cannot send (a malformed host, IDNA errors) is a reason, never an exception.
- Redirects followed by hand, up to a limit, with loop detection and the final URL kept; a page
  that is only a `<meta http-equiv="refresh">` is followed the same way. Every hop's host is
  asked for its robots.txt verdict before it is requested.
- Retries only where a retry can help (connection trouble, 408, 429, 5xx), with exponential
  backoff and jitter (tenacity), honouring Retry-After, bounded in attempts.
- Connection failures are classified by how lasting they are: a host name that does not exist
  (NXDOMAIN) versus a temporary DNS failure, a refused connection or a connect timeout. The
  crawler decides from that whether a link is dead, failed or still pending.
- Every request, retry or redirect hop is recorded as a FetchAttempt.
"""

from __future__ import annotations

import asyncio
import email.utils
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter
from w3lib.html import get_meta_refresh

from ingest import address_policy
from ingest.content_coding import StreamDecoder, UndecodableBody, content_coding
from ingest.host_pools import HostClients
from ingest.models import FetchAttempt, FetchedBody
from ingest.politeness import HostGate
from ingest.settings import Settings
from ingest.urls import host_of

NETWORK_DOWN_REASON = ("not tried yet: hosts stopped answering, the network looks down — "
                       "run linklens crawl again when online")
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504, 507, 509, 520, 521, 522, 523, 524})
GONE_STATUS = frozenset({404, 410})
# A meta refresh sooner than this is a redirect (browsers follow it); a later one is meant to be read.
MAX_META_REFRESH_DELAY_S = 5.0
META_REFRESH_SCAN_BYTES = 16 * 1024
MAX_VALIDATOR_CHARS = 512
_NXDOMAIN_ERRNOS = frozenset({socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)})
_NXDOMAIN_HINTS = ("name or service not known", "nodename nor servname", "no address associated")
_DNS_HINTS = ("temporary failure in name resolution", "getaddrinfo failed", "name resolution")


class Failure(StrEnum):
    """Why a fetch produced no page; drives the link's final state."""

    GONE = "gone"  # 404/410: lasting
    NXDOMAIN = "nxdomain"  # the host name does not exist (lasting only once confirmed, see the crawler)
    UNREACHABLE = "unreachable"  # DNS temporary failure, refused, connect timeout: transient
    EXHAUSTED = "exhausted"  # retries used up on retryable trouble (5xx, 429, broken connections)
    TOO_SLOW = "too_slow"  # the total deadline passed
    UNDECODABLE = "undecodable"  # a Content-Encoding that could not be decoded, even asking for identity
    REDIRECT_LOOP = "redirect_loop"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    HTTP = "http"  # other 4xx
    INVALID = "invalid"  # a URL httpx cannot even send
    BLOCKED = "blocked"  # a hop's robots.txt disallows it
    ROBOTS_UNAVAILABLE = "robots_unavailable"  # robots.txt answered 5xx or too slowly: disallowed for this crawl
    OFFLINE = "offline"  # not tried: the network is down
    ADDRESS = "address"  # the address policy refused where the host is (never connected): ingest/address_policy.py


# Failures that say nothing about the link, only about reaching its host right now.
CONNECTION_FAILURES = frozenset({Failure.NXDOMAIN, Failure.UNREACHABLE})


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


# Asked before every hop of a page fetch: None to go ahead, or the result that ends the fetch there.
HopCheck = Callable[[str], Awaitable[FetchResult | None]]


class _Retryable(Exception):
    """Raised inside an attempt when trying again may help."""

    def __init__(self, reason: str, status: int | None = None, retry_after_s: float | None = None,
                 connection: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after_s = retry_after_s
        self.connection = connection  # no connection could be made: the host, not the page


@dataclass
class _Budget:
    """What is left of one attempt's total deadline; only time on the wire is spent from it."""

    seconds: float
    cap: int  # decoded body bytes kept; the rest is never read
    body_bytes: int = 0  # read so far by the current request, for the "too slow" reason


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


def safe_validator(value: str | None) -> str | None:
    """An ETag / Last-Modified we can send back: printable ASCII only (httpx refuses anything else)."""
    if not value or len(value) > MAX_VALIDATOR_CHARS or not value.isascii() or not value.isprintable():
        return None
    return value


def meta_refresh_target(url: str, content_type: str, body: bytes) -> str | None:
    """The URL a `<meta http-equiv="refresh">` sends a browser to at once, if the page has one."""
    if content_type and "html" not in content_type.lower():
        return None
    head = body[:META_REFRESH_SCAN_BYTES]
    if b"refresh" not in head.lower():
        return None
    delay, target = get_meta_refresh(head.decode("utf-8", errors="replace"), baseurl=url)
    if target is None or delay is None or delay > MAX_META_REFRESH_DELAY_S or target == url:
        return None
    return target if target.lower().startswith(("http://", "https://")) else None


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
        check_hop: HopCheck | None = None,
        max_bytes: int | None = None,
    ) -> FetchResult:
        """Fetch `url`, retrying where it helps. Appends every request made to `attempts`.

        `max_bytes` caps the decoded body (default: LINKLENS_MAX_BODY_BYTES); a longer one is cut there
        and the result says `truncated`.
        """
        s = self._settings
        retrying = AsyncRetrying(
            stop=stop_after_attempt(max_attempts or s.max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_Retryable),
            reraise=True,
        )
        headers: dict[str, str] = {}
        if safe_validator(etag):
            headers["If-None-Match"] = etag  # type: ignore[assignment]
        if safe_validator(last_modified):
            headers["If-Modified-Since"] = last_modified  # type: ignore[assignment]
        number = 0
        try:
            async for attempt in retrying:
                with attempt:
                    number += 1
                    return await self._follow(url, headers, attempts, number, from_archive, check_hop,
                                              max_bytes or s.max_body_bytes)
        except _Retryable as exc:
            reason = f"{exc.reason}, gave up after {number} attempts"
            if exc.connection:
                host = host_of(url)
                self._gate.mark_unreachable(host, Failure.UNREACHABLE.value, f"{host} unreachable: {reason}")
                return FetchResult(url, url, failure=Failure.UNREACHABLE, reason=reason)
            return FetchResult(url=url, final_url=url, status=exc.status, failure=Failure.EXHAUSTED, reason=reason)
        raise AssertionError("unreachable: tenacity either returns or re-raises")

    async def answers_now(self, url: str) -> bool:
        """Whether `url` answers at all (any HTTP status) over a new connection, within one request deadline.

        A new connection on purpose: a pooled keep-alive connection would answer even when name
        resolution or new connections no longer work, which is what this asks about.
        """
        async with self._gate.slot(host_of(url)):
            try:
                async with (asyncio.timeout(self._settings.request_timeout_s), self._clients.fresh() as client,
                            client.stream("GET", url)):
                    return True
            except (httpx.HTTPError, TimeoutError, OSError, ValueError):  # UnicodeError is a ValueError
                return False

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        base = self._settings.backoff_base_s
        backoff = wait_exponential_jitter(multiplier=base, jitter=base, max=self._settings.backoff_max_s)
        delay = backoff(state)
        if isinstance(exc, _Retryable) and exc.retry_after_s is not None:
            delay = max(delay, min(exc.retry_after_s, self._settings.max_retry_after_s))
        return delay

    async def _follow(
        self, url: str, headers: dict[str, str], attempts: list[FetchAttempt], number: int, from_archive: bool,
        check_hop: HopCheck | None, max_bytes: int,
    ) -> FetchResult:
        """One attempt: request, then follow redirects hop by hop until a final response."""
        seen = [url]
        current = url
        budget = _Budget(self._settings.request_timeout_s, max_bytes)
        identity_asked = False
        while True:
            host = host_of(current)  # "" for a URL it cannot parse: the request then says why
            if self._gate.network_down:
                return FetchResult(url, current, failure=Failure.OFFLINE, reason=NETWORK_DOWN_REASON,
                                   redirects=seen[1:])
            if check_hop is not None:  # before the host slot: robots.txt needs that slot itself
                refusal = await check_hop(current)
                if refusal is not None:
                    refusal.url, refusal.redirects = url, seen[1:]
                    if current != url and refusal.failure is Failure.BLOCKED:
                        refusal.reason = f"redirected to {current}, which its site's robots.txt disallows"
                    elif current != url and refusal.failure is Failure.ADDRESS:
                        refusal.reason = f"redirected to {current}: {refusal.reason}"
                    return refusal
            async with self._gate.slot(host):
                # checked after the wait too: the host may have failed while we queued for it
                dead_host = self._gate.unreachable(host)
                if dead_host:
                    return FetchResult(url, current, failure=Failure(dead_host[0]), reason=dead_host[1],
                                       redirects=seen[1:])
                try:
                    outcome = await self._request(current, headers, attempts, number, from_archive, budget)
                except UndecodableBody as exc:
                    if identity_asked:
                        return FetchResult(url, current, failure=Failure.UNDECODABLE, redirects=seen[1:],
                                           reason=f"{exc.reason}, even when asked for no encoding")
                    identity_asked = True
                    headers = {**headers, "Accept-Encoding": "identity"}
                    continue  # the same URL once more, inside the same deadline
            if isinstance(outcome, FetchResult):
                if outcome.failure is Failure.ADDRESS and current != url:
                    outcome.reason = f"redirected to {current}: {outcome.reason}"
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
        self, url: str, headers: dict[str, str], attempts: list[FetchAttempt], number: int, from_archive: bool,
        budget: _Budget,
    ) -> FetchResult | str:
        """Send one request. Returns a final result, the next URL of a redirect, or raises _Retryable."""
        started = time.time()
        clock = time.perf_counter()
        status: int | None = None
        budget.body_bytes = 0
        deadline = self._settings.request_timeout_s
        connected = False

        async def trace(event: str, info: dict[str, object]) -> None:
            """httpcore's trace hook: when the request really goes out (politeness counts from there), and
            whether a deadline hit while connecting or while waiting for the server."""
            nonlocal connected
            if event.startswith("http11.") or event == "connection.connect_tcp.complete":
                connected = True
            if event == "http11.send_request_headers.started":
                self._gate.sending(host_of(url))

        def record(error: str | None) -> None:
            attempts.append(FetchAttempt(url, number, started, (time.perf_counter() - clock) * 1000, status, error,
                                         from_archive))

        try:
            if budget.seconds <= 0:
                raise TimeoutError
            async with asyncio.timeout(budget.seconds):  # connect, headers and body: one total
                target = httpx.URL(url)
                async with self._clients.lease(target) as client:
                    request = client.build_request("GET", target, headers=headers, extensions={"trace": trace})
                    response = await client.send(request, stream=True)
                    self._gate.mark_network_seen(url)
                    try:
                        status = response.status_code
                        result = await self._handle(url, response, budget)
                    finally:
                        await response.aclose()
        except TimeoutError:
            if not connected:  # still resolving or connecting: the host's trouble, retried like a connect timeout
                reason = f"no connection within the {deadline:g} s deadline"
                record(reason)
                raise _Retryable(reason, connection=True) from None
            # The total deadline: final, not retried (a trickling server trickles again).
            got = (f"{budget.body_bytes} bytes of the body" if status is not None
                   else "its headers never completed")
            reason = f"too slow: no complete answer within {deadline:g} s ({got})"
            record(reason)
            return FetchResult(url, url, status, failure=Failure.TOO_SLOW, reason=reason)
        except _Retryable as exc:
            record(exc.reason)
            raise
        except UndecodableBody as exc:
            record(exc.reason)
            raise
        except httpx.ConnectTimeout:
            record("connect timed out")
            raise _Retryable("connect timed out", connection=True) from None
        except httpx.ConnectError as exc:
            refusal = address_policy.refusal_in(exc)
            if refusal is not None:  # decided before connecting: final, and the same whether anything listens
                record(refusal.reason)
                return FetchResult(url, url, failure=Failure.ADDRESS, reason=refusal.reason)
            failure = self._connect_failure(url, exc, record)
            if isinstance(failure, FetchResult):
                return failure
            raise failure from None
        except httpx.TimeoutException as exc:
            reason = f"timed out ({type(exc).__name__})"
            record(reason)
            raise _Retryable(reason, status) from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            reason = f"connection broken: {exc or type(exc).__name__}"
            record(reason)
            raise _Retryable(reason, status) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.LocalProtocolError, ValueError) as exc:
            # ValueError covers UnicodeError and idna.IDNAError: a host name no resolver can be asked for
            what = f"its host name is not a valid domain name (IDNA: {exc})" if isinstance(exc, UnicodeError) \
                else str(exc) or type(exc).__name__
            record(f"invalid request: {what}")
            return FetchResult(url, url, failure=Failure.INVALID, reason=f"cannot request this URL: {what}")
        finally:
            budget.seconds -= time.perf_counter() - clock
        record(None if isinstance(result, str) or result.ok or result.not_modified else result.reason)
        return result

    def _connect_failure(self, url: str, exc: httpx.ConnectError,
                         record: Callable[[str | None], None]) -> FetchResult | _Retryable:
        """A connection that could not be made, by cause: NXDOMAIN is final here, the rest is retried."""
        message = str(exc) or type(exc).__name__
        lowered = message.lower()
        root = _root_cause(exc)
        host = host_of(url)
        nxdomain = (root.errno in _NXDOMAIN_ERRNOS if isinstance(root, socket.gaierror)
                    else any(hint in lowered for hint in _NXDOMAIN_HINTS))
        if nxdomain:
            reason = f"host name does not resolve (DNS: {message})"
            record(reason)
            self._gate.mark_unreachable(host, Failure.NXDOMAIN.value, f"{host}: {reason}")
            return FetchResult(url, url, failure=Failure.NXDOMAIN, reason=reason)
        if isinstance(root, socket.gaierror) or any(hint in lowered for hint in _DNS_HINTS):
            reason = f"DNS temporary failure: {message}"
        elif isinstance(root, ConnectionRefusedError) or "refused" in lowered:
            reason = f"connection refused: {message}"
        else:
            reason = f"connection error: {message}"
        record(reason)
        return _Retryable(reason, connection=True)

    async def _handle(self, url: str, response: httpx.Response, budget: _Budget) -> FetchResult | str:
        status = response.status_code
        if status == 304:  # before the redirect check: httpx counts every 3xx as a redirect
            return FetchResult(url, url, status, not_modified=True, reason="not modified since last crawl")
        if response.is_redirect:
            location = response.headers.get("location")
            if not location:
                return FetchResult(url, url, status, failure=Failure.HTTP, reason=f"HTTP {status} without Location")
            try:
                return str(response.url.join(location))
            except (httpx.InvalidURL, ValueError) as exc:
                return FetchResult(url, url, status, failure=Failure.INVALID,
                                   reason=f"HTTP {status} to a malformed URL {location[:200]!r} ({exc})")
        if status in RETRYABLE_STATUS:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if retry_after is not None:
                self._gate.push_back(host_of(url), min(retry_after, self._settings.max_retry_after_s))
            raise _Retryable(f"HTTP {status}", status, retry_after)
        if status in GONE_STATUS:
            return FetchResult(url, url, status, failure=Failure.GONE, reason=f"HTTP {status}")
        if status >= 400:
            return FetchResult(url, url, status, failure=Failure.HTTP, reason=f"HTTP {status}")
        body, truncated = await self._read_capped(response, budget)
        content_type = response.headers.get("content-type", "")
        refresh = meta_refresh_target(url, content_type, body)
        if refresh is not None:
            return refresh
        return FetchResult(
            url,
            url,
            status,
            body=FetchedBody(
                url=url,
                content_type=content_type,
                body=body,
                truncated=truncated,
                encoding=response.charset_encoding,
                etag=safe_validator(response.headers.get("etag")),
                last_modified=safe_validator(response.headers.get("last-modified")),
            ),
            reason=f"HTTP {status}" + (f", body cut at {len(body)} bytes" if truncated else ""),
        )

    async def _read_capped(self, response: httpx.Response, budget: _Budget) -> tuple[bytes, bool]:
        """Read the raw stream through our bounded decoder; keep at most `budget.cap` decoded bytes, read no more.

        Never httpx's decoded `aiter_bytes`: its decoder has no output limit (see ingest/content_coding.py).
        """
        decoder = StreamDecoder(content_coding(response))
        cap = budget.cap
        chunks: list[bytes] = []
        size = 0
        async for raw in response.aiter_raw():
            for piece in decoder.feed(raw):
                if size + len(piece) > cap:
                    chunks.append(piece[: cap - size])
                    budget.body_bytes = cap
                    return b"".join(chunks), True
                chunks.append(piece)
                size += len(piece)
                budget.body_bytes = size
        return b"".join(chunks), False
