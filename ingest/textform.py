"""One text form for everything stored and every query: Unicode NFC.

The same word can arrive as different code points: "geprüft" typed with a precomposed
"ü" (U+00FC) or as "u" plus a combining diaeresis (U+0308), as macOS file names and some
editors write it. Unless both sides of a match use one form, a query never finds the page.
NFC is the form the web mostly uses and the one trafilatura's `extract()` returns; the
extractor, the list parser, the BM25 analyzer and the searcher all call `nfc`.
"""

from __future__ import annotations

import unicodedata

FORM = "NFC"


def nfc(text: str) -> str:
    """`text` in NFC; the quick check makes this nearly free for text already in that form."""
    return text if unicodedata.is_normalized(FORM, text) else unicodedata.normalize(FORM, text)
