"""Cut articles into passages: the unit that is embedded, BM25-scored and shown as a snippet.

Why passages and not whole documents: a 5,000-word post about "scaling Pinterest"
answers a question about sharding in one paragraph; a single vector for the whole
post would dilute it, and the embedding model only reads ~256 word pieces anyway.

Guarantees:
* cuts fall on paragraph boundaries where possible, else on sentence boundaries,
  and only inside an over-long sentence on a word boundary;
* consecutive passages of one document share up to `overlap` words of whole
  sentences, so an idea cut in two is still whole in one passage;
* every passage carries its article's title and list section as `context`, which
  is what the embedder and BM25 see in front of the text; with `headings`, the
  context also names the path of markdown headings the passage starts under
  ("Title — Section › Replication › Failover"), so a passage deep in a long
  article still says what it is about, and a cut never leaves a heading as the
  last line of a passage;
* every article gets a *title card* passage (list title, sections, document title,
  description, author, site), so a link whose page is dead or empty is still found
  by what the list says about it;
* a passage's `id` is the sha256 of context and text: the embedding cache key.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import regex

from ingest.models import Article
from ingest.textform import UNSPACED_CHARACTER, UNSPACED_RUN

DEFAULT_PASSAGE_WORDS = 180
DEFAULT_OVERLAP_WORDS = 30
# A trailing piece shorter than this share of the target is folded into the previous
# passage (which may then reach 1 + TAIL_MERGE_SHARE of the target) instead of
# becoming a passage of its own that would rank on a few stray sentences.
TAIL_MERGE_SHARE = 0.35
# Close a passage at a paragraph end once it holds this share of the target, rather
# than cutting the next paragraph in the middle.
PARAGRAPH_CLOSE_SHARE = 0.6
CONTEXT_SEPARATOR = " — "
HEADING_SEPARATOR = " › "
# How a section path reads inside passage text (unchanged since sections were strings, so cached
# embeddings stay valid); display and filters use the path itself.
SECTION_TEXT_SEPARATOR = " / "
CARD_KIND = "card"
BODY_KIND = "body"

_PARAGRAPH_SPLIT = re.compile(r"\n\s*\n")
# A sentence ends at . ! ? (optionally followed by a closing quote/bracket) before
# whitespace and a capital, digit, quote, bracket or markdown marker. A single line
# break inside a paragraph (list items, headings) also ends one, and is kept.
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[A-Z0-9\"'(\[*#`-])")
# Chinese and Japanese end sentences with full-width marks and no space after them; a cut falls after
# the mark and any closing quotes or brackets that follow it.
_UNSPACED_SENTENCE_END = regex.compile(r"(?<=[。！？][」』）〕”’]*)(?![」』）〕”’])\s*(?=\S)")
# The pieces an over-long sentence may be cut between: each character of an unspaced script, or a run
# of anything else that is not a space.
_CUT_PIECE = regex.compile(rf"{UNSPACED_CHARACTER}|(?:(?!{UNSPACED_CHARACTER})\S)+")
_LINE_SPLIT = re.compile(r"\s*\n\s*")
# An ATX markdown heading line ("## Failover", optionally closed by #s), as markdown
# sources hold them. linklens' HTML extraction writes plain text (no heading marks),
# so crawled HTML pages get no heading path.
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)(?:\s+#+)?\s*$")


@dataclass(frozen=True)
class Passage:
    """One searchable piece of an article. `ordinal` 0 is the title card."""

    link_id: int
    ordinal: int
    kind: str
    context: str
    text: str

    @property
    def id(self) -> str:
        return passage_id(self.context, self.text)

    @property
    def indexed_text(self) -> str:
        """What the embedder and BM25 read: 'Title — Section: text'."""
        return f"{self.context}: {self.text}" if self.context else self.text


def passage_id(context: str, text: str) -> str:
    return hashlib.sha256(f"{context}\n{text}".encode()).hexdigest()


def word_count(text: str) -> int:
    """A passage's size, in words, as the model's budget sees them.

    Scripts written without spaces (Chinese, Japanese, Thai …) count one word per character: the
    model reads such text a character a token, so a Chinese paragraph is not one "word" that lets a
    passage grow to a whole page. Text without them is counted by its spaces, exactly as before.
    """
    if text.isascii():
        return len(text.split())
    unspaced = sum(len(run) for run in UNSPACED_RUN.findall(text))
    if not unspaced:
        return len(text.split())
    return len(UNSPACED_RUN.sub(" ", text).split()) + unspaced


def article_title(article: Article) -> str:
    """The title shown and used as context: the list's wording, else the page's."""
    doc_title = article.document.title if article.document else None
    return (article.list_title or "").strip() or (doc_title or "").strip() or article.url


def section_text(path: Sequence[str]) -> str:
    """A section path as passage text reads it: 'Section / Subsection' (model input, never parsed back)."""
    return SECTION_TEXT_SEPARATOR.join(path)


def article_context(article: Article) -> str:
    """'Title — Section / Subsection' for the article's first list placement."""
    title = article_title(article)
    section = section_text(article.sections[0]) if article.sections else ""
    return f"{title}{CONTEXT_SEPARATOR}{section}" if section else title


