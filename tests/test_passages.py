"""Chunking: passage sizes, overlap, boundaries, context and title cards."""

from __future__ import annotations

import re

import pytest

from index.passages import (
    BODY_KIND,
    CARD_KIND,
    PARAGRAPH_CLOSE_SHARE,
    TAIL_MERGE_SHARE,
    article_passages,
    chunk_text,
    passage_id,
    word_count,
)
from ingest.models import Article, Document, Filing, LinkState


def numbered_text(paragraphs: int, sentences: int, words_per_sentence: int = 8) -> str:
    """Paragraphs of distinct sentences 'P3 S4 w w w ... end.' so every sentence can be traced."""
    filler = " ".join(["word"] * (words_per_sentence - 3))
    return "\n\n".join(" ".join(f"P{p}S{s} {filler} end." for s in range(sentences)) for p in range(paragraphs))


def sentences_of(passage: str) -> list[str]:
    return re.findall(r"P\d+S\d+", passage)


def make_article(text: str | None, sections: list[tuple[str, ...]] | None = None, **doc: object) -> Article:
    document = None if text is None else Document(title=doc.pop("title", None), text=text, kind="html", **doc)  # type: ignore[arg-type]
    return Article(
        link_id=7,
        url="https://example.com/a",
        host="example.com",
        list_title="Sharding Pinterest",
        filings=[Filing("a list", path) for path in sections or [("Scalability", "Sharding")]],
        state=LinkState.OK if text is not None else LinkState.DEAD,
        final_url=None,
        archived_url=None,
        document=document,
    )


def test_passages_stay_near_the_target_size() -> None:
    text = numbered_text(paragraphs=12, sentences=9)  # ~860 words
    passages = chunk_text(text, words=180, overlap=30)
    sizes = [word_count(p) for p in passages]
    assert len(passages) >= 5, sizes
    assert all(PARAGRAPH_CLOSE_SHARE * 180 <= n <= 180 for n in sizes[:-1]), sizes
    assert sizes[-1] <= 180 * (1 + TAIL_MERGE_SHARE), sizes


def test_consecutive_passages_share_whole_sentences_up_to_the_overlap() -> None:
    passages = chunk_text(numbered_text(paragraphs=3, sentences=30), words=100, overlap=20)
    for before, after in zip(passages, passages[1:], strict=False):
        first, second = sentences_of(before), sentences_of(after)
        shared = [s for s in second if s in first]
        assert shared, (before[-80:], after[:80])
        assert shared == first[-len(shared) :] == second[: len(shared)]
        assert 0 < len(shared) * 8 <= 20


def test_every_sentence_is_in_some_passage_in_order() -> None:
    text = numbered_text(paragraphs=7, sentences=11)
    seen: list[str] = []
    for passage in chunk_text(text, words=90, overlap=15):
        seen.extend(s for s in sentences_of(passage) if s not in seen)
    assert seen == sentences_of(text)


def test_cuts_fall_on_paragraph_ends_when_the_passage_is_full_enough() -> None:
    # 60-word paragraphs: 180 words fit three paragraphs exactly; no cut inside a paragraph.
    text = numbered_text(paragraphs=9, sentences=6, words_per_sentence=10)
    passages = chunk_text(text, words=180, overlap=0)
    for passage in passages:
        ids = sentences_of(passage)
        assert ids[0].endswith("S0") and ids[-1].endswith("S5"), ids
        assert passage.count("\n\n") == 2
    assert len(passages) == 3


def test_cuts_never_split_a_sentence_and_keep_line_breaks() -> None:
    text = "Intro line one.\n* item alpha\n* item beta\n\n" + numbered_text(paragraphs=4, sentences=12)
    passages = chunk_text(text, words=60, overlap=10)
    assert passages[0].startswith("Intro line one.\n* item alpha\n* item beta")
    for p in passages:
        assert p.rstrip().endswith((".", "alpha", "beta")), p[-40:]


def test_an_overlong_sentence_is_cut_at_word_boundaries() -> None:
    text = " ".join(f"w{i}" for i in range(500))
    passages = chunk_text(text, words=180, overlap=30)
    assert all(word_count(p) <= 180 * (1 + TAIL_MERGE_SHARE) for p in passages)
    assert " ".join(passages).split()[:3] == ["w0", "w1", "w2"]
    assert "w499" in passages[-1]


def chinese_text(paragraphs: int, sentences: int) -> str:
    """Paragraphs of numbered Chinese sentences (no spaces anywhere), one with a closing quote after its mark."""
    sentence = "分布式系统第{p}段第{s}句讲的是热点分片怎样拆开"
    return "\n\n".join("".join(sentence.format(p=p, s=s) + ("。」" if s == 1 else "。") for s in range(sentences))
                       for p in range(paragraphs))


def test_text_without_spaces_is_cut_by_characters_at_its_own_sentence_ends() -> None:
    text = chinese_text(paragraphs=6, sentences=8)  # ~1,000 characters, not one word
    passages = chunk_text(text, words=180, overlap=30)
    assert len(passages) >= 5, [len(p) for p in passages]
    assert all(len(p) <= 180 * (1 + TAIL_MERGE_SHARE) for p in passages)  # a character is a word
    assert all(p.endswith(("。", "。」")) for p in passages), [p[-5:] for p in passages]
    joined = "".join(passages)
    for p in range(6):
        for s in range(8):
            assert f"第{p}段第{s}句" in joined


