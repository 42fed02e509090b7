"""The nouns of the ingest stage, shared by every later stage.

A *listed link* is what the markdown list says; a *link* is that URL once stored
and crawled; a *document* is the text extracted from what the crawl fetched; an
*article* is the join the index needs: list context plus document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class LinkState(StrEnum):
    """Where a link ended. Every crawled link ends in exactly one of these."""

    PENDING = "pending"
    OK = "ok"
    REDIRECTED = "redirected"
    ARCHIVED = "archived"
    DEAD = "dead"
    BLOCKED = "blocked"
    UNSUPPORTED = "unsupported"
    FAILED = "failed"
    REMOVED = "removed"  # no list that the store still holds cites it any more; left out of the index

    @classmethod
    def final_states(cls) -> list[LinkState]:
        return [s for s in cls if s is not cls.PENDING]


# The headings above a link in its list, top first: ("Scalability", "Sharding"). A path, never a
# string joined with a separator: a heading may hold any text, " / " included ("CI / CD").
SectionPath = tuple[str, ...]
# How a path is shown to people (never parsed back: filters take the headings themselves).
SECTION_DISPLAY_SEPARATOR = " › "


def section_label(path: SectionPath) -> str:
    """'Scalability › Sharding': a path for display only."""
    return SECTION_DISPLAY_SEPARATOR.join(path)


@dataclass(frozen=True)
class ListPlacement:
    """One place a link occupies in the list: the same URL may appear in several sections."""

    section: SectionPath
    title: str
    position: int


@dataclass(frozen=True)
class Filing:
    """Where one list files a link: the list's name and the section path it files it under."""

    list_name: str
    section: SectionPath


@dataclass
class ListedLink:
    """A de-duplicated link from the list, with every placement it has there."""

    url: str
    placements: list[ListPlacement] = field(default_factory=list)

    @property
    def title(self) -> str:
        return self.placements[0].title

    @property
    def position(self) -> int:
        return self.placements[0].position


@dataclass
class FetchAttempt:
    """One HTTP request made for a link (every retry, redirect hop excluded)."""

    url: str
    attempt: int
    started_at: float
    elapsed_ms: float
    status: int | None
    error: str | None
    from_archive: bool = False


@dataclass
class FetchedBody:
    """What the crawler kept of a response, raw, so re-extraction never re-fetches."""

    url: str
    content_type: str
    body: bytes
    truncated: bool
    encoding: str | None = None
    etag: str | None = None
    last_modified: str | None = None


@dataclass
class Document:
    """Text extracted from a fetched body. `thin` marks documents with little real text."""

    title: str | None
    text: str
    kind: str  # html | pdf | video | thin
    author: str | None = None
    date: str | None = None
    sitename: str | None = None
    language: str | None = None
    description: str | None = None
    thin: bool = False
    # Why this text must not be stored as the link's text (e.g. "undecodable: 12% replacement characters"):
    # the crawl then ends the link `failed` with this reason. Never stored itself.
    failure: str | None = None


@dataclass
class CrawlOutcome:
    """Everything one link's crawl produced, stored in a single transaction."""

    state: LinkState
    reason: str
    attempts: list[FetchAttempt] = field(default_factory=list)
    final_url: str | None = None
    http_status: int | None = None
    body: FetchedBody | None = None
    document: Document | None = None
    archived_url: str | None = None
    archived_timestamp: str | None = None
    not_modified: bool = False
    compressed_body: bytes | None = None  # zlib of body.body, made by the extraction worker
    from_archive: bool = False  # the body is a web archive copy: its validators never go to the live site


@dataclass
class Article:
    """What the index needs of one link: its list context and, if any, its text.

    `filings` are every place the link holds, in every list (which list, which section path); `lists`
    the names of the lists of the collection citing it (a link cited by several lists is one article).
    """

    link_id: int
    url: str
    host: str
    list_title: str
    filings: list[Filing]
    state: LinkState
    final_url: str | None
    archived_url: str | None
    document: Document | None
    lists: list[str] = field(default_factory=list)

    @property
    def sections(self) -> list[SectionPath]:
        """The section paths the link is filed under, in any list, each once, in list order."""
        return list(dict.fromkeys(f.section for f in self.filings))
