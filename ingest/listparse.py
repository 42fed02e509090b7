"""Turn an awesome-list markdown document into de-duplicated `ListedLink`s.

Parsing is done by markdown-it-py on its token stream, not by regexes over the
text: link titles contain brackets, dashes and emoji, URLs contain ``*``,
``#`` and ``_``, and only a real parser knows which ``[...](...)`` is a link,
which one is an image, and which list item a link belongs to.

The list we actually received had every newline replaced by a space (the whole
document is one line), which markdown cannot parse as a list at all.  Such a
document is detected and its line structure restored (newlines before heading
markers and list bullets, never inside link text, link destinations or code)
before it is handed to the same parser.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterator, Sequence, Set
from dataclasses import dataclass

from markdown_it import MarkdownIt
from markdown_it.token import Token

from ingest.models import ListedLink, ListPlacement
from ingest.textform import nfc
from ingest.urls import normalise_url

__all__ = ["parse_list", "is_flattened", "restore_line_structure", "clean_title"]

# Sections that describe the list rather than belong to it (compared after clean_title + casefold).
SKIPPED_SECTIONS = frozenset(
    {
        "license",
        "licence",
        "contributing",
        "contribute",
        "contributors",
        "contribution",
        "contributions",
        "special thanks",
        "thanks",
        "acknowledgements",
        "acknowledgments",
        "footnotes",
    }
)
TOC_SECTIONS = frozenset({"contents", "table of contents", "toc"})

# Emoji shortcodes such as ":traffic_light:" or runs of them (":a::b:"), but not
# "std::vector::x" or "10:30:00": the run may not touch a word character or another colon.
_SHORTCODES_RE = re.compile(r"(?<![\w:])(?::[a-z0-9_+\-]+:)+(?![\w:])", re.IGNORECASE)
_SPACES_RE = re.compile(r"\s+")

# --- restoring a flattened document -------------------------------------------------
# Spans inside which a break must never be inserted: inline links/images (text with
# one level of nested brackets, destination with one level of nested parentheses,
# optional title) and code spans (found by _code_spans, a regex would backtrack badly
# on long backtick runs).  Unbalanced brackets simply do not match, so a stray "["
# cannot protect the rest of the document.
_LINK_TEXT = r"\[(?:[^\[\]\\]|\\.|\[(?:[^\[\]\\]|\\.)*\])*\]"
_LINK_DEST = r"\((?:[^()\s\\]|\\.|\((?:[^()\s\\]|\\.)*\))*(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^()]*\)))?\s*\)"
_PROTECTED_RE = re.compile(rf"!?{_LINK_TEXT}{_LINK_DEST}|<https?://[^>\s]*>", re.DOTALL)
_BACKTICKS_RE = re.compile(r"`+")
# A run of blanks followed by something that can only start a block: a heading
# (## to ######; a lone "#" is too common in prose), a "*"/"-"/"+" bullet whose item
# starts with a link, a "*" bullet starting with any word ("2 * 3" is left alone:
# a digit may not follow) or a numbered item starting with a link.
_BREAK_RE = re.compile(r"[ \t]+(?=#{2,6}[ \t]|[*+\-][ \t]+\[|\*[ \t]+[^\s\d*]|\d{1,9}[.)][ \t]+\[)")


def is_flattened(markdown: str) -> bool:
    """True when the document's newlines were lost (lines hold many headings/bullets each).

    A real list has about one bullet per line; a flattened one has hundreds of
    bullet and heading markers in the middle of a handful of lines.
    """
    lines = sum(1 for line in markdown.splitlines() if line.strip())
    if lines == 0:
        return False
    breaks = sum(len(_break_points(line)) for line in markdown.splitlines())
    return breaks >= 3 and breaks > 2 * lines


def restore_line_structure(markdown: str) -> str:
    """Put newlines back before headings and list bullets of a flattened document.

    Nesting cannot be recovered (indentation is gone), so nested items become
    siblings; that loses nothing the index needs, since every link stays in an item.
    """
    out: list[str] = []
    for line in markdown.splitlines() or [markdown]:
        last = 0
        pieces: list[str] = []
        for start, end in _break_points(line):
            pieces.append(line[last:start])
            last = end
        pieces.append(line[last:])
        out.append("\n".join(pieces))
    return "\n".join(out)


def _break_points(line: str) -> list[tuple[int, int]]:
    """(start, end) of the blank runs in ``line`` to replace by a newline."""
    if "#" not in line and "[" not in line and "*" not in line:
        return []
    protected = sorted([(m.start(), m.end()) for m in _PROTECTED_RE.finditer(line)] + _code_spans(line))
    points: list[tuple[int, int]] = []
    index = 0
    for match in _BREAK_RE.finditer(line):
        while index < len(protected) and protected[index][1] <= match.start():
            index += 1
        if index < len(protected) and protected[index][0] < match.end() <= protected[index][1]:
            continue  # inside link text/destination/code: "# " or " * [" there is content
        if match.start() == 0:
            continue  # already at a line start
        points.append((match.start(), match.end()))
    return points


def _code_spans(line: str) -> list[tuple[int, int]]:
    """(start, end) of inline code spans: a backtick run up to the next run of the same length."""
    if "`" not in line:
        return []
    runs = [(m.start(), m.end()) for m in _BACKTICKS_RE.finditer(line)]
    by_length: dict[int, list[int]] = {}
    for number, (start, end) in enumerate(runs):
        by_length.setdefault(end - start, []).append(number)
    spans: list[tuple[int, int]] = []
    number = 0
    while number < len(runs):
        start, end = runs[number]
        same = by_length[end - start]
        k = bisect_right(same, number)
        if k < len(same):  # closed by the next run of equal length
            spans.append((start, runs[same[k]][1]))
            number = same[k] + 1
        else:  # no closer: the backticks are literal
            number += 1
    return spans


# --- parsing -----------------------------------------------------------------------


def clean_title(text: str) -> str:
    """Link or heading text without emoji shortcodes, with collapsed whitespace, in NFC (`ingest.textform`)."""
    return nfc(_SPACES_RE.sub(" ", _SHORTCODES_RE.sub(" ", text)).strip())


@dataclass
class _Link:
    href: str
    title: str
    image_only: bool


def _parser() -> MarkdownIt:
    """CommonMark plus the GFM bits lists use (tables, strikethrough for dead links)."""
    return MarkdownIt("commonmark").enable(["table", "strikethrough"])


def parse_list(markdown: str) -> list[ListedLink]:
    """Links in list items of the list's content sections, de-duplicated by normalised URL.

    Returned in list order (position of each link's first placement).  Never raises
    for odd content: what cannot be understood is skipped, an empty list is possible.
    """
    flattened = is_flattened(markdown)
    if flattened:
        markdown = restore_line_structure(markdown)
    tokens = _parser().parse(markdown)
    known_names: Set[str] = _anchor_titles(tokens) | SKIPPED_SECTIONS | TOC_SECTIONS if flattened else frozenset()

    links: dict[str, ListedLink] = {}
    position = 0
    headings: list[str] = []  # the section path so far: a level-2 heading, then its level-3 one
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.type == "heading_open":
            level = int(token.tag[1])
            text = _heading_text(tokens[i + 1], known_names)
            if level == 1:
                headings = []
            elif level == 2:
                headings = [text]
            elif level == 3 and headings:
                headings = [headings[0], text]
            i += 1
            continue
        if token.type in ("bullet_list_open", "ordered_list_open") and token.level == 0:
            end = _closing_index(tokens, i)
            if _keeps_links(headings):
                item_links = list(_links_in(tokens[i:end]))
                if not all(link.href.startswith("#") for link in item_links):  # a TOC
                    for link in item_links:
                        url = normalise_url(link.href)
                        if url is None or link.image_only:
                            continue
                        position += 1
                        placement = ListPlacement(tuple(headings), link.title or url, position)
                        links.setdefault(url, ListedLink(url)).placements.append(placement)
            i = end + 1
            continue
        if token.type == "blockquote_open" and token.level == 0:
            i = _closing_index(tokens, i) + 1  # quotes are commentary, even with lists inside
            continue
        i += 1
    return list(links.values())


def _keeps_links(headings: Sequence[str]) -> bool:
    """Only content sections count: not the intro, the TOC, or license/contributing/thanks."""
    if not headings:
        return False
    name = headings[0].casefold()
    if name in SKIPPED_SECTIONS or name in TOC_SECTIONS:
        return False
    return all(heading.casefold() not in SKIPPED_SECTIONS for heading in headings[1:])


def _closing_index(tokens: Sequence[Token], open_index: int) -> int:
    """Index of the token closing the block opened at ``open_index``."""
    depth = 0
    for j in range(open_index, len(tokens)):
        depth += tokens[j].nesting
        if depth == 0:
            return j
    return len(tokens) - 1


def _links_in(tokens: Sequence[Token]) -> Iterator[_Link]:
    """Every markdown link in the inline content of ``tokens``, in order."""
    for token in tokens:
        if token.type != "inline" or not token.children:
            continue
        current: _Link | None = None
        parts: list[str] = []
        has_image = False
        for child in token.children:
            if child.type == "link_open":
                current, parts, has_image = _Link(str(child.attrGet("href") or ""), "", False), [], False
            elif child.type == "link_close" and current is not None:
                current.title = clean_title("".join(parts))
                current.image_only = has_image and not current.title
                yield current
                current = None
            elif current is not None:
                if child.type in ("text", "code_inline"):
                    parts.append(child.content)
                elif child.type in ("softbreak", "hardbreak"):
                    parts.append(" ")
                elif child.type == "image":
                    has_image = True


def _inline_text(inline: Token) -> str:
    """Plain text of an inline token (link text included, images and markup left out)."""
    return "".join(
        child.content if child.type in ("text", "code_inline") else " "
        for child in inline.children or []
        if child.type in ("text", "code_inline", "softbreak", "hardbreak")
    )


def _heading_text(inline: Token, known_names: Set[str]) -> str:
    """Heading text; in a restored document, cut back to a known section name.

    A flattened heading swallows whatever followed it on its old line that is not
    a bullet ("## License [badge] License for what? ..."), so when the text starts
    with a name the list itself uses (a TOC entry, or License/Contributing/...),
    that name is the heading.
    """
    text = clean_title(_inline_text(inline))
    if not known_names:
        return text
    folded = text.casefold()
    if len(folded) != len(text):  # casefolding changed lengths ("ß"): cannot slice safely
        return text
    best = ""
    for name in known_names:
        if len(name) > len(best) and folded.startswith(name) and (len(folded) == len(name) or folded[len(name)] == " "):
            best = name
    return text[: len(best)] if best else text


def _anchor_titles(tokens: Sequence[Token]) -> set[str]:
    """Texts of in-page anchor links (the TOC): the list's own names for its sections."""
    names: set[str] = set()
    for link in _links_in(tokens):
        if link.href.startswith("#") and link.title:
            names.add(link.title.casefold())
    return names