def test_an_overlong_run_without_spaces_is_cut_between_characters_keeping_its_spacing() -> None:
    text = "缓存失效风暴" * 100 + " Redis " + "一致性哈希环" * 100
    passages = chunk_text(text, words=180, overlap=30)
    assert all(len(p) <= 180 * (1 + TAIL_MERGE_SHARE) + len(" Redis ") for p in passages)
    assert "".join(passages).replace(" ", "") == text.replace(" ", "")
    assert any(" Redis " in p for p in passages)


def test_a_short_trailing_piece_is_merged_into_the_previous_passage() -> None:
    text = numbered_text(paragraphs=1, sentences=24)  # 192 words: 180 + a 12-word tail
    passages = chunk_text(text, words=180, overlap=30)
    assert len(passages) == 1
    assert sentences_of(passages[0]) == sentences_of(text)


def test_chunking_is_deterministic_and_empty_text_has_no_passages() -> None:
    text = numbered_text(paragraphs=5, sentences=10)
    assert chunk_text(text) == chunk_text(text)
    assert chunk_text("   \n\n  ") == []
    with pytest.raises(ValueError):
        chunk_text(text, words=0)


def test_body_passages_carry_title_and_section_as_context() -> None:
    passages = article_passages(make_article(numbered_text(4, 12), title="Pinterest Engineering"), 100, 20)
    body = [p for p in passages if p.kind == BODY_KIND]
    assert body and [p.ordinal for p in body] == list(range(1, len(body) + 1))
    assert all(p.context == "Sharding Pinterest — Scalability / Sharding" for p in passages)
    assert body[0].indexed_text.startswith("Sharding Pinterest — Scalability / Sharding: P0S0")
    assert body[0].id == passage_id(body[0].context, body[0].text)
    assert len({p.id for p in passages}) == len(passages)


def test_the_passage_id_changes_with_context_or_text() -> None:
    assert passage_id("A — S", "text") != passage_id("B — S", "text")
    assert passage_id("A — S", "text") != passage_id("A — S", "text!")
    assert len(passage_id("a", "b")) == 64


def test_a_dead_link_is_indexed_by_its_title_card_alone() -> None:
    passages = article_passages(make_article(None, sections=[("Scalability", "Sharding"), ("Case studies",)]))
    assert len(passages) == 1
    card = passages[0]
    assert (card.kind, card.ordinal) == (CARD_KIND, 0)
    assert "Sharding Pinterest" in card.indexed_text
    assert "Sections: Scalability / Sharding; Case studies." in card.text


def test_the_title_card_adds_what_the_page_says_about_itself() -> None:
    article = make_article(
        "Body text.",
        title="How we sharded MySQL",
        description="Lessons from 8 years",
        author="Marty",
        sitename="Medium",
    )
    card = article_passages(article)[0]
    assert card.kind == CARD_KIND
    for expected in ("How we sharded MySQL.", "Lessons from 8 years.", "By Marty, Medium."):
        assert expected in card.text
    # The page title is not repeated when it only restates the list title.
    same = make_article("Body text.", title="sharding pinterest")
    assert article_passages(same)[0].text == "Sharding Pinterest."


def test_a_link_without_a_list_title_uses_the_page_title() -> None:
    article = make_article("Body.", title="The page title")
    article.list_title = ""
    assert article_passages(article)[0].context.startswith("The page title — ")


def headed_text() -> str:
    """Markdown with a title heading, two levels of section headings and ~24-word paragraphs."""

    def paragraph(tag: str) -> str:
        return " ".join(f"{tag}S{s} word word word word end." for s in range(4))

    return "\n\n".join(
        [
            "# Sharding Pinterest",
            paragraph("Intro"),
            "## Replication",
            paragraph("Rep"),
            "### Failover",
            paragraph("FailA"),
            paragraph("FailB"),
            "## Backups ##",
            paragraph("Back"),
        ]
    )


def test_with_headings_a_passage_names_the_headings_it_starts_under() -> None:
    article = make_article(headed_text())
    plain_context = article_passages(article)[0].context
    body = article_passages(article, words=30, overlap=0, headings=True)[1:]
    by_first = {sentences_of_tag(p.text)[0]: p.context for p in body}
    assert by_first["IntroS0"] == plain_context  # the title heading repeats the list title: left out
    assert by_first["RepS0"] == f"{plain_context} › Replication"
    assert by_first["FailAS0"] == by_first["FailBS0"] == f"{plain_context} › Replication › Failover"
    assert by_first["BackS0"] == f"{plain_context} › Backups"  # a level-2 heading closes the level-3 one
    assert all(p.id != q.id for p, q in zip(body, article_passages(article, 30, 0)[1:], strict=False))


def test_with_headings_no_passage_ends_on_a_heading_line() -> None:
    article = make_article(headed_text())
    for words in (30, 40, 60):
        for p in article_passages(article, words=words, overlap=0, headings=True)[1:]:
            assert not p.text.splitlines()[-1].startswith("#"), (words, p.text)


def test_without_headings_passages_are_unchanged_by_the_heading_support() -> None:
    article = make_article(headed_text())
    body = article_passages(article, words=30, overlap=0)[1:]
    assert {p.context for p in body} == {article_passages(article)[0].context}
    assert [p.text for p in body] == chunk_text(headed_text(), words=30, overlap=0)
    assert any(p.text.splitlines()[-1].startswith("#") for p in body)  # the cut the heading mode avoids


def sentences_of_tag(passage: str) -> list[str]:
    return re.findall(r"[A-Za-z]+S\d+", passage)
