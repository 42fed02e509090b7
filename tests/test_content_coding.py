"""Our streaming decoder: one coding at most, and never more than one piece of output per decompress call."""

from __future__ import annotations

import gzip
import zlib

import httpx
import pytest

from ingest.content_coding import OUTPUT_CHUNK_BYTES, StreamDecoder, UndecodableBody, content_coding

TEXT = b"<html><body><p>" + b"A paragraph about caches and queues. " * 2000 + b"</p></body></html>"


def coded(value: str | None) -> httpx.Response:
    return httpx.Response(200, headers={"Content-Encoding": value} if value is not None else {})


def decode(decoder: StreamDecoder, data: bytes, chunk: int = 1000) -> bytes:
    return b"".join(piece for start in range(0, len(data), chunk) for piece in decoder.feed(data[start:start + chunk]))


@pytest.mark.parametrize(("header", "coding"), [(None, None), ("identity", None), ("gzip", "gzip"),
                                                ("GZIP ", "gzip"), ("deflate", "deflate"), ("x-gzip", "x-gzip")])
def test_one_known_coding_is_accepted(header: str | None, coding: str | None) -> None:
    assert content_coding(coded(header)) == coding


@pytest.mark.parametrize(("header", "words"), [("gzip, gzip", "stacked"), ("deflate, gzip", "stacked"),
                                               ("br", "cannot decode"), ("gzip, x-zorblax", "cannot decode")])
def test_stacked_or_unknown_codings_are_refused_in_words(header: str, words: str) -> None:
    with pytest.raises(UndecodableBody) as refused:
        content_coding(coded(header))
    assert words in refused.value.reason


@pytest.mark.parametrize(("coding", "data"), [
    ("gzip", gzip.compress(TEXT)),
    ("deflate", zlib.compress(TEXT)),
    ("deflate", zlib.compress(TEXT)[2:-4]),  # raw deflate under "deflate", as many servers send it
    (None, TEXT),
])
def test_each_coding_decodes_to_the_text_in_bounded_pieces(coding: str | None, data: bytes) -> None:
    decoder = StreamDecoder(coding)
    pieces = [p for start in range(0, len(data), 700) for p in decoder.feed(data[start:start + 700])]
    assert b"".join(pieces) == TEXT
    assert max(len(p) for p in pieces) <= OUTPUT_CHUNK_BYTES


def test_one_small_chunk_of_a_bomb_gives_one_bounded_piece_at_a_time() -> None:
    bomb = gzip.compress(b"\0" * (64 * 2**20))  # ~64 KB that decode to 64 MiB
    pieces = StreamDecoder("gzip").feed(bomb)
    first = next(pieces)
    assert len(first) == OUTPUT_CHUNK_BYTES  # the caller stops here, at its cap: nothing more is decoded
    assert sum(len(p) for p in pieces) + len(first) == 64 * 2**20


def test_a_body_that_is_not_what_its_coding_says_is_undecodable() -> None:
    with pytest.raises(UndecodableBody) as refused:
        decode(StreamDecoder("gzip"), TEXT)
    assert "could not be decoded as gzip" in refused.value.reason
