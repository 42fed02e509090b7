"""URL normalisation for links found in the list.

The normalised URL is the identity of a link: it de-duplicates the list (the
same article under two sections must become one link) and it is what the
crawler fetches.  So normalisation must merge spellings that are the same
resource (``HTTP://Example.COM:80/a#intro`` and ``http://example.com/a``)
without ever changing which resource is fetched.

courlan is used for what it is good at -- recognising tracking parameters
(``utm_*``, ``fbclid``, ...) -- but its ``normalize_url``/``clean_url`` are
not used wholesale, because on real list URLs they change the target:

* ``strict=True`` drops every query parameter not on an allow-list, including
  YouTube's ``?v=`` (every video would collapse to ``/watch``);
* the path is re-quoted (``medium.com/@user/...`` becomes ``%40user``, which
  RFC 3986 does not consider equivalent) and ``//`` is collapsed;
* the query is re-built with ``parse_qs``, which silently drops value-less
  parameters (``?print``) and re-orders the others;
* with ``strict=False`` fragments are kept, and we want them dropped.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

import courlan

__all__ = ["normalise_url", "host_of"]

# RFC 3986 scheme syntax.  Anything without one is relative (``CONTRIBUTING.md``,
# ``#principles``, ``//cdn.example.com/x``) and has no meaning outside the list's repo.
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Characters legal in a path (RFC 3986 pchar + "/") plus "%" so existing escapes
# survive: quoting with this safe set only escapes characters that are illegal.
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"


def normalise_url(url: str) -> str | None:
    """Return the canonical form of ``url``, the URL unchanged for non-web schemes, or None.

    * http(s): scheme and host lower-cased, default port removed, fragment
      dropped (same document), tracking query parameters removed (courlan's
      list), everything else -- path, other query parameters, their order and
      encoding, http vs https -- kept as written, because it can matter to the server.
      A bare host gets no trailing slash (``https://a.org/`` == ``https://a.org``).
      Fragments that are routes (``#!/x``, ``#/x``) are kept: they select content.
    * other schemes (``ftp:``, ``mailto:``...): returned trimmed and otherwise
      untouched, so the crawler can record them as unsupported.
    * not a URL (anchors, relative paths, empty, ``http://`` without a host): None.
    """
    if not isinstance(url, str):
        return None
    text = url.strip()
    if text.startswith("<") and text.endswith(">"):  # markdown autolink spelling
        text = text[1:-1].strip()
    match = _SCHEME_RE.match(text)
    if not text or match is None:
        return None
    scheme = match.group(1).lower()
    if scheme not in _DEFAULT_PORTS:
        return text
    try:
        parts = urlsplit(text)
        host = parts.hostname  # lower-cased by urlsplit
        port = parts.port
    except ValueError:  # bad port, unbalanced IPv6 bracket
        return None
    if not host:
        return None

    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    if userinfo:
        netloc = f"{userinfo}@{netloc}"

    path = quote(parts.path, safe=_PATH_SAFE)
    query = _strip_trackers(parts.query)
    fragment = parts.fragment if parts.fragment.startswith(("!", "/")) else ""
    if path in ("", "/"):  # "https://a.org", "https://a.org/" and "https://a.org?x" spellings
        path = "/" if query or fragment else ""
    result = urlunsplit((scheme, netloc, path, query, quote(fragment, safe=_QUERY_SAFE)))
    return result if courlan.is_valid_url(result) else None


def host_of(url: str) -> str:
    """Lower-cased host of ``url`` without port and leading ``www.``; "" if it has none.

    ``www.`` is dropped because the host is used to group and filter articles by
    site (and to be polite per site), and ``www.infoq.com``/``infoq.com`` are one site.
    """
    try:
        host = urlsplit(url.strip()).hostname or ""
    except ValueError:
        return ""
    return host[4:] if host.startswith("www.") and len(host) > 4 else host


def _strip_trackers(query: str) -> str:
    """Drop tracking parameters, keeping the remaining ones verbatim and in order."""
    if not query:
        return ""
    kept = [pair for pair in query.split("&") if pair and not _is_tracker(pair.partition("=")[0])]
    return quote("&".join(kept), safe=_QUERY_SAFE)


@lru_cache(maxsize=1024)
def _is_tracker(raw_key: str) -> bool:
    """Ask courlan whether a parameter name is a tracker (its rules, not ours).

    courlan's non-strict normalisation removes exactly the tracking parameters,
    so a probe URL whose only parameter disappears names a tracker.
    """
    key = unquote_plus(raw_key)
    if not key:
        return False
    probe = courlan.normalize_url(f"http://probe.invalid/?{quote(key, safe='')}=1", strict=False)
    return urlsplit(probe).query == ""
