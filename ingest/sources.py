"""Where a list comes from: a file, an http(s) URL, a GitHub repository, or the bundled list.

Every way this can go wrong ends in a SourceError that names the source and what
to do, because this is the first thing a new user types. A downloaded list is
untrusted: it is fetched by the crawler's own fetcher (ingest/fetcher.py), with the same
total deadline over connect, redirects, headers and body, the same bounded decoding, the
same mapping of every error to a reason, and a cap of MAX_LIST_BYTES decoded bytes, so a
server that trickles, floods or sends a malformed redirect cannot hold or crash a crawl.
"""

from __future__ import annotations

import asyncio
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from ingest import address_policy
from ingest.errors import SourceError
from ingest.fetcher import Failure, Fetcher, FetchResult
from ingest.host_pools import HostClients
from ingest.listparse import parse_list
from ingest.models import FetchAttempt, ListedLink
from ingest.politeness import HostGate
from ingest.settings import Settings

BUNDLED_LIST = Path(__file__).resolve().parent.parent / "data" / "awesome-scalability.txt"
BUNDLED_NAME = "awesome-scalability (bundled)"
BUNDLED_KEY = "bundled:awesome-scalability"
MAX_LIST_BYTES = 20 * 2**20
_README_NAMES = {"readme", "readme.md", "readme.markdown", "index.md"}
_BRANCH_PARTS = {"main", "master", "refs", "heads", "head"}
GITHUB_HOSTS = ("github.com", "www.github.com")
# A repository's list, tried in this order on its default branch (`HEAD` on the raw host).
GITHUB_README_NAMES = ("README.md", "readme.md")


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


def list_name(key: str, qualified: bool = False) -> str:
    """A short label: the file or repository name (`awesome-scalability`), not the whole path.

    `qualified` adds what tells two lists of the same name apart: the owner of a GitHub
    repository (`owner/repo`), else the folder or host the list lives in (`team/awesome`).
    """
    if key == BUNDLED_KEY:
        return "awesome-scalability"
    repo = github_repo(key)
    if repo is not None:
        return f"{repo[0]}/{repo[1]}" if qualified else repo[1]
    try:
        split = urlsplit(key) if "://" in key else None
    except ValueError:  # a malformed URL (a list of lists is written by strangers): its text is its name
        return key
    path = PurePosixPath(split.path if split else key)
    parts = [p for p in path.parts if p not in ("/", "")]
    while len(parts) > 1 and parts[-1].lower() in _README_NAMES | _BRANCH_PARTS:
        parts.pop()
    if not parts:  # a bare host: never the key itself, which may hold credentials or a token
        return (split.hostname if split else None) or "list"
    name = PurePosixPath(parts[-1]).stem
    if qualified:
        parent = parts[-2] if len(parts) > 1 else (split.hostname if split and split.hostname else "")
        return f"{parent}/{name}" if parent else name
    return name


def github_repo(url: str) -> tuple[str, str] | None:
    """(owner, repo) of a `https://github.com/owner/repo` link (trailing slash, `.git` or `#readme` allowed)."""
    try:
        split = urlsplit(url)
    except ValueError:  # malformed (e.g. an unclosed IPv6 bracket): not a repository, and fetching it says why
        return None
    if split.scheme not in ("http", "https") or (split.hostname or "") not in GITHUB_HOSTS or split.query:
        return None
    parts = [p for p in split.path.split("/") if p]
    if len(parts) != 2:
        return None
    owner, repo = parts[0], parts[1].removesuffix(".git")
    return (owner, repo) if owner and repo else None


def github_readme_urls(owner: str, repo: str, settings: Settings) -> list[str]:
    """Where the raw README of a repository's default branch is, in the order to try."""
    base = settings.github_raw_url.rstrip("/")
    return [f"{base}/{owner}/{repo}/HEAD/{name}" for name in GITHUB_README_NAMES]


def source_key(source: str | None) -> str:
    """How the store names a list given as `source` (a path becomes absolute; a repository its bare URL)."""
    if source is None or source == BUNDLED_KEY:
        return BUNDLED_KEY
    if source.lower().startswith(("http://", "https://")):
        repo = github_repo(source)
        return f"https://github.com/{repo[0]}/{repo[1]}" if repo else source
    return str(Path(source).resolve())


def read_from_private(key: str, settings: Settings) -> bool:
    """Whether the list stored as `key` is read from a file or a private address (ingest/address_policy.py):
    a `github.com/owner/repo` list is read from the raw file host."""
    repo = github_repo(key)
    return address_policy.source_is_private(github_readme_urls(*repo, settings)[0] if repo else key)


