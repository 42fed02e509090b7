"""Where the crawler may connect: every resolved address checked at connect time (SSRF).

A list is edited by strangers and its links (and every redirect they answer with) point wherever
they like, so a URL decides nothing about where we connect. The address is checked where the
connection is made, in an httpcore network backend installed into every client linklens makes:
the host name is resolved once, *every* address it resolves to is checked, and the connection
goes to a checked address (TLS still names the host, so SNI and certificates are unchanged). A
name that resolves to something public for a check and to something internal a moment later
(DNS rebinding) cannot slip past: there is no second resolution to rebind.

The rules, like browsers' Private Network Access:
- never: link-local addresses (169.254.0.0/16, fe80::/10), the cloud metadata endpoints (AWS,
  GCP, Azure, Alibaba, Oracle …, by address and by name), multicast and reserved space. Nothing
  linklens fetches ever needs them.
- private (loopback, RFC 1918, carrier-grade NAT, unique-local IPv6, the unspecified address,
  and IPv4 hidden in IPv6 forms as what they embed): reachable only when the link's origin is
  private too — the list citing it was read from a file or from a private address (an intranet
  list) — under `LINKLENS_PRIVATE_TARGETS=auto` (the default). `allow` lets every link reach
  private addresses; `deny` none.
- public: everything else.

A refusal never depends on whether anything listens there: it is decided before any connection,
from the address alone, and its reason is the same whether or not a server exists. When a link
from a public list reaches a private address only because `allow` says so, its connection
failures (refused, reset, connect timeout) all read the same, so such a list cannot tell a closed
port from a filtered one by the reason it gets; links of your own (file or intranet) lists keep the
detailed reason, which is what you need to fix them.

The permission travels with the work, not with the client: a context variable set around each
link's fetch (and each list download), read by the backend at connect time. Connection pools are
kept apart per permission (see host_pools.py), so a keep-alive connection opened for a trusted
link is never reused by an untrusted one.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import ipaddress
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import httpcore

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Metadata services reachable at addresses that are not link-local (AWS's IPv6 one is unique-local,
# Alibaba's is in carrier-grade NAT space, Azure's wire server is a public address).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "168.63.129.16", "192.0.0.192",
))
# Host names of metadata services, refused before any lookup (a resolver inside a cloud answers them).
METADATA_NAMES = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal",
    "metadata.azure.com", "metadata.tencentyun.com",
})
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
CARRIER_GRADE_NAT = ipaddress.ip_network("100.64.0.0/10")
HINT = "set LINKLENS_PRIVATE_TARGETS=allow to fetch private addresses"


class PrivateTargets(StrEnum):
    """The setting: may links reach private (loopback, intranet) addresses?"""

    AUTO = "auto"  # when the list citing them was read from a file or a private address
    ALLOW = "allow"
    DENY = "deny"


class AddressClass(StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"
    NEVER = "never"


@dataclass(frozen=True)
class Verdict:
    kind: AddressClass
    what: str  # the kind of address, in words, for a reason


class AddressRefused(httpcore.ConnectError):
    """The address policy refused a connection before it was attempted; `reason` is for the link."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PrivateUnreachable(httpcore.ConnectError):
    """An allowed private address did not take the connection, whatever the cause (refused, timeout…)."""


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries (mapped, NAT64, 6to4, Teredo), which is where it leads."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def classify(address: IPAddress) -> Verdict:
    """What kind of address this is, for the policy."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            address = ipaddress.IPv6Address(str(address).split("%", 1)[0])
        inner = embedded_ipv4(address)
        if inner is not None:
            verdict = classify(inner)
            return Verdict(verdict.kind, f"{verdict.what} (inside an IPv6 address)")
    if address in METADATA_ADDRESSES:
        return Verdict(AddressClass.NEVER, "a cloud instance metadata address")
    if address.is_link_local:
        return Verdict(AddressClass.NEVER, "a link-local address (where cloud instance metadata lives)")
    if address.is_multicast:
        return Verdict(AddressClass.NEVER, "a multicast address")
    if address.is_loopback:
        return Verdict(AddressClass.PRIVATE, "a loopback address")
    if address.is_unspecified:
        return Verdict(AddressClass.PRIVATE, "the unspecified address (this machine)")
    if address.is_reserved:
        return Verdict(AddressClass.NEVER, "a reserved address")
    site_local = isinstance(address, ipaddress.IPv6Address) and address.is_site_local
    if address.is_private or address in CARRIER_GRADE_NAT or site_local or not address.is_global:
        return Verdict(AddressClass.PRIVATE, "a private address")
    return Verdict(AddressClass.PUBLIC, "a public address")


def parse_address(host: str) -> IPAddress | None:
    """`host` as an IP address if it is one (brackets and an IPv6 zone allowed), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (the one lookup of a connection; tests replace this function)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# --- the permission of the work at hand ----------------------------------------------------------

# (origin is private, the setting) of the work at hand; unset: a public origin under `auto`.
_SCOPE: contextvars.ContextVar[tuple[bool, PrivateTargets] | None] = contextvars.ContextVar(
    "linklens_address_scope", default=None)


@contextmanager
def private_targets(origin_private: bool, mode: PrivateTargets | str = PrivateTargets.AUTO) -> Iterator[None]:
    """Within this block, connections follow `mode` for work whose origin is (not) private."""
    token = _SCOPE.set((origin_private, PrivateTargets(mode)))
    try:
        yield
    finally:
        _SCOPE.reset(token)


def in_scope() -> bool:
    """Whether some caller has said what the work at hand may reach."""
    return _SCOPE.get() is not None


def _mode() -> PrivateTargets:
    scope = _SCOPE.get()
    return PrivateTargets.AUTO if scope is None else scope[1]


