"""One text form for everything stored and every query: Unicode NFC.

The same word can arrive as different code points: "geprüft" typed with a precomposed
"ü" (U+00FC) or as "u" plus a combining diaeresis (U+0308), as macOS file names and some
editors write it. Unless both sides of a match use one form, a query never finds the page.
NFC is the form the web mostly uses and the one trafilatura's `extract()` returns; the
extractor, the list parser, the BM25 analyzer and the searcher all call `nfc`.
"""

from __future__ import annotations

import unicodedata
from typing import Final, Literal

import regex

FORM: Final[Literal["NFC"]] = "NFC"
# Scripts written without spaces between words, each character with its marks: a run of them is a
# sentence or more, not a word. The BM25 analyzer (index/lexical.py) pairs their characters.
UNSPACED_CHARACTER = (r"[\p{scx=Han}\p{scx=Hiragana}\p{scx=Katakana}\p{scx=Hangul}\p{scx=Thai}\p{scx=Lao}"
                      r"\p{scx=Khmer}\p{scx=Myanmar}]\p{M}*")
UNSPACED_RUN = regex.compile(rf"(?:{UNSPACED_CHARACTER})+")


def nfc(text: str) -> str:
    """`text` in NFC; the quick check makes this nearly free for text already in that form."""
    return text if unicodedata.is_normalized(FORM, text) else unicodedata.normalize(FORM, text)


def word_count(text: str) -> int:
    """Words in `text`, for scripts written with or without spaces between words.

    `len(text.split())` counts a Chinese or Thai paragraph as one word; here each character
    of those scripts counts as half a word (Chinese words average about two characters).
    """
    unspaced = sum(len(run) for run in UNSPACED_RUN.findall(text))
    if not unspaced:
        return len(text.split())
    spaced = len(UNSPACED_RUN.sub(" ", text).split())
    return spaced + (unspaced + 1) // 2