def article_passages(
    article: Article,
    words: int = DEFAULT_PASSAGE_WORDS,
    overlap: int = DEFAULT_OVERLAP_WORDS,
    headings: bool = False,
) -> list[Passage]:
    """The title card followed by the body passages of the article's document, if it has text.

    With `headings`, a body passage's context ends with the heading path it starts
    under (headings repeating the article title are left out).
    """
    context = article_context(article)
    out = [Passage(article.link_id, 0, CARD_KIND, context, title_card_text(article))]
    text = article.document.text if article.document else ""
    title = article_title(article).casefold()
    for ordinal, chunk in enumerate(chunk_sections(text, words, overlap, headings), start=1):
        path = [h for h in chunk.headings if h.casefold() != title] if headings else []
        full = HEADING_SEPARATOR.join([context, *path])
        out.append(Passage(article.link_id, ordinal, BODY_KIND, full, chunk.text))
    return out


def title_card_text(article: Article) -> str:
    """Everything known about a link besides its body text, as one short passage.

    The context already holds the list title and first section, so the card adds
    what the context lacks: every section, the page's own title, description,
    author and site. It is never empty, so every link is indexed.
    """
    doc = article.document
    parts: list[str] = []
    if len(article.sections) > 1:
        parts.append("Sections: " + "; ".join(section_text(path) for path in article.sections) + ".")
    if doc is not None:
        title = (doc.title or "").strip()
        if title and title.casefold() != article_title(article).casefold():
            parts.append(_sentence(title))
        if doc.description:
            parts.append(_sentence(doc.description.strip()))
        byline = ", ".join(x.strip() for x in (doc.author, doc.sitename) if x and x.strip())
        if byline:
            parts.append(f"By {byline}.")
    if not parts:
        parts.append(_sentence(article_title(article)))
    return " ".join(parts)


def _sentence(text: str) -> str:
    return text if text.endswith((".", "!", "?")) else text + "."


@dataclass(frozen=True)
class Chunk:
    """A passage's text and the markdown headings (outermost first) in force where it starts."""

    text: str
    headings: tuple[str, ...]


def chunk_text(text: str, words: int = DEFAULT_PASSAGE_WORDS, overlap: int = DEFAULT_OVERLAP_WORDS) -> list[str]:
    """Cut `text` into passages of about `words` words sharing about `overlap` words of sentences."""
    return [chunk.text for chunk in chunk_sections(text, words, overlap)]


