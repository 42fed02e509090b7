"""Bytes to text the way a browser would, except where the bytes prove the label wrong.

Precedence (the WHATWG Encoding Standard's, as `w3lib.encoding` implements it), each
label resolved as browsers do (`iso-8859-1` is windows-1252):
1. a byte order mark;
2. the charset the HTTP header declares, then the page's `<meta charset>` (or
   `<?xml encoding>`);
3. detection: a body that reads as UTF-8 is UTF-8, anything else is charset-normalizer's
   best guess over the whole body (bounded, see `_detection_sample`), with the page's
   declared language (`<html lang>`) as a hint.

Where we part from a browser, because servers lie and the bytes say so (issue 15):
- A label is taken only if its reading is *clean*: at most `MAX_REPLACEMENT_SHARE` of
  the non-ASCII characters it yields are U+FFFD. A `utf-8` header on a gb18030,
  iso-8859-2 or cp1252 body is not clean, so the page's own `<meta charset>` decides,
  then detection. (A browser would show hundreds of U+FFFD.)
- A body that is overwhelmingly valid UTF-8 (stray bytes aside, same share) is read as
  UTF-8, with the stray bytes replaced, even under a legacy label: text in a legacy
  charset almost never forms valid multi-byte UTF-8 (Latin text: next to never; CJK:
  a minority of its characters), while servers that stamp `iso-8859-1` on UTF-8 pages
  are common; a browser would show "fÃ¼r" there, and we would index it.
- Detection never picks a CJK codec for bytes that read cleanly as Latin text (every
  byte defined in windows-1252, the non-ASCII characters standing alone between ASCII
  ones, as accented letters do): on German pages with few umlauts charset-normalizer
  can prefer big5hkscs ("h鐬ere").

What no rule decodes cleanly is caught after extraction: `replacement_share` of the
stored text decides whether a page ends `failed` ("undecodable: ...") instead of `ok`.
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
UTF8 = "utf-8"
REPLACEMENT = "\ufffd"
# Share of a reading's non-ASCII characters that may be U+FFFD for it to count as clean: stray bytes in a
# UTF-8 page pass, a legacy page read as UTF-8 does not (measured on our pages: legacy Latin text 100 %
# U+FFFD, gb18030, Big5, Shift_JIS and EUC-KR text 71-82 %, since some of their pairs form valid UTF-8).
MAX_REPLACEMENT_SHARE = 0.25
# ... and on short pages, this many stray bytes in a UTF-8 reading, if as many characters are valid UTF-8
# (legacy Latin text forms next to no valid UTF-8 sequence; legacy CJK text is 70-80 % U+FFFD as UTF-8).
MAX_STRAY_BYTES = 3
# A reading is "Latin" when at least this share of its non-ASCII characters stand in runs this short.
LATIN_ISOLATED_SHARE = 0.8
LATIN_MAX_RUN = 2
# Detection reads only lines holding non-ASCII bytes (the evidence), at most this many bytes of them,
# in this many chunks spread over the whole body: charset-normalizer scores every character of every
# chunk in Python for each candidate codec, so the sample must stay small.
DETECTION_MAX_BYTES = 256 * 1024
DETECTION_CHUNKS = 16
DETECTION_CHUNK_BYTES = 1024
LANG_SNIFF_BYTES = 4096
# Extracted text with more U+FFFD than this share of its characters (and at least UNDECODABLE_MIN_CHARS
# of them) was not decoded: the link ends `failed`, never `ok` with holes in its text.
UNDECODABLE_SHARE = 0.005
UNDECODABLE_MIN_CHARS = 5
_UTF8_REPLACEMENT_BYTES = REPLACEMENT.encode()
_HTML_LANG = re.compile(rb"<html\b[^>]*?\blang\s*=\s*[\"']?([a-zA-Z]{2,3})", re.IGNORECASE)
_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]+")

# The declared language's legacy charsets (Python codec names), the candidates detection tries first.
_WESTERN = ("cp1252", "iso8859_15")
_LANGUAGE_CODECS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("en", "de", "fr", "es", "it", "pt", "nl", "da", "sv", "no", "nb", "nn", "fi", "is", "ca",
                     "eu", "gl", "ga", "af", "id", "ms", "sw", "lb"), _WESTERN),
    **dict.fromkeys(("pl", "cs", "sk", "hu", "hr", "sl", "ro", "bs", "sq"), ("cp1250", "iso8859_2")),
    **dict.fromkeys(("ru", "uk", "be", "bg", "sr", "mk", "kk"),
                    ("cp1251", "koi8_r", "koi8_u", "iso8859_5", "cp866", "mac_cyrillic")),
    "el": ("cp1253", "iso8859_7"),
    "tr": ("cp1254", "iso8859_9"),
    **dict.fromkeys(("he", "iw", "yi"), ("cp1255", "iso8859_8")),
    **dict.fromkeys(("ar", "fa", "ur"), ("cp1256", "iso8859_6")),
    **dict.fromkeys(("lt", "lv", "et"), ("cp1257", "iso8859_13", "iso8859_4")),
    "vi": ("cp1258",),
    "th": ("cp874", "tis_620"),
    "zh": ("gb18030", "big5hkscs"),
    "ja": ("shift_jis", "cp932", "euc_jp", "iso2022_jp"),
    "ko": ("euc_kr", "cp949"),
}
_CJK_LANGUAGES = frozenset({"zh", "ja", "ko"})
# The browser's codecs for Latin-script languages (see `reads_as_latin`).
LATIN_CODECS = ("cp1252", "iso8859_15", "cp1250", "iso8859_2", "cp1254", "cp1257", "iso8859_13", "iso8859_16",
                "iso8859_3", "iso8859_4", "iso8859_10", "iso8859_14", "cp1258")
# The legacy encodings a browser knows (WHATWG Encoding Standard), as Python codecs: detection picks
# among these only, never hp-roman8 or a DOS code page that no browser would use for a web page.
WHATWG_LEGACY_CODECS = (
    "cp1252", "cp1250", "cp1251", "cp1253", "cp1254", "cp1255", "cp1256", "cp1257", "cp1258", "cp874",
    "iso8859_2", "iso8859_3", "iso8859_4", "iso8859_5", "iso8859_6", "iso8859_7", "iso8859_8", "iso8859_10",
    "iso8859_13", "iso8859_14", "iso8859_15", "iso8859_16", "koi8_r", "koi8_u", "cp866", "mac_roman",
    "mac_cyrillic", "gb18030", "big5hkscs", "euc_jp", "iso2022_jp", "shift_jis", "cp932", "euc_kr", "cp949",
)


# The Encoding Standard names some encodings after the codec its decoder is not: its "GBK" decoder is the
# gb18030 decoder (four-byte sequences included), while Python's `gbk` codec rejects those. w3lib up to
# 2.5 returned gb18030 for the gb2312/gbk labels; 2.6 returns the standard's name, `gbk`.
_DECODER_CODECS = {"gbk": "gb18030"}


def decoder_codec(codec: str | None) -> str | None:
    """The Python codec that decodes like a browser's decoder for `codec` (w3lib's name for a label)."""
    return None if codec is None else _DECODER_CODECS.get(codec, codec)


@dataclass(frozen=True)
class DecodedText:
    text: str
    encoding: str  # Python codec name
    source: str  # bom | header | meta | utf-8 validity | detection | fallback: which rule decided


def decode_text(raw: bytes, content_type: str, *, html: bool = True) -> DecodedText:
    """Decode a body; never raises. `html=False` skips the `<meta charset>` and `lang` scans (plain text)."""
    bom_encoding, bom = read_bom(raw)
    if bom_encoding is not None and bom is not None:
        return DecodedText(to_unicode(raw[len(bom):], bom_encoding), bom_encoding, "bom")
    labels: list[tuple[str | None, str]] = [(decoder_codec(http_content_type_encoding(content_type)), "header")]
    if html:
        labels.append((decoder_codec(html_body_declared_encoding(raw)), "meta"))
    if raw.isascii():  # every ASCII-compatible label reads it alike
        declared, source = next(((lb, s) for lb, s in labels if lb is not None), (UTF8, "utf-8 validity"))
        encoding = declared or UTF8
        return DecodedText(to_unicode(raw, encoding), encoding, source)
    as_utf8 = _Utf8Reading.of(raw)
    tried: set[str] = set()
    for label, source in labels:
        if label is None or label in tried:
            continue
        tried.add(label)
        if as_utf8.clean:
            return DecodedText(as_utf8.text, UTF8, source if label == UTF8 else "utf-8 validity")
        if label != UTF8:
            text = to_unicode(raw, label)
            if is_clean(text):
                return DecodedText(text, label, source)
    if as_utf8.clean:
        return DecodedText(as_utf8.text, UTF8, "utf-8 validity")
    language = declared_language(raw) if html else None
    encoding, source = _detect(raw, language)
    return DecodedText(to_unicode(raw, encoding), encoding, source)


@dataclass(frozen=True)
class _Utf8Reading:
    """`raw` read as UTF-8 with every invalid sequence replaced, and whether that reading is clean."""

    text: str
    clean: bool

    @classmethod
    def of(cls, raw: bytes) -> _Utf8Reading:
        text = raw.decode(UTF8, "replace")
        # The body-size cap can cut the last character short: that is not a stray byte.
        cut = _cut_tail(raw)
        replaced = text.count(REPLACEMENT) - raw.count(_UTF8_REPLACEMENT_BYTES) - (1 if cut else 0)
        non_ascii = _non_ascii_count(text) - (1 if cut else 0)
        valid = non_ascii - replaced
        allowed = max(MAX_REPLACEMENT_SHARE * non_ascii, min(MAX_STRAY_BYTES, valid))
        return cls(text, non_ascii > 0 and replaced <= allowed)


def _cut_tail(raw: bytes) -> bool:
    """True when `raw` ends inside a UTF-8 sequence that was valid so far (a body cut by the size cap)."""
    for back in range(1, min(4, len(raw)) + 1):
        byte = raw[-back]
        if byte < 0x80:
            return False
        if byte >= 0xC0:  # the last lead byte: does what follows it end too soon?
            try:
                raw[-back:].decode(UTF8)
            except UnicodeDecodeError as exc:
                return exc.reason == "unexpected end of data"
            return False
    return False


def _non_ascii_count(text: str) -> int:
    return len(text) - len(text.encode("ascii", "ignore"))


def is_clean(text: str) -> bool:
    """At most `MAX_REPLACEMENT_SHARE` of the non-ASCII characters of a decoded `text` are U+FFFD."""
    return text.count(REPLACEMENT) <= MAX_REPLACEMENT_SHARE * _non_ascii_count(text)


def replacement_share(text: str) -> float:
    """Share of U+FFFD among the non-space characters of `text` (0.0 for no text)."""
    replaced = text.count(REPLACEMENT)
    if not replaced:
        return 0.0
    return replaced / max(1, len("".join(text.split())))


def undecodable_reason(text: str) -> str | None:
    """"undecodable: N% replacement characters" when `text` holds too many U+FFFD to be stored as read."""
    share = replacement_share(text)
    if share <= UNDECODABLE_SHARE or text.count(REPLACEMENT) < UNDECODABLE_MIN_CHARS:
        return None
    return f"undecodable: {share * 100:.2g}% replacement characters"


def declared_language(raw: bytes) -> str | None:
    """The primary language subtag of `<html lang=...>` ("de" for "de-AT"), lower-cased, if any."""
    match = _HTML_LANG.search(raw[:LANG_SNIFF_BYTES])
    return match.group(1).decode("ascii").lower() if match else None


def _detect(raw: bytes, language: str | None) -> tuple[str, str]:
    """The codec charset-normalizer finds most likely, on the evidence, among the browser's encodings.

    Tried first, when the page declares its language: that language's codecs (a Western language's only
    for bytes that read as Latin text: `lang="en"` is the commonest template default). Bytes that read as
    Latin text are matched against Latin codecs only, so no CJK codec or Mac/DOS code page wins there.
    """
    sample = _detection_sample(raw)
    latin = language not in _CJK_LANGUAGES and reads_as_latin(raw)
    candidates: list[tuple[str, ...]] = []
    hinted = _LANGUAGE_CODECS.get(language or "")
    if hinted and (latin or hinted is not _WESTERN):
        candidates.append(hinted)
    candidates.append(LATIN_CODECS if latin else WHATWG_LEGACY_CODECS)
    for codecs in candidates:
        matches = from_bytes(sample, steps=DETECTION_CHUNKS, chunk_size=DETECTION_CHUNK_BYTES,
                             cp_isolation=list(codecs))
        best = matches.best()
        if best is not None:
            break
    else:
        return FALLBACK_ENCODING, "fallback"
    # Short samples carry little evidence: a single-byte guess with no language recognised, or a tie
    # with windows-1252 (cp1250 reads "crème" as well as cp1252 does), loses to the web's default.
    # A multi-byte guess (Shift_JIS, GB18030) is evidence in itself.
    single_byte = not is_multi_byte_encoding(best.encoding)
    if (single_byte and best.coherence == 0.0) or any(
            m.encoding == FALLBACK_ENCODING and (m.chaos, m.coherence) == (best.chaos, best.coherence)
            for m in matches):
        return FALLBACK_ENCODING, "detection"
    encoding = decoder_codec(resolve_encoding(best.encoding)) or FALLBACK_ENCODING
    if single_byte and encoding != FALLBACK_ENCODING and _same_reading(raw, encoding, FALLBACK_ENCODING):
        encoding = FALLBACK_ENCODING  # cp1250 reads German as cp1252 does: name the web's default
    return encoding, "detection"


def _same_reading(raw: bytes, first: str, second: str) -> bool:
    try:
        return raw.decode(first) == raw.decode(second)
    except UnicodeDecodeError:
        return False


def _detection_sample(raw: bytes) -> bytes:
    """The lines of `raw` that hold non-ASCII bytes, up to `DETECTION_MAX_BYTES`: markup is no evidence.

    Cutting at line feeds keeps multi-byte characters whole: 0x0A is never part of one in the
    ASCII-compatible legacy charsets (their trail bytes are 0x40 and up).
    """
    kept: list[bytes] = []
    size = 0
    for line in raw.split(b"\n"):
        if line.isascii():
            continue
        kept.append(line)
        size += len(line) + 1
        if size >= DETECTION_MAX_BYTES:
            break
    return b"\n".join(kept)[:DETECTION_MAX_BYTES]


def reads_as_latin(raw: bytes) -> bool:
    """True when every byte is defined in windows-1252 and its non-ASCII characters mostly stand alone.

    Accented letters sit between ASCII letters, alone or in twos ("Höhe", "Größe"); CJK text read as
    windows-1252 is a long run of them (each character is two bytes, and so is its punctuation), and so
    is Cyrillic or Greek text.
    """
    try:
        text = raw.decode(FALLBACK_ENCODING)
    except UnicodeDecodeError:
        return False
    runs = [len(m) for m in _NON_ASCII_RUN.findall(text)]
    total = sum(runs)
    return total > 0 and sum(r for r in runs if r <= LATIN_MAX_RUN) >= LATIN_ISOLATED_SHARE * total
