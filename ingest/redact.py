"""What of a list's source may be shown to anyone: the store keeps it whole, snapshots and the API do not.

A list's source is whatever the user typed: a URL may carry `user:pass@` or a
`?token=…`, a path names the machine's folders. A snapshot is served to whoever
reaches the server (`GET /lists`, the page), so it records the public form only:
a URL without credentials, query or fragment, a local file by its name. The
full source stays in the page store for `linklens lists` on the machine.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from urllib.parse import urlsplit, urlunsplit


def public_source(source: str | None) -> str | None:
    """`source` with nothing secret: `https://host/path` for a URL, the file name for a local path.

    Never raises: a URL that cannot be parsed is shown by its scheme alone rather than as typed.
    """
    if source is None:
        return None
    text = source.strip()
    if "://" not in text:
        return PurePosixPath(text).name if "/" in text else text  # bare labels ("(unnamed list)") stay
    scheme = text.split("://", 1)[0].lower()
    if scheme == "file":
        return PurePosixPath(urlsplit(text).path).name
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return f"{scheme}://"
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