def chunk_sections(
    text: str, words: int = DEFAULT_PASSAGE_WORDS, overlap: int = DEFAULT_OVERLAP_WORDS, headings: bool = False
) -> list[Chunk]:
    """Cut `text` into passages of about `words` words sharing about `overlap` words of sentences.

    Greedy over sentences: a passage takes whole sentences up to `words`, ending at
    the last paragraph end that keeps it at least PARAGRAPH_CLOSE_SHARE full (with
    `headings`, never right after a heading line); the next passage starts with the
    previous one's last sentences that fit in `overlap`. Paragraphs stay separated
    by a blank line inside a passage. Deterministic, so an unchanged text gives
    unchanged passage ids on a rebuild.
    """
    if words < 1:
        raise ValueError(f"passage words must be positive, got {words}")
    overlap = max(0, min(overlap, words // 2))
    units: list[_Unit] = []
    line = 0
    path: list[tuple[int, str]] = []  # (level, heading) from the outermost in
    for paragraph in _PARAGRAPH_SPLIT.split(text.strip()):
        line += 2
        for text_line in _LINE_SPLIT.split(paragraph.strip()):
            line += 1
            heading = _HEADING.match(text_line)
            if heading:
                level = len(heading.group(1))
                path = [(lv, h) for lv, h in path if lv < level] + [(level, heading.group(2).strip())]
            under = tuple(h for _, h in path)
            units.extend(
                _Unit(s, line, under, headings and heading is not None)
                for s in _limit_sentences(_sentences(text_line), words)
            )
    if not units:
        return []
    sizes = [word_count(u.text) for u in units]
    spans: list[tuple[int, int]] = []
    start = 0
    while True:
        end = _passage_end(units, sizes, start, words)
        spans.append((start, end))
        if end == len(units):
            break
        start = _overlap_start(sizes, start, end, overlap)
    if len(spans) > 1:
        (prev_start, prev_end), (_, last_end) = spans[-2], spans[-1]
        if sum(sizes[prev_end:last_end]) < TAIL_MERGE_SHARE * words:
            spans[-2:] = [(prev_start, last_end)]
    return [Chunk(_join(units[a:b]), units[a].headings) for a, b in spans]


@dataclass(frozen=True)
class _Unit:
    """A sentence (or a heading line) with its line number; a paragraph break adds 2 to the count."""

    text: str
    line: int
    headings: tuple[str, ...]
    is_heading: bool


def _passage_end(units: list[_Unit], sizes: list[int], start: int, words: int) -> int:
    """Exclusive end of the passage starting at `start`: as full as allowed, at a paragraph end if one fits."""
    end = start + 1
    total = sizes[start]
    while end < len(units) and total + sizes[end] <= words:
        total += sizes[end]
        end += 1
    if end == len(units):
        return end
    cut, total = end, sum(sizes[start:end])
    while cut - 1 > start:
        paragraph_end = units[cut].line - units[cut - 1].line > 1
        if paragraph_end and not units[cut - 1].is_heading and total >= PARAGRAPH_CLOSE_SHARE * words:
            return cut
        cut -= 1
        total -= sizes[cut]
    return end


def _overlap_start(sizes: list[int], start: int, end: int, overlap: int) -> int:
    """First sentence of the next passage: the last whole sentences before `end` within `overlap` words."""
    first = end
    total = 0
    while first - 1 > start and total + sizes[first - 1] <= overlap:
        first -= 1
        total += sizes[first]
    return first


def _join(units: list[_Unit]) -> str:
    """Sentences of one line joined by a space, lines by a line break, paragraphs by a blank line."""
    out: list[str] = []
    for i, unit in enumerate(units):
        if i:
            gap = unit.line - units[i - 1].line
            out.append(" " if gap == 0 else "\n" if gap == 1 else "\n\n")
        out.append(unit.text)
    return "".join(out)


def _sentences(line: str) -> list[str]:
    pieces = _SENTENCE_SPLIT.split(line)
    if not line.isascii():
        pieces = [part for piece in pieces for part in _UNSPACED_SENTENCE_END.split(piece)]
    return [s.strip() for s in pieces if s and s.strip()]


def _limit_sentences(sentences: Iterable[str], words: int) -> Iterable[str]:
    """Split a sentence longer than a passage (code, tables, run-on text) at word boundaries.

    In unspaced scripts every character is a boundary; the pieces keep the sentence's own spacing.
    """
    for sentence in sentences:
        if word_count(sentence) <= words:
            yield sentence
        elif sentence.isascii() or UNSPACED_RUN.search(sentence) is None:
            tokens = sentence.split()
            for start in range(0, len(tokens), words):
                yield " ".join(tokens[start : start + words])
        else:
            spans = [m.span() for m in _CUT_PIECE.finditer(sentence)]
            for start in range(0, len(spans), words):
                last = spans[min(start + words, len(spans)) - 1]
                yield sentence[spans[start][0] : last[1]]
