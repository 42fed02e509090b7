"""A search's order does not depend on k (issue 17): k only cuts one ranking.

Before, the candidate depth grew with k, and the fused order (z-scores standardise
over the candidates) moved with it: the first 10 of a k=50 search differed from a
k=10 search. These tests compare every shorter search with the head of the
deepest one, for all the judged fixture questions, every mode and every filter.
"""

from __future__ import annotations

import pytest

from index.limits import MAX_K, MIN_K
from index.search import MODES, Searcher
from tests.fixtures.relevance import HOSTS, judged_queries
from tests.index_fixtures import MAIN_LIST, PICKS_LIST, BuiltIndex

pytest_plugins = ["tests.index_fixtures"]  # the session index: built, searcher

SHORTER_KS = (MIN_K, 3, 10, 25, MAX_K - 1)
QUESTIONS = [q.query for q in judged_queries()]
# One filter of each kind, plus one of each combined; all are real values of the fixture index.
FILTERS = [
    {},
    {"host": HOSTS[1]},
    {"section": "Performance"},
    {"list_name": PICKS_LIST},
    {"list_name": MAIN_LIST, "section": "Performance", "host": "example.com"},
]


def shown(results: list) -> list[tuple[str, float, str]]:
    """What a reader sees of each result: URL, score and the snippet of its answering passage."""
    return [(r.url, r.score, r.snippet) for r in results]


def test_the_fixture_index_holds_more_passages_than_a_shallow_search_reads(built: BuiltIndex) -> None:
    """Otherwise every depth would read every passage and the tests below could not fail."""
    assert built.report.passages > built.settings.candidates, built.report


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: "+".join(sorted(f)) or "no-filter")
def test_a_shorter_search_is_the_head_of_the_deepest(searcher: Searcher, mode: str, filters: dict) -> None:
    differing = []
    for question in QUESTIONS:
        deepest = shown(searcher.search(question, k=MAX_K, mode=mode, **filters).results)
        for k in SHORTER_KS:
            got = shown(searcher.search(question, k=k, mode=mode, **filters).results)
            if got != deepest[:k]:
                differing.append((question, k))
    assert not differing, f"{len(differing)} searches ranked differently from the k={MAX_K} head: {differing[:5]}"


def test_filters_in_these_tests_leave_results_to_compare(searcher: Searcher) -> None:
    """Each filter keeps more than one article, so an order exists to compare."""
    for filters in FILTERS:
        found = searcher.search("how to scale a system", k=MAX_K, **filters).results
        assert len(found) > 1, filters


def test_similar_is_the_head_of_the_deepest(searcher: Searcher) -> None:
    ids = [r.article_id for r in searcher.search("caching databases and queues", k=MAX_K).results[:8]]
    for article_id in ids:
        deepest = shown(searcher.similar(article_id, k=MAX_K).results)
        for k in SHORTER_KS:
            assert shown(searcher.similar(article_id, k=k).results) == deepest[:k], (article_id, k)

