"""The snippet under a result: ~300 characters of the best passage around the query's words, marked.

Words are matched by stem, so "caching" in the query marks "cached" in the text,
and stopwords are never marked. Marks are markdown bold (`**term**`); markdown
bold already in the text is removed first so marks are unambiguous.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from index.lexical import STOPWORDS, stem

SNIPPET_CHARS = 300
# Show a little text before the first match so the snippet does not start mid-thought.
LEAD_CHARS = 60
ELLIPSIS = "…"
_WORD = re.compile(r"\w+", re.UNICODE)
_BOLD = re.compile(r"\*\*|__")
_SPACE = re.compile(r"\s+")


def make_snippet(text: str, query_stems: Collection[str], max_chars: int = SNIPPET_CHARS) -> str:
    """The window of `text` holding the most distinct query stems, with those words marked."""
    clean = _SPACE.sub(" ", _BOLD.sub("", text)).strip()
    matches = [m for m in _WORD.finditer(clean) if _is_match(m.group(), query_stems)]
    start = _best_start(clean, matches, max_chars)
    end = min(len(clean), start + max_chars)
    if end < len(clean):
        cut = clean.rfind(" ", start, end)
        end = cut if cut > start else end
    if start > 0:
        space = clean.find(" ", start, end)
        start = space + 1 if 0 <= space < start + LEAD_CHARS else start
    pieces: list[str] = []
    cursor = start
    for m in matches:
        if m.start() < start or m.end() > end:
            continue
        pieces.append(clean[cursor : m.start()])
        pieces.append(f"**{m.group()}**")
        cursor = m.end()
    pieces.append(clean[cursor:end])
    body = "".join(pieces).strip()
    return (ELLIPSIS if start > 0 else "") + body + (ELLIPSIS if end < len(clean) else "")


def _is_match(word: str, query_stems: Collection[str]) -> bool:
    lower = word.lower()
    return len(lower) > 1 and lower not in STOPWORDS and stem(lower) in query_stems


def _best_start(text: str, matches: list[re.Match[str]], max_chars: int) -> int:
    """Start of the window with the most distinct matched stems (then most matches, then earliest)."""
    if not matches or len(text) <= max_chars:
        return 0
    best = (-1, -1, 0)
    for i, first in enumerate(matches):
        start = max(0, first.start() - LEAD_CHARS)
        inside = [m.group().lower() for m in matches[i:] if m.end() <= start + max_chars]
        score = (len({stem(w) for w in inside}), len(inside), -start)
        if score > best:
            best = score
    return -best[2]