def _obscured() -> bool:
    """Private connection failures read alike: a public origin reaches private addresses only by `allow`."""
    scope = _SCOPE.get()
    return scope is not None and scope[1] is PrivateTargets.ALLOW and not scope[0]


def private_allowed() -> bool:
    """Whether the work at hand may reach private addresses."""
    scope = _SCOPE.get()
    if scope is None:
        return False
    origin_private, mode = scope
    return mode is PrivateTargets.ALLOW or (mode is PrivateTargets.AUTO and origin_private)


def pool_key() -> str:
    """What keeps connection pools of trusted and untrusted work apart (keep-alive must not cross)."""
    return "+private" if private_allowed() else ""


def check_address(host: str, address: IPAddress) -> Verdict:
    """Raise AddressRefused unless the work at hand may connect to `address` (which `host` named)."""
    verdict = classify(address)
    if verdict.kind is AddressClass.NEVER:
        raise AddressRefused(f"{host} is {verdict.what}: linklens never fetches it")
    if verdict.kind is AddressClass.PRIVATE and not private_allowed():
        if _mode() is PrivateTargets.DENY:
            raise AddressRefused(f"{host} is or resolves to {verdict.what}, which LINKLENS_PRIVATE_TARGETS=deny "
                                 "forbids")
        raise AddressRefused(f"{host} is or resolves to {verdict.what}, and what led here was read from a public "
                             f"address — {HINT}")
    return verdict


def check_name(host: str) -> IPAddress | None:
    """Refuse metadata host names before any lookup; the address if `host` is an IP literal."""
    name = host.rstrip(".").lower()
    if name in METADATA_NAMES:
        raise AddressRefused(f"{host} is a cloud instance metadata service: linklens never fetches it")
    return parse_address(host)


def checked_addresses(host: str, addresses: Iterable[str]) -> list[tuple[str, Verdict]]:
    """Every address checked (one refused address refuses the name: a mixed answer is a trick)."""
    checked = []
    for text in addresses:
        address = parse_address(text)
        if address is None:
            raise AddressRefused(f"{host} resolved to {text!r}, which is not an IP address")
        checked.append((text, check_address(host, address)))
    if not checked:
        raise httpcore.ConnectError(f"{host}: name resolution returned no address")
    return checked


def _resolved(host: str, port: int) -> list[tuple[str, Verdict]]:
    literal = check_name(host)
    if literal is not None:
        return [(str(literal), check_address(host, literal))]
    return checked_addresses(host, _lookup(host, port))


def _unreachable(host: str) -> PrivateUnreachable:
    return PrivateUnreachable(f"no connection to {host} (a private address)")


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the address policy in front of every TCP connection."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None, socket_options: Iterable[Any] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        literal = check_name(host)
        if literal is not None:
            checked = [(str(literal), check_address(host, literal))]
        else:  # resolved in the loop's executor (the crawler gives it one thread per connection slot)
            addresses = await asyncio.get_running_loop().run_in_executor(None, functools.partial(_lookup, host, port))
            checked = checked_addresses(host, addresses)
        last: Exception | None = None
        for address, verdict in checked:
            try:
                return await self._inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                     socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = _unreachable(host) if verdict.kind is AddressClass.PRIVATE and _obscured() else exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("unix sockets are never fetched")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedSyncBackend(httpcore.NetworkBackend):
    """The same policy for synchronous clients (the list downloads)."""

    def __init__(self, inner: httpcore.NetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        last: Exception | None = None
        for address, verdict in _resolved(host, port):
            try:
                return self._inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                               socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = _unreachable(host) if verdict.kind is AddressClass.PRIVATE and _obscured() else exc
        assert last is not None
        raise last

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        raise AddressRefused("unix sockets are never fetched")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _lookup(host: str, port: int) -> list[str]:
    try:
        return resolve(host, port)
    except socket.gaierror as exc:
        raise httpcore.ConnectError(str(exc)) from exc


def guard(transport: Any) -> Any:
    """Install the policy into an httpx transport (Async or sync); returns it.

    httpx (0.27, 0.28) takes no network backend, so it goes into the httpcore pool the transport
    made; a transport without one (a proxy would make another pool class) is refused rather than
    left unguarded.
    """
    pool = getattr(transport, "_pool", None)
    if isinstance(pool, httpcore.AsyncConnectionPool) and type(pool) is httpcore.AsyncConnectionPool:
        pool._network_backend = GuardedBackend()
    elif isinstance(pool, httpcore.ConnectionPool) and type(pool) is httpcore.ConnectionPool:
        pool._network_backend = GuardedSyncBackend()
    else:
        raise RuntimeError(f"cannot install the address policy into {type(transport).__name__} "
                           f"({type(pool).__name__}): a proxy or an unknown httpx version")
    return transport


def refusal_in(exc: BaseException) -> AddressRefused | None:
    """The policy's refusal somewhere in `exc`'s chain (httpx wraps httpcore's errors), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, AddressRefused):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def source_is_private(source: str) -> bool:
    """Whether a list read from `source` (a path or the URL it is downloaded from) is a private origin: a file,
    or a URL whose host is (or resolves only to) a non-public address. Looked up now: a name that does not
    resolve is public."""
    if not source.lower().startswith(("http://", "https://")):
        return True  # a file, the bundled list, or links added without a list
    host = urlsplit(source).hostname or ""
    try:
        literal = check_name(host)
        addresses = [str(literal)] if literal is not None else resolve(host, 0)
    except (AddressRefused, OSError, UnicodeError):
        return False
    verdicts = [classify(a) for a in map(parse_address, addresses) if a is not None]
    return bool(verdicts) and all(v.kind is AddressClass.PRIVATE for v in verdicts)
