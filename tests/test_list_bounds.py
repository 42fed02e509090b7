"""Bounded lists: caps on links per list and per collection, lists written one at a time, and lists
beyond LINKLENS_MAX_LISTS left out without losing their links."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from ingest.collection import CollectionSpec, sync_collection
from ingest.listparse import parse_list
from ingest.settings import load_settings
from ingest.store import Store
from tests.fixtureweb import FixtureWeb
from tests.fixtureweb.server import Response, _const


def markdown(title: str, urls: list[str]) -> str:
    return f"# {title}\n\n## Reading\n\n" + "".join(f"* [Page {i}]({u})\n" for i, u in enumerate(urls))


def write_list(folder: Path, name: str, urls: list[str]) -> str:
    path = folder / f"{name}.md"
    path.write_text(markdown(name, urls))
    return str(path)


def cited(store: Store) -> dict[str, list[str]]:
    """Each link's state and the lists citing it."""
    out: dict[str, list[str]] = {}
    for row in store.link_rows():
        lists = row["lists"]
        assert isinstance(lists, list)
        out[str(row["url"])] = [str(row["state"]), *lists]
    return out


def test_a_list_over_the_per_list_cap_is_skipped_with_the_reason_and_keeps_its_links(tmp_path: Path) -> None:
    urls = [f"http://x.test/{i}" for i in range(8)]
    alpha = write_list(tmp_path, "alpha", urls[:3])
    beta = write_list(tmp_path, "beta", urls[3:5])
    spec = CollectionSpec.of([alpha, beta], [])
    settings = load_settings()
    with Store.open(settings.store_path) as store:
        first = sync_collection(spec, settings.model_copy(update={"max_list_links": 4}), store)
        assert [x.name for x in first.lists] == ["alpha", "beta"] and first.skipped == []

        write_list(tmp_path, "alpha", urls[:3] + urls[5:8])  # alpha grows past the cap
        second = sync_collection(spec, settings.model_copy(update={"max_list_links": 4}), store)
        assert [x.name for x in second.lists] == ["beta"]
        [skipped] = second.skipped
        assert skipped.reason == (f"{alpha} holds 6 links, more than the limit of 4 per list "
                                  "(LINKLENS_MAX_LIST_LINKS) — raise it to crawl this list")
        assert second.dropped == [] and second.removed == 0
        held = cited(store)
        assert {u: held[u] for u in urls[:3]} == {u: ["pending", "alpha"] for u in urls[:3]}  # kept as they were
        assert not set(urls[5:]) & set(held)  # and nothing of the refused list was written

        third = sync_collection(spec, settings.model_copy(update={"max_list_links": 6}), store)
        assert [x.name for x in third.lists] == ["alpha", "beta"] and third.skipped == []
        assert len(cited(store)) == 8


def test_a_list_that_would_pass_the_collection_cap_is_skipped_and_keeps_its_links(tmp_path: Path) -> None:
    urls = [f"http://x.test/{i}" for i in range(8)]
    alpha = write_list(tmp_path, "alpha", urls[:3])
    beta = write_list(tmp_path, "beta", urls[2:4])  # shares one link with alpha
    gamma = write_list(tmp_path, "gamma", urls[4:6])
    spec = CollectionSpec.of([alpha, beta, gamma], [])
    settings = load_settings()
    with Store.open(settings.store_path) as store:
        sync_collection(spec, settings, store)
        assert len(cited(store)) == 6

        capped = settings.model_copy(update={"max_collection_links": 4})
        synced = sync_collection(spec, capped, store)
        # alpha (3) + beta (1 new: its other link alpha holds) = 4 fits exactly; gamma would make 6
        assert [x.name for x in synced.lists] == ["alpha", "beta"]
        [skipped] = synced.skipped
        assert skipped.reason == (f"{gamma} would bring the collection to 6 links, more than the limit of 4 "
                                  "(LINKLENS_MAX_COLLECTION_LINKS) — raise it to crawl this list")
        assert synced.removed == 0
        held = cited(store)
        assert held[urls[4]] == ["pending", "gamma"] and held[urls[5]] == ["pending", "gamma"]


def test_lists_beyond_max_lists_keep_their_links(web: FixtureWeb, tmp_path: Path) -> None:
    urls = [f"http://x.test/{i}" for i in range(6)]
    children = []
    for n, name in enumerate(["awesome-one", "awesome-two", "awesome-three"]):
        url = f"{web.archive_url}/lists/{name}.md"
        web._route(url, _const(Response(200, markdown(name, urls[2 * n:2 * n + 2]).encode(), "text/markdown")))
        children.append(url)
    parent = tmp_path / "awesome-awesome.md"
    parent.write_text(markdown("Awesome awesome", children))
    spec = CollectionSpec.of([], [str(parent)])
    settings = load_settings()
    with Store.open(settings.store_path) as store:
        first = sync_collection(spec, settings, store)
        assert [x.name for x in first.lists] == ["awesome-one", "awesome-two", "awesome-three"]

        second = sync_collection(spec, settings.model_copy(update={"max_lists": 2}), store)
        assert [x.name for x in second.lists] == ["awesome-one", "awesome-two"]
        assert [s.reason for s in second.skipped] == ["1 more lists beyond the limit of 2 (LINKLENS_MAX_LISTS)"]
        assert second.dropped == [] and second.removed == 0
        held = cited(store)
        assert held[urls[4]] == ["pending", "awesome-three"] and held[urls[5]] == ["pending", "awesome-three"]
        assert [r["name"] for r in store.lists(include_dropped=False)] == ["awesome-one", "awesome-two",
                                                                           "awesome-three"]


URLS = [f"https://site{i % 50}.test/articles/{i}/a-long-enough-path-to-look-real" for i in range(1000)]


def peak_python_bytes(lists: int, folder: Path) -> int:
    """Peak Python memory of syncing `lists` lists of the same 1,000 links (written to files first)."""
    text = markdown("big", URLS)
    sources = []
    for n in range(lists):
        path = folder / f"big-{lists}-{n}.md"
        path.write_text(text)
        sources.append(str(path))
    settings = load_settings()
    with Store.open(folder / f"store-{lists}.sqlite3") as store:
        tracemalloc.start()
        try:
            synced = sync_collection(CollectionSpec.of(sources, []), settings, store)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(synced.lists) == lists and synced.lists[-1].links == len(URLS)
    return peak


def parsed_list_bytes() -> int:
    """What one of those lists takes in memory once parsed."""
    tracemalloc.start()
    try:
        links = parse_list(markdown("big", URLS))
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(links) == len(URLS)
    return held


def test_lists_are_written_one_at_a_time_so_memory_does_not_grow_with_their_number(tmp_path: Path) -> None:
    few = peak_python_bytes(2, tmp_path)
    many = peak_python_bytes(6, tmp_path)
    one_list = parsed_list_bytes()
    # Holding every parsed list until the end (as before) grows the peak by about one list per list
    # (4 * one_list here); written one at a time, it does not grow.
    assert many - few < one_list / 2, (few, many, one_list)
