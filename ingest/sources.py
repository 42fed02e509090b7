"""Where a list comes from: a file, an http(s) URL, or the bundled awesome-scalability list.

Every way this can go wrong ends in a SourceError that names the source and what
to do, because this is the first thing a new user types.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import httpx

from ingest.errors import SourceError
from ingest.listparse import parse_list
from ingest.models import ListedLink
from ingest.settings import Settings

BUNDLED_LIST = Path(__file__).resolve().parent.parent / "data" / "awesome-scalability.txt"
BUNDLED_NAME = "awesome-scalability (bundled)"
BUNDLED_KEY = "bundled:awesome-scalability"
MAX_LIST_BYTES = 20 * 2**20
_README_NAMES = {"readme", "readme.md", "readme.markdown", "index.md"}


@dataclass
class LinkList:
    """A parsed list and where it came from.

    `source` is how the user named it (for messages); `key` identifies the list in the store (an
    absolute path, a URL, or the bundled list), so the same list crawled from another folder is
    still the same list; `name` is a short label for reports.
    """

    source: str
    links: list[ListedLink]
    key: str = ""
    name: str = ""


def list_name(key: str) -> str:
    """A short label: the file or repository name (`awesome-scalability`), not the whole path."""
    if key == BUNDLED_KEY:
        return "awesome-scalability"
    path = PurePosixPath(urlsplit(key).path if "://" in key else key)
    parts = [p for p in path.parts if p not in ("/", "")]
    while len(parts) > 1 and parts[-1].lower() in _README_NAMES | {"main", "master", "refs", "heads"}:
        parts.pop()
    return PurePosixPath(parts[-1]).stem if parts else key


def load_list(source: str | None, settings: Settings) -> LinkList:
    """Read and parse `source`; refuse, in one sentence, anything that is not a list with links."""
    if source is None:
        if not BUNDLED_LIST.is_file():
            raise SourceError(f"the bundled list is missing at {BUNDLED_LIST} — reinstall linklens or pass a list")
        text, label, key = BUNDLED_LIST.read_text(encoding="utf-8"), BUNDLED_NAME, BUNDLED_KEY
    elif source.lower().startswith(("http://", "https://")):
        text, label, key = _download(source, settings), source, source
    else:
        text, label, key = _read_file(Path(source)), source, str(Path(source).resolve())
    links = parse_list(text)
    if not links:
        raise SourceError(
            f"{label} holds no list links — expected markdown items like '* [Title](https://…)' under '## Section' "
            "headings (for a GitHub repository, pass the raw README URL)"
        )
    return LinkList(label, links, key, list_name(key))


def _read_file(path: Path) -> str:
    if not path.exists():
        raise SourceError(f"no such file: {path} — give the path of a markdown list or an http(s) URL")
    if path.is_dir():
        raise SourceError(f"{path} is a folder — give the path of a markdown list file (e.g. README.md)")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror} — check its permissions") from None
    return _decode(raw, str(path))


def _download(url: str, settings: Settings) -> str:
    timeout = httpx.Timeout(settings.request_timeout_s, connect=settings.connect_timeout_s)
    try:
        with httpx.Client(timeout=timeout, follow_redirects=True, headers={"User-Agent": settings.user_agent},
                          max_redirects=settings.max_redirects, trust_env=False) as client:
            response = client.get(url)
    except httpx.HTTPError as exc:
        raise SourceError(f"cannot download the list {url}: {exc or type(exc).__name__} — check the URL and network") \
            from None
    if response.status_code >= 400:
        raise SourceError(f"cannot download the list {url}: HTTP {response.status_code} — check the URL")
    if len(response.content) > MAX_LIST_BYTES:
        raise SourceError(f"{url} is larger than {MAX_LIST_BYTES // 2**20} MB — that is not a link list")
    content_type = response.headers.get("content-type", "")
    if "html" in content_type.lower():
        raise SourceError(
            f"{url} is an HTML page, not a markdown list — pass the raw markdown URL "
            "(on GitHub: the 'Raw' link of the README)"
        )
    return _decode(response.content, url)


def _decode(raw: bytes, label: str) -> str:
    if b"\x00" in raw[:8192]:
        raise SourceError(f"{label} is a binary file, not a markdown list")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")
