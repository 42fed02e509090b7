"""Section, host and list filters: which passage rows a filter allows, memoised within a byte budget.

A filter is evaluated over the snapshot's article columns (host ids, section
path ids, list ids; see `meta.ArticleColumns`), then spread to passage rows.
A section filter is a path of headings, top first, compared heading by heading
(case aside): ("CI / CD",) is the one heading "CI / CD", ("Scalability",
"Sharding") its subsection; a path keeps every section below it. With a list
filter too, it keeps what that list files there. The result
(a row mask and the sorted row ids) costs ~5 bytes per passage for a narrow
filter and more for a broad one, so the memo is bounded by the bytes it holds,
not by a count: MEMO_BYTES per loaded snapshot, least recently used dropped first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from urllib.parse import urlsplit

import numpy as np

from index.meta import ArticleColumns
from index.vectors import RowFilter
from ingest.errors import BadQueryError, UnknownListError
from ingest.models import SectionPath

# Per loaded snapshot. At a million passages one filter costs 1-5 MB, so a few dozen fit.
MEMO_BYTES = 64 * 2**20
# One text value may name a whole path, its headings joined by this character (the page's section menu
# does): listparse collapses whitespace in headings, and U+001F is whitespace, so no heading holds it.
HEADING_JOINER = "\x1f"

FilterKey = tuple[SectionPath | None, str | None, str | None]


class FilterMemo:
    """RowFilters by (section key, host key, list key), least recently used evicted beyond `max_bytes`. Thread-safe."""

    def __init__(self, max_bytes: int = MEMO_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[FilterKey, RowFilter] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: FilterKey) -> RowFilter | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: FilterKey, value: RowFilter) -> None:
        if value.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= old.nbytes
            self._items[key] = value
            self.bytes += value.nbytes
            while self.bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self.bytes -= dropped.nbytes


class Filters:
    """Turns `section`/`host`/`list_name` arguments into RowFilters over one snapshot's columns."""

    def __init__(self, columns: ArticleColumns, memo_bytes: int = MEMO_BYTES) -> None:
        self.columns = columns
        self.memo = FilterMemo(memo_bytes)
        self._section_keys = {_fold(path) for path, _ in columns.sections}
        self._list_keys = {name.casefold(): i for i, name in enumerate(columns.list_names)}

    def rows(self, section: SectionPath | None, host: str | None, list_name: str | None = None) -> RowFilter | None:
        """The passages the filters allow; None when there is no filter. BadQueryError on an unknown section or list.

        `section` is a path of headings (see `section_filter`); a list is named exactly (case aside):
        lists are few and their names are chosen to differ.
        """
        path = section_filter(section)
        host = (host or "").strip() or None
        list_name = (list_name or "").strip() or None
        if path is None and host is None and list_name is None:
            return None
        key = (None if path is None else _fold(path), None if host is None else bare_host(host),
               None if list_name is None else list_name.casefold())
        if key[0] is not None and key[0] not in self._section_keys:
            raise BadQueryError(_unknown_section(path or (), self.columns.sections))
        if key[2] is not None and key[2] not in self._list_keys:
            if not self._list_keys:
                raise UnknownListError(f"this index records no lists (built before lists were) — rebuild it to "
                                       f"filter by list {list_name!r}: linklens index")
            names = ", ".join(repr(name) for name in self.columns.list_names)
            raise UnknownListError(f"unknown list {list_name!r} — valid lists: {names}")
        if key[0] is not None and key[2] is not None and not self.columns.filed_by_list:
            raise BadQueryError("this index does not record which list files an article under which section (built "
                                "by an older linklens) — rebuild it to filter by list and section together: "
                                "linklens index --rebuild")
        found = self.memo.get(key)
        if found is None:
            allowed = self._allowed_articles(*key)
            mask = allowed[self.columns.row_article]
            found = RowFilter(mask, np.flatnonzero(mask).astype(np.int32))
            self.memo.put(key, found)
        return found

    def _allowed_articles(self, section_key: SectionPath | None, host: str | None, list_key: str | None) -> np.ndarray:
        mask = np.ones(len(self.columns), dtype=bool)
        list_id = None if list_key is None else self._list_keys[list_key]
        if section_key is not None:
            depth = len(section_key)
            labels = [i for i, path in enumerate(self.columns.labels) if _fold(path[:depth]) == section_key]
            mask &= self.columns.with_labels(np.asarray(labels, dtype=np.int32), list_id)
        if host is not None:
            hosts = [i for i, name in enumerate(self.columns.hosts) if name == host or name.endswith("." + host)]
            mask &= self.columns.with_hosts(np.asarray(hosts, dtype=np.int32))
        if list_id is not None:
            mask &= self.columns.with_lists(np.asarray([list_id], dtype=np.int32))
        return mask


def section_filter(headings: str | Sequence[str] | None) -> SectionPath | None:
    """The section path a filter names: its headings, top first; None for no section filter.

    A str is one heading ("CI / CD" is the heading "CI / CD", never two). A value holding
    HEADING_JOINER is a whole path in one string. Blank headings are left out.
    """
    if headings is None:
        return None
    values = [headings] if isinstance(headings, str) else list(headings)
    path = tuple(h.strip() for value in values for h in str(value).split(HEADING_JOINER) if h.strip())
    return path or None


def _fold(path: SectionPath) -> SectionPath:
    return tuple(heading.casefold() for heading in path)


def _unknown_section(path: SectionPath, sections: Sequence[tuple[SectionPath, int]]) -> str:
    """The message for a section filter no path matches: the valid paths, and how a subsection is named."""
    valid = ", ".join(" › ".join(repr(h) for h in known) for known, _ in sections) or "none"
    asked = " › ".join(repr(h) for h in path)
    return (f"unknown section {asked} — name a section by its headings, top first (a subsection by its "
            f"section's heading, then its own); valid sections: {valid}")


def bare_host(host: str) -> str:
    """'WWW.Example.com' and 'https://www.example.com/x' both filter by 'example.com'."""
    if "://" in host:  # not ingest.urls.host_of: importing courlan would cost every search process ~0.1 s
        host = urlsplit(host.strip()).hostname or ""
    host = host.strip().lower().rstrip(".")
    return host[4:] if host.startswith("www.") else host