def read_source(source: str | None, settings: Settings) -> tuple[str, str, str]:
    """The markdown of `source` with its label for messages and its store key."""
    key = source_key(source)
    if key == BUNDLED_KEY:
        if not BUNDLED_LIST.is_file():
            raise SourceError(f"the bundled list is missing at {BUNDLED_LIST} — reinstall linklens or pass a list")
        return BUNDLED_LIST.read_text(encoding="utf-8"), BUNDLED_NAME, key
    assert source is not None
    if github_repo(key) is not None:
        return _github_readme(source, key, settings), source, key
    if key.lower().startswith(("http://", "https://")):
        return _download(source, settings), source, key
    return _read_file(Path(source)), source, key


def load_list(source: str | None, settings: Settings) -> LinkList:
    """Read and parse `source`; refuse, in one sentence, anything that is not a list with links."""
    text, label, key = read_source(source, settings)
    links = parse_list(text)
    if not links:
        raise SourceError(
            f"{label} holds no list links — expected markdown items like '* [Title](https://…)' under '## Section' "
            "headings"
        )
    return LinkList(label, links, key, list_name(key))


def _github_readme(source: str, key: str, settings: Settings) -> str:
    repo = github_repo(key)
    assert repo is not None
    tried = []
    for url in github_readme_urls(*repo, settings):
        status, body = _fetch(url, settings)
        if status in (404, 410):
            tried.append(url)
            continue
        if status >= 400:
            raise SourceError(f"cannot download the README of {source} ({url}): HTTP {status} — try again later")
        return _decode(body, url)
    raise SourceError(
        f"{source} has no {' or '.join(GITHUB_README_NAMES)} on its default branch (tried {', '.join(tried)}) — "
        "pass the raw URL of the file that holds its list"
    )


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
    status, body = _fetch(url, settings)
    if status >= 400:
        raise SourceError(f"cannot download the list {url}: HTTP {status} — check the URL")
    return _decode(body, url)


def _fetch(url: str, settings: Settings) -> tuple[int, bytes]:
    """GET `url` with the crawler's fetcher: one deadline (LINKLENS_REQUEST_TIMEOUT_S over connect, every
    redirect hop, headers and body), retries where they help, and at most MAX_LIST_BYTES decoded.

    Returns the status and, below 400, the body; an HTML page, a body too large or too slow, a malformed
    URL, or no answer at all is a SourceError with the reason in words.
    """
    # A list the user named may be on an intranet; a list of lists narrows this for its children (collection.py).
    scope = (nullcontext() if address_policy.in_scope()
             else address_policy.private_targets(True, settings.private_targets))
    try:
        with scope:  # asyncio.run's task copies this context: the policy holds inside the fetch
            result = asyncio.run(_fetch_once(url, settings))
    except Exception as exc:  # the fetcher maps what it knows; anything else is still one sentence
        raise SourceError(f"cannot download the list {url}: unexpected {type(exc).__name__} ({exc}) — check the URL") \
            from None
    if result.body is not None:
        if "html" in result.body.content_type.lower():
            raise SourceError(
                f"{url} is an HTML page, not a markdown list — pass the raw markdown URL "
                "(on GitHub: the repository's URL, or the 'Raw' link of its README)"
            )
        if result.body.truncated:
            raise SourceError(f"{url} is larger than {MAX_LIST_BYTES // 2**20} MB — that is not a link list")
        return result.status or 200, result.body.body
    if result.failure in (Failure.GONE, Failure.HTTP) and result.status is not None:
        return result.status, b""
    if result.failure is Failure.ADDRESS:
        raise SourceError(f"cannot download the list {url}: {result.reason}")
    if result.failure is Failure.INVALID:
        raise SourceError(f"cannot download the list {url}: {result.reason} — correct the URL")
    if result.failure is Failure.EXHAUSTED and result.status is not None:
        raise SourceError(f"cannot download the list {url}: {result.reason} — try again later")
    raise SourceError(f"cannot download the list {url}: {result.reason} — check the URL and network")


async def _fetch_once(url: str, settings: Settings) -> FetchResult:
    """One list download on its own clients and politeness gate (lists are read before the crawl starts)."""
    attempts: list[FetchAttempt] = []
    gate = HostGate(settings.per_host_concurrency, settings.per_host_delay_s)
    async with HostClients(settings) as clients:
        return await Fetcher(settings, clients, gate).fetch(url, attempts, max_bytes=MAX_LIST_BYTES)


def _decode(raw: bytes, label: str) -> str:
    if b"\x00" in raw[:8192]:
        raise SourceError(f"{label} is a binary file, not a markdown list")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")
