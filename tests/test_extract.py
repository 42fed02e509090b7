"""Extraction on bodies we build here: HTML, PDF, media pages, charsets, thin pages."""

from __future__ import annotations

from ingest.extract import extract_document
from ingest.models import FetchedBody
from tests.charset_pages import CHINESE, GERMAN, VIDEO_ARTICLE, VIDEO_DESCRIPTION, html_page
from tests.fixtureweb import SAMPLE_ARTICLES, VIDEO_PAGE
from tests.fixtureweb.pages import render_article_page, render_video_page


def body(content: bytes, content_type: str = "text/html; charset=utf-8", url: str = "http://blog.test/post",
         encoding: str | None = "utf-8") -> FetchedBody:
    return FetchedBody(url=url, content_type=content_type, body=content, truncated=False, encoding=encoding)


def test_html_article_keeps_text_and_metadata() -> None:
    article = SAMPLE_ARTICLES[0]
    html = render_article_page(article, "http://blog.test/post", [], "utf-8")
    doc = extract_document(body(html.encode()), "List title")
    assert doc.kind == "html" and not doc.thin
    assert doc.title == article.title
    assert article.paragraphs[-1].split()[0] in doc.text
    assert doc.date and doc.date.startswith(article.date[:4])


def test_extraction_does_not_depend_on_what_the_process_extracted_before() -> None:
    """Idempotent and engine-neutral: the same page gives the same text, first or after others sharing a note."""
    note = "Note: this article links to the related topics instead of repeating them; see those for trade-offs."
    pages = []
    for i, article in enumerate(SAMPLE_ARTICLES[:3]):
        html = render_article_page(article, f"http://blog.test/post-{i}", [], "utf-8")
        opening = f"<p>{article.paragraphs[0][:40]}"  # the body's first paragraph (the head repeats its words)
        assert opening in html
        pages.append(html.replace(opening, f"<p>{note}</p>{opening}", 1))
    first = extract_document(body(pages[2].encode(), url="http://blog.test/post-2"), "List title")
    for _ in range(2):
        for i, html in enumerate(pages):
            extract_document(body(html.encode(), url=f"http://blog.test/post-{i}"), "List title")
    again = extract_document(body(pages[2].encode(), url="http://blog.test/post-2"), "List title")
    assert note in first.text
    assert again == first


def test_a_page_with_no_text_is_thin_and_keeps_the_list_title() -> None:
    doc = extract_document(body(b"<html><body><nav>Home</nav></body></html>"), "How Sharding Works")
    assert doc.thin and doc.title == "How Sharding Works"


def test_youtube_page_keeps_title_and_description() -> None:
    html = render_video_page(VIDEO_PAGE, "https://www.youtube.com/watch?v=abc")
    doc = extract_document(body(html.encode(), url="https://www.youtube.com/watch?v=abc"), "Talk")
    assert doc.kind == "video"
    assert doc.title and VIDEO_PAGE.title in doc.title
    assert VIDEO_PAGE.paragraphs[0][:40] in doc.text


def test_pdf_text_is_extracted() -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    sentence = "Consistent hashing maps keys and servers onto one ring so few keys move. "
    pdf.multi_cell(0, 6, sentence * 8)
    raw = bytes(pdf.output())
    doc = extract_document(body(raw, "application/pdf", encoding=None), "A paper")
    assert doc.kind == "pdf" and not doc.thin
    assert "Consistent hashing maps keys" in " ".join(doc.text.split())


def test_a_broken_pdf_is_thin_not_an_error() -> None:
    doc = extract_document(body(b"%PDF-1.4 garbage", "application/pdf", encoding=None), "Broken paper")
    assert doc.thin and doc.title == "Broken paper"


def test_a_video_page_with_an_article_keeps_it_and_gains_the_description() -> None:
    html = html_page("Surviving a cold cache", [VIDEO_ARTICLE], head=(
        '<meta property="og:type" content="video.other">'
        f'<meta property="og:description" content="{VIDEO_DESCRIPTION}">'))
    doc = extract_document(body(html.encode(), url="http://news.test/talk"), "Talk")
    assert doc.kind == "html" and not doc.thin
    assert doc.text.startswith(VIDEO_DESCRIPTION) and VIDEO_ARTICLE[-60:] in doc.text
    assert doc.description == VIDEO_DESCRIPTION


def test_an_audio_page_without_an_article_is_its_player_card() -> None:
    html = html_page("Episode 12", ["Listen now."], head=(
        '<meta property="og:type" content="music.song">'
        f'<meta property="og:description" content="{VIDEO_DESCRIPTION}">'))
    doc = extract_document(body(html.encode(), url="http://news.test/ep12"), "Episode")
    assert doc.kind == "video" and doc.text == VIDEO_DESCRIPTION


def test_reader_comments_are_kept_only_when_the_setting_says_so() -> None:
    comment = "Great talk, we hit the same stampede on our own cache cluster last spring."
    html = html_page("Surviving a cold cache", [VIDEO_ARTICLE]).replace(
        "</article>", f'</article><div id="comments" class="comments"><h2>Comments</h2><p>{comment}</p></div>')
    off = extract_document(body(html.encode()), "Talk")
    on = extract_document(body(html.encode()), "Talk", include_comments=True)
    assert comment not in off.text
    assert comment in on.text and VIDEO_ARTICLE[-60:] in on.text


def test_every_text_field_comes_out_in_nfc() -> None:
    import unicodedata

    html = unicodedata.normalize("NFD", html_page("Geprüfte Größen", [GERMAN], lang="de"))
    doc = extract_document(body(html.encode()), unicodedata.normalize("NFD", "Größen"))
    assert doc.title == "Geprüfte Größen" and "geprüft" in doc.text
    assert unicodedata.is_normalized("NFC", doc.text)


def test_chinese_text_is_not_thin_for_want_of_spaces() -> None:
    doc = extract_document(body(html_page("分布式系统", [CHINESE], lang="zh").encode()), "List title")
    assert not doc.thin and doc.kind == "html" and CHINESE[:20] in doc.text
