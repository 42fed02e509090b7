"""The snippet under a result: ~300 characters of the best passage around the query's words, marked.

Words are matched by stem, so "caching" in the query marks "cached" in the text,
and stopwords are never marked. Marks are markdown bold (`**term**`); markdown
bold already in the text is removed first so marks are unambiguous.

Speed matters here (ten snippets per search): `str.find` locates the few words
that start like a query stem, and only those are stemmed to confirm the match.
"""

from __future__ import annotations

from collections.abc import Collection
from functools import lru_cache

import regex

from index.lexical import STOPWORDS, stem
from ingest.textform import UNSPACED_RUN, nfc

SNIPPET_CHARS = 300
# Show a little text before the first match so the snippet does not start mid-thought.
LEAD_CHARS = 60
ELLIPSIS = "…"
_WORD = regex.compile(r"\w+")  # letters, digits and their marks, as the BM25 analyzer reads words


def make_snippet(text: str, query_stems: Collection[str], max_chars: int = SNIPPET_CHARS) -> str:
    """The window of `text` holding the most distinct query stems, with those words marked."""
    clean = " ".join(nfc(text).replace("**", "").replace("__", "").split())
    matches = _matches(clean, frozenset(query_stems))
    start = _best_start(len(clean), matches, max_chars)
    end = min(len(clean), start + max_chars)
    if end < len(clean):
        cut = clean.rfind(" ", start, end)
        end = cut if cut > start else end
    if start > 0:
        space = clean.find(" ", start, end)
        start = space + 1 if 0 <= space < start + LEAD_CHARS else start
    pieces: list[str] = []
    cursor = start
    for m_start, m_end in _marked_spans(matches):
        if m_start < start or m_end > end:
            continue
        pieces.append(clean[cursor:m_start])
        pieces.append(f"**{clean[m_start:m_end]}**")
        cursor = m_end
    pieces.append(clean[cursor:end])
    body = "".join(pieces).strip()
    return (ELLIPSIS if start > 0 else "") + body + (ELLIPSIS if end < len(clean) else "")


def _matches(text: str, query_stems: frozenset[str]) -> list[tuple[int, int, str]]:
    """(start, end, stem) of every word of `text` whose stem is a query stem, and of every place a query
    term in an unspaced script (a character pair, see `index.lexical.terms`) occurs; in order."""
    found = _word_matches(text, query_stems)
    unspaced = [term for term in query_stems if UNSPACED_RUN.fullmatch(term)]
    if unspaced:
        found = sorted(found + _unspaced_matches(text, unspaced))
    return found


def _unspaced_matches(text: str, terms: list[str]) -> list[tuple[int, int, str]]:
    """Every occurrence of each term: these scripts have no word boundaries to respect."""
    out = []
    for term in terms:
        at = text.find(term)
        while at != -1:
            out.append((at, at + len(term), term))
            at = text.find(term, at + 1)
    return out


def _marked_spans(matches: list[tuple[int, int, str]]) -> list[tuple[int, int]]:
    """The matches as spans to mark, overlapping or touching ones joined ("分布" + "布式" → "分布式")."""
    spans: list[tuple[int, int]] = []
    for start, end, _ in matches:
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((start, end))
    return spans


def _word_matches(text: str, query_stems: frozenset[str]) -> list[tuple[int, int, str]]:
    """(start, end, stem) of every word of `text` whose stem is a query stem, in order.

    An English Snowball stem is the word's beginning except, at most, its last
    letter ("hoping" → "hope", "stories" → "stori"), so only words starting with
    a stem minus its last letter can match. Those are found with `str.find`
    (C speed) and only they are stemmed.
    """
    lower = text.lower()
    if len(lower) != len(text):  # a letter whose lower case is longer: offsets would shift
        candidates = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    else:
        found: dict[int, int] = {}
        for prefix in _prefixes(query_stems):
            at = lower.find(prefix)
            while at != -1:
                if at not in found and (at == 0 or not _is_word_char(lower[at - 1])):
                    whole = _WORD.match(lower, at)
                    if whole:
                        found[at] = whole.end()
                at = lower.find(prefix, at + 1)
        candidates = sorted(found.items())
    out = []
    for start, end in candidates:
        word = lower[start:end] if len(lower) == len(text) else text[start:end].lower()
        if word not in STOPWORDS and (s := stem(word)) in query_stems:
            out.append((start, end, s))
    return out


@lru_cache(maxsize=1024)
def _prefixes(query_stems: frozenset[str]) -> tuple[str, ...]:
    return tuple(sorted({s[:-1] if len(s) > 2 else s for s in query_stems if len(s) > 1}))


def _is_word_char(char: str) -> bool:
    return _WORD.match(char) is not None


def _best_start(length: int, matches: list[tuple[int, int, str]], max_chars: int) -> int:
    """Start of the window with the most distinct matched stems (then most matches, then earliest)."""
    if not matches or length <= max_chars:
        return 0
    best = (-1, -1, 0)
    right = 0
    for left, (first_start, _, _) in enumerate(matches):
        start = max(0, first_start - LEAD_CHARS)
        right = max(right, left)
        while right + 1 < len(matches) and matches[right + 1][1] <= start + max_chars:
            right += 1
        window = matches[left : right + 1]
        score = (len({m[2] for m in window}), len(window), -start)
        if score > best:
            best = score
    return -best[2]
