"""Text decoded right: BOM, then the header, then <meta charset>, then detection, with lies caught."""

from __future__ import annotations

import pytest

from ingest.decode import decode_text, reads_as_latin, undecodable_reason
from ingest.extract import extract_document
from ingest.models import FetchedBody
from tests.charset_pages import CHINESE_QUEUE, LARGE_STYLE, POLISH, CharsetPage, charset_pages, html_page

CREME = "crème brûlée"
PARAGRAPH = f"<p>The {CREME} at the café was naïve and perfect.</p>"


def page(meta: str = "") -> str:
    return f"<!doctype html><html><head>{meta}<title>Dessert</title></head><body>{PARAGRAPH}</body></html>"


def test_utf8_under_an_iso_8859_1_header_with_meta_utf8_reads_as_written() -> None:
    """The issue's first case. A browser would follow the header and show 'crÃ¨me'; valid UTF-8 wins here."""
    decoded = decode_text(page('<meta charset="utf-8">').encode(), "text/html; charset=iso-8859-1")
    assert CREME in decoded.text and "Ã" not in decoded.text
    assert (decoded.encoding, decoded.source) == ("utf-8", "utf-8 validity")


def test_utf8_under_an_iso_8859_1_header_without_meta_reads_as_written() -> None:
    decoded = decode_text(page().encode(), "text/html; charset=iso-8859-1")
    assert CREME in decoded.text and "Ã" not in decoded.text


def test_a_utf8_bom_beats_a_windows_1252_header() -> None:
    decoded = decode_text(b"\xef\xbb\xbf" + page().encode(), "text/html; charset=windows-1252")
    assert CREME in decoded.text and "Ã" not in decoded.text
    assert not decoded.text.startswith("\ufeff")
    assert decoded.source == "bom"


def test_a_utf16_bom_decodes() -> None:
    decoded = decode_text(page().encode("utf-16"), "text/html")
    assert CREME in decoded.text and decoded.source == "bom"


def test_the_header_charset_is_used_for_legacy_bytes() -> None:
    decoded = decode_text(page().encode("latin-1"), "text/html; charset=ISO-8859-1")
    assert CREME in decoded.text
    assert (decoded.encoding, decoded.source) == ("cp1252", "header")  # WHATWG: latin-1 means windows-1252


def test_meta_charset_when_the_header_has_none() -> None:
    decoded = decode_text(page('<meta charset="windows-1252">').encode("cp1252"), "text/html")
    assert CREME in decoded.text and decoded.source == "meta"


def test_meta_charset_is_ignored_for_plain_text() -> None:
    raw = "Notes on <meta charset=koi8-r> tags: café.".encode()
    assert decode_text(raw, "text/plain", html=False).text == "Notes on <meta charset=koi8-r> tags: café."


def test_legacy_bytes_under_a_utf8_label_are_detected() -> None:
    decoded = decode_text(page().encode("cp1252"), "text/html; charset=utf-8")
    assert CREME in decoded.text and "\ufffd" not in decoded.text
    assert decoded.source == "detection"


def test_a_utf8_page_with_one_broken_byte_keeps_its_label() -> None:
    raw = page().encode().replace(b"perfect", b"perf\xffct")
    decoded = decode_text(raw, "text/html; charset=utf-8")
    assert CREME in decoded.text and "perf\ufffdct" in decoded.text


@pytest.mark.parametrize(("text", "encoding"), [
    ("Распределённые системы требуют согласованности данных между узлами кластера.", "cp1251"),
    ("分散システムでは、ノード間のデータの一貫性を保つことが重要です。", "shift_jis"),
])
def test_undeclared_legacy_charsets_are_detected(text: str, encoding: str) -> None:
    decoded = decode_text(f"<p>{text}</p>".encode(encoding), "text/html")
    assert text in decoded.text and decoded.source == "detection"


def test_undeclared_short_western_text_prefers_windows_1252() -> None:
    """Short samples tie between single-byte charsets; the tie goes to the web's default."""
    assert decode_text("<p>café</p>".encode("latin-1"), "").text == "<p>café</p>"


def test_a_utf8_sequence_cut_by_the_body_cap_still_counts_as_utf8() -> None:
    raw = page().encode() + "é".encode()[:1]
    decoded = decode_text(raw, "text/html; charset=iso-8859-1")
    assert CREME in decoded.text and decoded.encoding == "utf-8"


def test_the_extractor_uses_these_rules() -> None:
    words = " ".join([f"The {CREME} was served {i} times at the café." for i in range(12)])
    html = f'<!doctype html><html><head><meta charset="utf-8"><title>Dessert</title></head><body><article>' \
           f"<h1>Dessert</h1><p>{words}</p></article></body></html>"
    body = FetchedBody("http://blog.test/dessert", "text/html; charset=iso-8859-1", html.encode(), False, "iso-8859-1")
    document = extract_document(body, "Dessert")
    assert CREME in document.text and "Ã" not in document.text


