"""Unit tests of the serve helpers whose rules are easiest to pin in isolation."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.errors import BadQueryError
from serve.api import FastJSONResponse
from serve.guards import MAX_QUERY_STRING_BYTES, query_string_problem
from serve.handlers import validation_message
from serve.page import highlight, safe_href
from serve.problems import OverloadedError, code_for, error_body
from serve.service import MAX_QUERY_CHARS, normalise_query, parse_k


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"q=caching", None),
        (b"q=caf%C3%A9+au+lait&k=3", None),
        (b"q=100%25", None),
        (b"q=%zz", 400),
        (b"q=50%", 400),
        (b"q=%ff", 400),
        (b"q=%C3", 400),
        (b"q=%C3&x=%A9", 400),
        (b"q=" + b"a" * MAX_QUERY_STRING_BYTES, 414),
    ],
)
def test_query_string_problem(raw: bytes, status: int | None) -> None:
    problem = query_string_problem(raw)
    assert (problem[0] if problem else None) == status, problem


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_any_properly_encoded_text_passes_the_guard(text: str) -> None:
    assert query_string_problem(urlencode({"q": text}).encode()) is None


def test_highlight_marks_terms_and_escapes_everything_else() -> None:
    html = str(highlight('use **consistent hashing** <script>alert("x")</script> & **rings**'))
    assert html == (
        "use <mark>consistent hashing</mark> &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; <mark>rings</mark>"
    )
    assert str(highlight("**<b>**")) == "<mark>&lt;b&gt;</mark>"
    assert str(highlight(None)) == ""


def test_safe_href_only_allows_http() -> None:
    assert safe_href("https://example.com/a?b=1") == "https://example.com/a?b=1"
    assert safe_href("javascript:alert(1)") == "#"
    assert safe_href(None) == "#"


def test_normalise_query() -> None:
    assert normalise_query("  many \t spaces\n here ") == "many spaces here"
    for bad in (None, "", "   \t\n"):
        with pytest.raises(BadQueryError, match="q must not be empty"):
            normalise_query(bad)
    with pytest.raises(BadQueryError, match="limit is 512"):
        normalise_query("x" * (MAX_QUERY_CHARS + 1))


def test_parse_k() -> None:
    assert parse_k(None) == 10 and parse_k("") == 10 and parse_k("50") == 50
    for bad in ("0", "51", "-1", "ten", "1.5"):
        with pytest.raises(BadQueryError, match="k must"):
            parse_k(bad)


def test_error_codes_and_shape() -> None:
    assert code_for(503, OverloadedError("busy")) == "overloaded"
    assert code_for(414) == "uri_too_long"
    assert code_for(429) == "too_many_requests"
    assert error_body(404, "gone") == {"error": {"status": 404, "code": "not_found", "message": "gone"}}


def test_validation_message_is_one_sentence() -> None:
    errors = [{"loc": ("query", "k"), "msg": "Input should be less than or equal to 50", "input": "99"}]
    assert validation_message(errors) == "k: input should be less than or equal to 50 (got '99')"


def test_fast_json_writes_the_same_bytes_as_starlette_and_no_invalid_json() -> None:
    from starlette.responses import JSONResponse

    body = {"query": "café ✓ \"quoted\"", "took_ms": 1.25, "results": [{"rank": 1, "score": 0.5, "archived_url": None}]}
    assert FastJSONResponse(body).body == JSONResponse(body).body
    assert FastJSONResponse({"score": float("nan")}).body == b'{"score":null}'
