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
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial

from ingest import address_policy
from ingest.errors import SourceError
from ingest.listparse import parse_list
from ingest.settings import Settings
from ingest.sources import BUNDLED_KEY, LinkList, list_name, load_list, read_from_private, read_source, source_key

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
class LoadedCollection:
    """The lists read, in order, with unique names; the ones skipped; and the spec to remember."""

    spec: CollectionSpec
    lists: list[LinkList]
    skipped: list[SkippedList]


def load_collection(spec: CollectionSpec, settings: Settings) -> LoadedCollection:
    """Read every list of `spec`: arguments first, then each list of lists' lists, in their order.

    SourceError when an argument or a list of lists cannot be read (nothing has changed then).
    A list reached twice is read once; lists of the same short name get qualified names.
    """
    lists = [load_list(None if key == BUNDLED_KEY else key, settings) for key in spec.sources]
    skipped: list[SkippedList] = []
    for parent in spec.lists_from:
        children, left_out = _child_sources(parent, settings)
        if left_out:
            skipped.append(SkippedList(parent, f"{left_out} more lists beyond the limit of {settings.max_lists} "
                                               "(LINKLENS_MAX_LISTS)", source_key(parent)))
        known = {link_list.key for link_list in lists}
        wanted = [c for c in children if source_key(c) not in known]
        # A public list of lists cannot lead to private addresses (ingest/address_policy.py); a file one can.
        private = [read_from_private(source_key(parent), settings)] * len(wanted)
        with ThreadPoolExecutor(CHILD_DOWNLOADS, thread_name_prefix="linklens-lists") as pool:
            for child, outcome in zip(wanted, pool.map(partial(_try_load, settings=settings), wanted, private),
                                      strict=True):
                if isinstance(outcome, LinkList):
                    if outcome.key not in known:
                        known.add(outcome.key)
                        lists.append(outcome)
                else:
                    logger.info("skipping %s: %s", child, outcome)
                    skipped.append(SkippedList(child, outcome, source_key(child)))
    unique: dict[str, LinkList] = {}
    for link_list in lists:
        unique.setdefault(link_list.key, link_list)
    ordered = list(unique.values())
    for link_list, name in zip(ordered, distinct_names([x.key for x in ordered]), strict=True):
        link_list.name = name
    return LoadedCollection(spec, ordered, skipped)


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


def _child_sources(parent: str, settings: Settings) -> tuple[list[str], int]:
    """The http(s) links of a list of lists (at most LINKLENS_MAX_LISTS) and how many were left out."""
    text, label, _ = read_source(parent, settings)
    urls = [link.url for link in parse_list(text) if link.url.lower().startswith(("http://", "https://"))]
    if not urls:
        raise SourceError(f"{label} links to no lists — expected markdown items like "
                          "'* [Awesome X](https://github.com/owner/awesome-x)' under '## Section' headings")
    return urls[: settings.max_lists], max(0, len(urls) - settings.max_lists)


def _try_load(source: str, parent_private: bool, settings: Settings) -> LinkList | str:
    """The list, or why it could not be read (one child's failure never stops the others)."""
    try:
        with address_policy.private_targets(parent_private, settings.private_targets):
            return load_list(source, settings)
    except SourceError as exc:
        return str(exc)