# --- issue 15: decoding that survives lies -------------------------------------------------------------------


def page_named(name: str) -> CharsetPage:
    return next(p for p in charset_pages() if p.name == name)


@pytest.mark.parametrize(("name", "encoding"), [
    ("gb18030-under-utf8", "gb18030"),
    ("iso-8859-2-under-utf8", "iso8859-2"),
    ("cp1252-under-utf8", "cp1252"),
])
def test_a_lying_utf8_header_yields_to_the_pages_meta_charset(name: str, encoding: str) -> None:
    """Each body holds a few byte pairs that are valid UTF-8, which the old rule took as proof of the label."""
    page = page_named(name)
    assert "\ufffd" in page.body.decode("utf-8", "replace")
    decoded = decode_text(page.body, page.content_type)
    assert (decoded.encoding, decoded.source) == (encoding, "meta")
    assert "\ufffd" not in decoded.text
    assert all(m in decoded.text for m in page.must)


@pytest.mark.parametrize("label", ["gb2312", "gbk", "GB18030"])
def test_a_chinese_label_names_a_python_codec_that_reads_the_whole_body(label: str) -> None:
    """Browsers decode every GB label with the gb18030 decoder; pages labelled gb2312 hold four-byte characters.

    The name matters beyond this call: it is stored with the body, and Python's `gbk` codec rejects those
    characters (w3lib 2.6 names the label `gbk`, 2.5 named it `gb18030`).
    """
    raw = html_page("消息队列", [f"{CHINESE_QUEUE} 𠀀 😀"]).encode("gb18030")
    decoded = decode_text(raw, f"text/html; charset={label}")
    assert (decoded.encoding, decoded.source) == ("gb18030", "header")
    assert "𠀀 😀" in decoded.text
    assert raw.decode(decoded.encoding) == decoded.text


def test_utf8_with_stray_bytes_under_a_legacy_header_reads_as_utf8() -> None:
    page = page_named("utf8-stray-bytes-under-latin1")
    decoded = decode_text(page.body, page.content_type)
    assert (decoded.encoding, decoded.source) == ("utf-8", "utf-8 validity")
    assert decoded.text.count("\ufffd") == 4 and "Ã" not in decoded.text
    assert "Die Vögel im Garten" in decoded.text


def test_a_latin1_german_page_is_never_read_as_big5() -> None:
    """charset-normalizer on the first 64 KB (all CSS but the title) picked big5hkscs: "Die H鐬e"."""
    page = page_named("latin1-german-unlabelled")
    assert reads_as_latin(page.body)
    decoded = decode_text(page.body, page.content_type)
    assert (decoded.encoding, decoded.source) == ("cp1252", "detection")
    assert "<title>Die Höhe</title>" in decoded.text and "Die Vögel im Garten" in decoded.text


def test_cjk_bytes_do_not_read_as_latin() -> None:
    assert not reads_as_latin(CHINESE_QUEUE.encode("gb18030"))
    assert not reads_as_latin("Распределённые системы".encode("cp1251"))
    assert reads_as_latin("Größe, Höhe und Gewicht.".encode("latin-1"))


@pytest.mark.parametrize(("lang", "encoding"), [("pl", "iso8859-2"), ("de", "cp1252")])
def test_the_declared_language_guides_detection(lang: str, encoding: str) -> None:
    text = POLISH if lang == "pl" else "Die Höhe der Türme wäre kein Problem."
    raw = f'<!doctype html><html lang="{lang}"><body><p>{text}</p></body></html>'.encode(encoding)
    decoded = decode_text(raw, "text/html; charset=utf-8")
    assert text in decoded.text and decoded.source == "detection"


def test_detection_reads_evidence_past_the_first_64_kb() -> None:
    """A Cyrillic page whose first 100 KB are ASCII markup: the old 64 KB sample saw no evidence."""
    text = "Распределённые системы требуют согласованности данных между узлами кластера. " * 20
    raw = (f"<!doctype html><html><head><style>{LARGE_STYLE}</style></head><body><p>{text}</p></body></html>"
           .encode("cp1251"))
    decoded = decode_text(raw, "text/html")
    assert text in decoded.text and decoded.encoding == "cp1251"


def test_text_full_of_replacement_characters_is_undecodable() -> None:
    assert undecodable_reason("Der Bericht " + "\ufffd" * 30 + " wurde gespeichert.") == \
        "undecodable: 53% replacement characters"
    few = "A long page. " * 200 + "\ufffd" * 4
    assert undecodable_reason(few) is None
