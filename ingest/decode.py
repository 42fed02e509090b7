"""Bytes to text the way a browser would, except where the bytes prove the label wrong.

Precedence (the WHATWG Encoding Standard's, as `w3lib.encoding` implements it):
1. a byte order mark;
2. the charset the HTTP header declares, else the page's `<meta charset>` (or
   `<?xml encoding>`), labels resolved as browsers do (`iso-8859-1` is windows-1252);
3. detection: valid UTF-8 is UTF-8, anything else is charset-normalizer's best guess
   on a sample, windows-1252 when that guess rests on no evidence (see `_detect`).

One deliberate difference from a browser, in step 2: a declared single- or multi-byte
legacy charset loses to UTF-8 when the body is valid UTF-8 *and* holds non-ASCII
bytes. Text in a legacy charset that happens to form valid multi-byte UTF-8 sequences
is vanishingly rare, while servers that stamp `iso-8859-1` on UTF-8 pages are common;
a browser would show "crÃ¨me brÃ»lÃ©e" there, and we would index it. The reverse lie
(UTF-8 declared, legacy bytes) is corrected only when none of the non-ASCII bytes is
valid UTF-8; a UTF-8 page with a few broken bytes keeps its label and gets U+FFFD.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from charset_normalizer import from_bytes
from charset_normalizer.utils import is_multi_byte_encoding
from w3lib.encoding import (
    html_body_declared_encoding,
    http_content_type_encoding,
    read_bom,
    resolve_encoding,
    to_unicode,
)

FALLBACK_ENCODING = "cp1252"  # maps every byte; the WHATWG default for most of the web's old pages
DETECTION_SAMPLE_BYTES = 64 * 1024
UTF8 = "utf-8"
_DECODED_NON_ASCII = re.compile("[^\x00-\x7f\ufffd]")


@dataclass(frozen=True)
class DecodedText:
    text: str
    encoding: str  # Python codec name
    source: str  # bom | header | meta | utf-8 validity | detection | fallback: which rule decided


def decode_text(raw: bytes, content_type: str, *, html: bool = True) -> DecodedText:
    """Decode a body; never raises. `html=False` skips the `<meta charset>` scan (plain text, markdown)."""
    bom_encoding, bom = read_bom(raw)
    if bom_encoding is not None and bom is not None:
        return DecodedText(to_unicode(raw[len(bom):], bom_encoding), bom_encoding, "bom")
    declared, source = http_content_type_encoding(content_type), "header"
    if declared is None and html:
        declared, source = html_body_declared_encoding(raw), "meta"
    if declared == UTF8:
        try:
            return DecodedText(raw.decode(UTF8), UTF8, source)
        except UnicodeDecodeError:
            if not _utf8_label_contradicted(raw):
                return DecodedText(raw.decode(UTF8, "replace"), UTF8, source)
    elif declared is not None:
        as_utf8 = _as_utf8(raw)
        if as_utf8 is not None and not raw.isascii():
            return DecodedText(as_utf8, UTF8, "utf-8 validity")
        return DecodedText(to_unicode(raw, declared), declared, source)
    encoding, source = _detect(raw)
    return DecodedText(to_unicode(raw, encoding), encoding, source)


def _as_utf8(raw: bytes) -> str | None:
    """The text if `raw` is valid UTF-8; a sequence cut short at the very end (the body-size cap) is allowed."""
    try:
        return raw.decode(UTF8)
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data" and exc.end == len(raw):
            return raw.decode(UTF8, "replace")
        return None


def _utf8_label_contradicted(raw: bytes) -> bool:
    """True when the body has non-ASCII bytes and not one of them forms a valid UTF-8 character."""
    return not raw.isascii() and _DECODED_NON_ASCII.search(raw.decode(UTF8, "replace")) is None


def _detect(raw: bytes) -> tuple[str, str]:
    if raw.isascii() or _as_utf8(raw) is not None:
        return UTF8, "utf-8 validity"
    matches = from_bytes(raw[:DETECTION_SAMPLE_BYTES])
    best = matches.best()
    if best is None:
        return FALLBACK_ENCODING, "fallback"
    # Short samples carry little evidence: a single-byte guess with no language recognised, or a tie
    # with windows-1252 (cp1250 reads "crème" as well as cp1252 does), loses to the web's default.
    # A multi-byte guess (Shift_JIS, GB18030) is evidence in itself: random bytes rarely decode so.
    single_byte = not is_multi_byte_encoding(best.encoding)
    if (single_byte and best.coherence == 0.0) or any(
            m.encoding == FALLBACK_ENCODING and (m.chaos, m.coherence) == (best.chaos, best.coherence)
            for m in matches):
        return FALLBACK_ENCODING, "detection"
    return resolve_encoding(best.encoding) or FALLBACK_ENCODING, "detection"
