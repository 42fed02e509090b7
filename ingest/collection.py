"""A collection: the lists one `crawl` or `build` names, read together into one set of links.

Lists come as arguments (files, URLs, GitHub repositories) and from lists of lists
(`--lists-from`: an awesome-of-awesome whose items link to other lists). Why a
collection and not one list at a time: a link cited by several lists is one article
that remembers each of them, and the collection is the truth — a list the command no
longer names is dropped from the store (`Store.sync_collection`).

A list named as an argument that cannot be read stops the command before anything
changes (it is a typo or an outage the user should see). A list reached through a
list of lists that cannot be read (404, an HTML page, no links) is skipped with its
reason and the others go on; if the store already held it, its links stay as they
were instead of being dropped.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from ingest import address_policy
from ingest.errors import SourceError
from ingest.listparse import parse_list
from ingest.settings import Settings
from ingest.sources import BUNDLED_KEY, LinkList, list_name, load_list, read_from_private, read_source, source_key
from ingest.store import CollectionWriter, ListSync, Store

logger = logging.getLogger(__name__)

# Child lists downloaded at once: each is one request to (usually) one raw-file host.
CHILD_DOWNLOADS = 8


@dataclass(frozen=True)
class CollectionSpec:
    """What a command named, as store keys (absolute paths, URLs), so a bare `crawl` can read it again."""

    sources: list[str] = field(default_factory=list)
    lists_from: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CollectionSpec:
        data = json.loads(text)
        return cls(list(data.get("sources", [])), list(data.get("lists_from", [])))

    @classmethod
    def of(cls, sources: Sequence[str], lists_from: Sequence[str]) -> CollectionSpec:
        return cls([source_key(s) for s in sources], [source_key(s) for s in lists_from])

    @property
    def empty(self) -> bool:
        return not self.sources and not self.lists_from


BUNDLED = CollectionSpec([BUNDLED_KEY])


@dataclass(frozen=True)
class SkippedList:
    """A list of a list of lists that could not be read this time, and why."""

    source: str
    reason: str
    key: str  # its store key: if the store holds it already, its links are kept, not dropped


@dataclass
class SyncedList:
    """One list of the collection as it was written to the store."""

    name: str
    source: str
    links: int
    sync: ListSync


@dataclass
class SyncedCollection:
    """What reading a collection into the store did: the lists written (in order, with unique names),
    the ones skipped with their reasons, and the lists dropped (with how many links became `removed`)."""

    spec: CollectionSpec
    lists: list[SyncedList]
    skipped: list[SkippedList]
    dropped: list[str]
    removed: int


def sync_collection(spec: CollectionSpec, settings: Settings, store: Store) -> SyncedCollection:
    """Read every list of `spec` and make the store hold exactly them: arguments first, then each list of
    lists' lists, in their order.

    One list at a time: each is parsed, checked against the caps and written before the next is
    read (at most CHILD_DOWNLOADS are downloading meanwhile), so memory does not grow with the
    number of lists. All of it is one transaction: SourceError when an argument or a list of lists
    cannot be read, and then nothing has changed. A list over a cap (LINKLENS_MAX_LIST_LINKS, or
    one that would take the collection past LINKLENS_MAX_COLLECTION_LINKS) is skipped with the
    reason, like one that cannot be read: the links it held stay as they were. So do the lists
    beyond LINKLENS_MAX_LISTS. A list reached twice is read once; lists of the same short name get
    qualified names.
    """
    skipped: list[SkippedList] = []
    written: list[tuple[LinkList, ListSync, int]] = []
    seen: set[str] = set()
    with store.syncing_collection(spec.to_json()) as writer:

        def take(link_list: LinkList) -> None:
            refusal = _over_a_cap(link_list, writer, settings)
            if refusal is not None:
                logger.info("skipping %s: %s", link_list.source, refusal)
                skipped.append(SkippedList(link_list.source, refusal, link_list.key))
                writer.keep(link_list.key)
                return
            synced = writer.add(link_list.key, link_list.name, link_list.links)
            written.append((link_list, synced, len(link_list.links)))
            link_list.links = []  # written: the parsed list is not held any longer

        for key in spec.sources:
            if key not in seen:
                seen.add(key)
                take(load_list(None if key == BUNDLED_KEY else key, settings))
        for parent in spec.lists_from:
            children, beyond = _child_sources(parent, settings)
            if beyond:
                skipped.append(SkippedList(parent, f"{len(beyond)} more lists beyond the limit of "
                                                   f"{settings.max_lists} (LINKLENS_MAX_LISTS)", source_key(parent)))
                for child in beyond:  # left out this time, not dropped: their links stay as they were
                    writer.keep(source_key(child))
            wanted: list[str] = []
            for child in children:
                if source_key(child) not in seen:
                    seen.add(source_key(child))
                    wanted.append(child)
            # A public list of lists cannot lead to private addresses (ingest/address_policy.py); a file one can.
            private = read_from_private(source_key(parent), settings)
            for child, outcome in _read_in_turn(wanted, private, settings):
                if isinstance(outcome, LinkList):
                    take(outcome)
                else:
                    logger.info("skipping %s: %s", child, outcome)
                    skipped.append(SkippedList(child, outcome, source_key(child)))
                    writer.keep(source_key(child))
        names = distinct_names([link_list.key for link_list, _, _ in written])
        for (link_list, synced, _), name in zip(written, names, strict=True):
            if name != link_list.name:
                link_list.name = name
                writer.rename(synced.list_id, name)
    result = writer.result()
    lists = [SyncedList(x.name, x.source, count, synced) for x, synced, count in written]
    return SyncedCollection(spec, lists, skipped, result.dropped, result.removed)


def _over_a_cap(link_list: LinkList, writer: CollectionWriter, settings: Settings) -> str | None:
    """Why `link_list` cannot join the collection (too many links), or None."""
    count = len(link_list.links)
    if count > settings.max_list_links:
        return (f"{link_list.source} holds {count:,} links, more than the limit of {settings.max_list_links:,} "
                "per list (LINKLENS_MAX_LIST_LINKS) — raise it to crawl this list")
    total = writer.links_held + writer.new_links(link_list.links)
    if total > settings.max_collection_links:
        return (f"{link_list.source} would bring the collection to {total:,} links, more than the limit of "
                f"{settings.max_collection_links:,} (LINKLENS_MAX_COLLECTION_LINKS) — raise it to crawl this list")
    return None


def _read_in_turn(sources: Sequence[str], parent_private: bool,
                  settings: Settings) -> Iterator[tuple[str, LinkList | str]]:
    """Each source with its list (or why it could not be read), in order; CHILD_DOWNLOADS read ahead at most,
    so lists are held only between their download and their turn. `parent_private`: whether the list of
    lists they came from was read from a file or a private address (the address policy's origin)."""
    with ThreadPoolExecutor(CHILD_DOWNLOADS, thread_name_prefix="linklens-lists") as pool:
        ahead: deque[tuple[str, Future[LinkList | str]]] = deque()
        for source in sources:
            ahead.append((source, pool.submit(_try_load, source, parent_private, settings)))
            if len(ahead) >= CHILD_DOWNLOADS:
                done, future = ahead.popleft()
                yield done, future.result()
        while ahead:
            done, future = ahead.popleft()
            yield done, future.result()


def distinct_names(keys: Sequence[str]) -> list[str]:
    """Short names, qualified where two lists share one (`owner/repo`, `folder/name`), numbered if still equal."""
    short = [list_name(k) for k in keys]
    counts = Counter(n.casefold() for n in short)
    names = [list_name(k, qualified=True) if counts[n.casefold()] > 1 else n for k, n in zip(keys, short, strict=True)]
    seen: Counter[str] = Counter()
    out = []
    for name in names:
        seen[name.casefold()] += 1
        out.append(name if seen[name.casefold()] == 1 else f"{name} ({seen[name.casefold()]})")
    return out


def _child_sources(parent: str, settings: Settings) -> tuple[list[str], list[str]]:
    """The http(s) links of a list of lists: the first LINKLENS_MAX_LISTS, and those left out."""
    text, label, _ = read_source(parent, settings)
    urls = [link.url for link in parse_list(text) if link.url.lower().startswith(("http://", "https://"))]
    if not urls:
        raise SourceError(f"{label} links to no lists — expected markdown items like "
                          "'* [Awesome X](https://github.com/owner/awesome-x)' under '## Section' headings")
    return urls[: settings.max_lists], urls[settings.max_lists:]


def _try_load(source: str, parent_private: bool, settings: Settings) -> LinkList | str:
    """The list, or why it could not be read (one child's failure never stops the others)."""
    try:
        with address_policy.private_targets(parent_private, settings.private_targets):
            return load_list(source, settings)
    except SourceError as exc:
        return str(exc)
