"""Tests for the awesome-list parser and URL normalisation.

The inline list exercises every rule of the spec; the flattened copy checks that
losing all newlines (as happened to the list we received) changes nothing; the
real list pins the exact counts so a parser change that drops or invents links fails.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from ingest.listparse import clean_title, is_flattened, parse_list, restore_line_structure
from ingest.models import ListedLink, ListPlacement
from ingest.urls import host_of, normalise_url

REAL_LIST = Path(__file__).parents[1] / "data" / "awesome-scalability.txt"

SAMPLE = """\
# Awesome Widgets [![Awesome](https://awesome.re/badge.svg)](https://awesome.re)

> A curated list of widget resources. :sparkles:

Share it [on Twitter](https://twitter.com/intent/tweet?text=widgets) or read the
[contribution guidelines](CONTRIBUTING.md).

[![Build Status](https://travis-ci.org/x/y.svg?branch=master)](https://travis-ci.org/x/y)

#### Need help? :sos:

> Ask in the [chat](https://gitter.im/widgets/chat) first.

## Contents

- [Tools](#tools)
  - [Editors](#editors)
  - [Linters](#linters)
- [Reading](#reading)
- [License](#license)

## Tools

Things that make widgets.

### Editors

* [WidgetPad :rocket:](https://widgetpad.example.com/) - The editor everyone uses.
* [Widget Studio](https://Studio.Example.org:443/download?v=2&utm_source=awesome#top) - Heavy.
  * [Studio plugins](https://studio.example.org/plugins) - Nested sub-list.
* [Old mirror](ftp://ftp.example.org/pub/widgets/) - Still online.

### Linters

- [wlint](https://github.com/example/wlint) - Lints widgets; see also [its docs](https://wlint.example.com/docs).
- [Back to top](#contents)
- [Shared guide](https://guide.example.com/widgets)

## Reading

* [The Widget Book (2nd ed.) :books:](http://book.example.com/widgets) - Free online.
* [Shared guide](https://guide.example.com/widgets#chapter-2) - Listed again, other section.
* [Ask the author](mailto:author@example.com)
* [Style notes](docs/style.md) - Relative link, not a URL.
* [![Widget logo](https://widgets.example.com/logo.png)](https://widgets.example.com/)
* [Widgets [beta] notes](https://beta.example.com/notes?id=1&ref=list) - Brackets in title.
* [Widget (toolkit)](https://en.wikipedia.org/wiki/Widget_(toolkit)) - Parentheses in URL.
* [Widgets ## and * [more]](https://more.example.com/find?q=*widgets*) - Markers in title.

## Contributing

* [How to contribute](https://github.com/example/awesome-widgets/blob/main/CONTRIBUTING.md)

## License

[![CC0](https://licensebuttons.net/p/zero/1.0/88x31.png)](https://creativecommons.org/publicdomain/zero/1.0/)
"""


def _placement(section: str, subsection: str | None, title: str, position: int) -> ListPlacement:
    path = (section,) if subsection is None else (section, subsection)
    return ListPlacement(section=path, title=title, position=position)


EXPECTED = [
    ListedLink("https://widgetpad.example.com", [_placement("Tools", "Editors", "WidgetPad", 1)]),
    ListedLink("https://studio.example.org/download?v=2", [_placement("Tools", "Editors", "Widget Studio", 2)]),
    ListedLink("https://studio.example.org/plugins", [_placement("Tools", "Editors", "Studio plugins", 3)]),
    ListedLink("ftp://ftp.example.org/pub/widgets/", [_placement("Tools", "Editors", "Old mirror", 4)]),
    ListedLink("https://github.com/example/wlint", [_placement("Tools", "Linters", "wlint", 5)]),
    ListedLink("https://wlint.example.com/docs", [_placement("Tools", "Linters", "its docs", 6)]),
    ListedLink(
        "https://guide.example.com/widgets",
        [_placement("Tools", "Linters", "Shared guide", 7), _placement("Reading", None, "Shared guide", 9)],
    ),
    ListedLink("http://book.example.com/widgets", [_placement("Reading", None, "The Widget Book (2nd ed.)", 8)]),
    ListedLink("mailto:author@example.com", [_placement("Reading", None, "Ask the author", 10)]),
    ListedLink("https://beta.example.com/notes?id=1", [_placement("Reading", None, "Widgets [beta] notes", 11)]),
    ListedLink("https://en.wikipedia.org/wiki/Widget_(toolkit)", [_placement("Reading", None, "Widget (toolkit)", 12)]),
    ListedLink(
        "https://more.example.com/find?q=*widgets*",
        [_placement("Reading", None, "Widgets ## and * [more]", 13)],
    ),
]


def test_sample_list_parses_to_expected_links() -> None:
    assert parse_list(SAMPLE) == EXPECTED


def test_sample_list_derived_properties() -> None:
    links = parse_list(SAMPLE)
    shared = next(link for link in links if link.url == "https://guide.example.com/widgets")
    assert shared.position == 7 and shared.title == "Shared guide"
    assert [p.section for p in shared.placements] == [("Tools", "Linters"), ("Reading",)]
    assert [link.position for link in links] == sorted(link.position for link in links)


def test_sample_list_skips_intro_toc_badges_and_meta_sections() -> None:
    urls = {link.url for link in parse_list(SAMPLE)}
    for unwanted in (
        "https://awesome.re",  # badge in the title
        "https://twitter.com/intent/tweet?text=widgets",  # share link in the intro
        "https://travis-ci.org/x/y",  # badge paragraph
        "https://gitter.im/widgets/chat",  # blockquote under a #### callout
        "https://widgets.example.com",  # image-only link in a content list
        "https://github.com/example/awesome-widgets/blob/main/CONTRIBUTING.md",  # Contributing
        "https://creativecommons.org/publicdomain/zero/1.0",  # License badge
    ):
        assert unwanted not in urls


# Headings hold any text: " / " (which once joined a section to its subsection), brackets (Rich markup),
# HTML (dropped by markdown as on GitHub) and, in a code span, literal markup.
HOSTILE_HEADINGS = """\
# Hostile

## CI / CD

- [Pipelines](https://ci.example.com/pipelines)

### Runners / Agents

- [Runners](https://ci.example.com/runners)

## A

### B

- [Nested](https://nested.example.com/)

## Tools [/] [link=https://evil.example/] <b>bold</b> `<script>x</script>`

- [Bracketed](https://tools.example.com/)
"""
HOSTILE_TOOLS = "Tools [/] [link=https://evil.example/] bold <script>x</script>"


def test_a_section_is_the_path_of_its_headings_whatever_they_hold() -> None:
    sections = {link.url: [p.section for p in link.placements] for link in parse_list(HOSTILE_HEADINGS)}
    assert sections == {
        "https://ci.example.com/pipelines": [("CI / CD",)],
        "https://ci.example.com/runners": [("CI / CD", "Runners / Agents")],
        "https://nested.example.com": [("A", "B")],
        "https://tools.example.com": [(HOSTILE_TOOLS,)],
    }


def test_flattened_sample_parses_identically() -> None:
    flat = " ".join(SAMPLE.split())
    assert "\n" not in flat
    assert is_flattened(flat)
    assert not is_flattened(SAMPLE)
    assert parse_list(flat) == EXPECTED


def test_restoring_does_not_break_inside_links() -> None:
    flat = "## A * [x ## y * [z]](https://e.com/a_*_b) - see [w](https://e.com/#-[q]) * [v](https://e.com/v)"
    assert restore_line_structure(flat).splitlines() == [
        "## A",
        "* [x ## y * [z]](https://e.com/a_*_b) - see [w](https://e.com/#-[q])",
        "* [v](https://e.com/v)",
    ]


def test_restoring_does_not_break_inside_code_spans() -> None:
    flat = "## A * [a](https://a.com) run `x * [y](z) ## w` * [b](https://b.com)"
    assert restore_line_structure(flat).splitlines() == [
        "## A",
        "* [a](https://a.com) run `x * [y](z) ## w`",
        "* [b](https://b.com)",
    ]


def test_non_flattened_document_is_left_alone() -> None:
    text = "## A\n\n* [a](https://a.com) - 2 * 3 items, see - [b](https://b.com)\n"
    assert not is_flattened(text)
    links = parse_list(text)
    assert [(link.url, link.title) for link in links] == [("https://a.com", "a"), ("https://b.com", "b")]


def test_parse_never_raises_on_odd_content() -> None:
    for text in (
        "",
        "   ",
        "# Only a title",
        "## Section\n\nno list",
        "* [orphan](https://x.com)",
        "[[[](((",
        "## A\n* [",
    ):
        assert isinstance(parse_list(text), list)
    assert parse_list("* [orphan](https://x.com)") == []  # not under a content section


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "https://www.youtube.com/watch?v=abc&feature=youtu.be",
            "https://www.youtube.com/watch?v=abc&feature=youtu.be",
        ),
        ("HTTP://Example.COM:80/A/b/?q=1#frag", "http://example.com/A/b/?q=1"),
        ("https://example.com:8443/", "https://example.com:8443"),
        ("https://x.com/a?utm_source=tw&print", "https://x.com/a?print"),
        ("https://medium.com/@user/post-1", "https://medium.com/@user/post-1"),
        ("https://a.org/en//people/x.pdf", "https://a.org/en//people/x.pdf"),
        ("https://x.com/#!/route", "https://x.com/#!/route"),
        ("  http://x.com/a b ", "http://x.com/a%20b"),
        (" ftp://ftp.example.org/pub ", "ftp://ftp.example.org/pub"),
        ("mailto:me@example.org", "mailto:me@example.org"),
        ("#principles", None),
        ("CONTRIBUTING.md", None),
        ("//cdn.example.com/x.js", None),
        ("http://", None),
        ("http://x.com:port/", None),
        ("", None),
    ],
)
def test_normalise_url(raw: str, expected: str | None) -> None:
    assert normalise_url(raw) == expected


def test_host_of() -> None:
    assert host_of("https://www.InfoQ.com:8080/x") == "infoq.com"
    assert host_of("https://medium.com/@x") == "medium.com"
    assert host_of("mailto:me@example.org") == ""
    assert host_of("not a url") == ""


def test_clean_title_removes_only_shortcodes() -> None:
    assert clean_title("  Fast :rocket:  thing ") == "Fast thing"
    assert clean_title(":mountain_cableway::aerial_tramway: Power") == "Power"
    assert clean_title("std::vector::push_back at 10:30:00") == "std::vector::push_back at 10:30:00"


# --- the real list -------------------------------------------------------------------

CONTENT_SECTIONS = [
    "Principles",
    "Scalability",
    "Availability",
    "Stability",
    "Performance",
    "Intelligence",
    "Architectures",
    "Interview",
    "Talks",
    "Books",
]
# Placements per section, counted independently with str.count("](http") between
# consecutive "## " headings of the raw file; every one of them is a " * [" item.
PLACEMENTS_PER_SECTION = {
    "Principles": 62,
    "Scalability": 328,
    "Availability": 26,
    "Stability": 16,
    "Performance": 30,
    "Intelligence": 51,
    "Architectures": 22,
    "Interview": 21,
    "Talks": 34,
    "Books": 10,
}
# The only URLs the list gives twice (byte-identical both times).
DUPLICATES = {
    "https://medium.com/weebly-engineering/"
    "how-to-organize-your-monolith-before-breaking-it-into-services-69cbdb9248b0": ["Scalability", "Scalability"],
    "https://medium.com/@Pinterest_Engineering/scalable-and-reliable-data-ingestion-at-pinterest-b921c2ee8754": [
        "Scalability",
        "Intelligence",
    ],
    "https://engineering.coinbase.com/"
    "how-coinbase-builds-secure-infrastructure-to-store-bitcoin-in-the-cloud-30a6504e40ba": [
        "Scalability",
        "Scalability",
    ],
    "https://medium.com/build-addepar/migrating-mountains-of-mongo-data-63e530539952": ["Scalability", "Scalability"],
}


@pytest.fixture(scope="module")
def real_links() -> list[ListedLink]:
    text = REAL_LIST.read_text(encoding="utf-8")
    assert "\n" not in text.strip()  # the list as received: flattened onto one line
    return parse_list(text)


def python_calls(function: Callable[[], object]) -> int:
    """How many Python and C functions `function()` calls: a measure of work that no clock or load changes."""
    calls = 0

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(count)
    try:
        function()
    finally:
        sys.setprofile(None)
    return calls


def test_parsing_work_grows_linearly_with_the_list() -> None:
    """The real list, and four copies of it in one text: four times the work, not sixteen (the
    speed itself is measured in bench/listparse.py, not here)."""
    text = REAL_LIST.read_text(encoding="utf-8")
    parse_list(text)  # the parser is built once per process: not part of the work measured
    once = python_calls(lambda: parse_list(text))
    four_times = python_calls(lambda: parse_list(" ".join([text] * 4)))
    assert four_times <= 4.4 * once, (once, four_times)


def test_real_list_first_link(real_links: list[ListedLink]) -> None:
    first = real_links[0]
    assert first.url == "https://www.cs.cornell.edu/projects/ladis2009/talks/dean-keynote-ladis2009.pdf"
    assert first.placements == [
        _placement(
            "Principles",
            None,
            "Designs, Lessons and Advice from Building Large Distributed Systems - Jeff Dean, Google",
            1,
        )
    ]


def test_real_list_how_sharding_works_is_a_principle(real_links: list[ListedLink]) -> None:
    link = next(link for link in real_links if link.title == "How Sharding Works")
    assert link.url == "https://medium.com/@jeeyoungk/how-sharding-works-b4dec46b3f6"
    assert [p.section for p in link.placements] == [("Principles",)]


def test_real_list_sections(real_links: list[ListedLink]) -> None:
    placements = [p for link in real_links for p in link.placements]
    sections = list(dict.fromkeys(p.section[0] for p in sorted(placements, key=lambda p: p.position)))
    assert sections == CONTENT_SECTIONS
    assert all(len(p.section) == 1 for p in placements)  # the list has no ### headings


def test_real_list_skips_meta_sections(real_links: list[ListedLink]) -> None:
    urls = {link.url for link in real_links}
    assert "https://www.slideshare.net/jboner/scalability-availability-stability-patterns" not in urls  # Special Thanks
    assert "https://creativecommons.org/licenses/by/4.0" not in urls  # License badge
    assert "https://ctt.ec/V8B2p" not in urls and "http://t.cn/RnjFLCB" not in urls  # intro share links
    assert not any(url.startswith("#") for url in urls)  # Contents


def test_real_list_counts(real_links: list[ListedLink]) -> None:
    placements = [p for link in real_links for p in link.placements]
    assert len(real_links) == 596
    assert len(placements) == 600
    assert sorted(p.position for p in placements) == list(range(1, 601))
    assert Counter(p.section[0] for p in placements) == PLACEMENTS_PER_SECTION
    assert {
        link.url: [p.section[0] for p in link.placements] for link in real_links if len(link.placements) > 1
    } == DUPLICATES
    assert all(link.url.startswith(("http://", "https://")) for link in real_links)
    assert all(link.title for link in real_links)


def test_titles_and_headings_come_out_in_nfc() -> None:
    """A list typed in decomposed form (macOS editors) gives the titles a composed query matches."""
    import unicodedata

    markdown = unicodedata.normalize("NFD", "# Liste\n\n## Größen\n\n### Prüfungen\n\n- [Geprüfte Caches](https://a.test/x)\n")
    [link] = parse_list(markdown)
    placement = link.placements[0]
    assert (placement.section, placement.title) == (("Größen", "Prüfungen"), "Geprüfte Caches")
