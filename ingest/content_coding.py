"""Our own streaming decoder for a response's Content-Encoding, bounded where the bytes arrive.

Why not httpx's decoding (`aiter_bytes`): its zlib decoder has no output limit, so one network
chunk of a few kilobytes can decode to gigabytes before any cap sees it, and it applies stacked
codings (`gzip, gzip`) one after the other, multiplying the ratio. Here the raw stream
(`aiter_raw`) goes through one `zlib.decompressobj`, asked for at most `OUTPUT_CHUNK_BYTES` per
call (its `max_length`, as Scrapy's HttpCompressionMiddleware does), so the caller counts decoded
bytes as they are produced and stops at its cap with at most one piece more in memory.

At most one coding is applied: the ones we ask for (`ACCEPT_ENCODING` in host_pools). A stacked or
unknown one is `UndecodableBody`; the fetcher then asks once more for identity.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import httpx

# What one decompress call may produce; the cap is checked between calls.
OUTPUT_CHUNK_BYTES = 64 * 1024
# Content-Encodings we decode (and ask for, see host_pools.ACCEPT_ENCODING); "identity" is no coding.
DECODABLE_ENCODINGS = frozenset({"identity", "gzip", "x-gzip", "deflate"})


class UndecodableBody(Exception):
    """The body's Content-Encoding cannot be (or may not be) decoded; the reason is in words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def content_coding(response: httpx.Response) -> str | None:
    """The one coding to undo (None for none), or UndecodableBody for a stacked or unknown one."""
    values = [v.strip().lower() for v in response.headers.get_list("content-encoding", split_commas=True)]
    codings = [v for v in values if v and v != "identity"]
    unknown = [v for v in codings if v not in DECODABLE_ENCODINGS]
    if unknown:
        raise UndecodableBody(f"body sent with Content-Encoding {', '.join(unknown)}, which linklens cannot decode")
    if len(codings) > 1:
        raise UndecodableBody(f"body sent with stacked Content-Encodings ({', '.join(codings)}); "
                              "linklens decodes at most one")
    return codings[0] if codings else None


class StreamDecoder:
    """Undoes one content coding chunk by chunk; `feed` yields decoded pieces of at most OUTPUT_CHUNK_BYTES.

    The caller stops iterating once it has enough: what is left stays compressed (`unconsumed_tail`)
    and is dropped with the decoder. Bytes after the end of the compressed stream are ignored, as
    browsers do; a stream cut short gives what it decoded so far (the connection layer reports a
    body shorter than its Content-Length).
    """

    def __init__(self, coding: str | None) -> None:
        self._coding = coding
        self._zlib: zlib._Decompress | None = None
        self._first = True
        if coding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS)  # zlib-wrapped, as RFC 9110 says; raw deflate below

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._zlib is None:
            for start in range(0, len(data), OUTPUT_CHUNK_BYTES):
                yield data[start:start + OUTPUT_CHUNK_BYTES]
            return
        pending = data
        while not self._zlib.eof:
            try:
                piece = self._zlib.decompress(pending, OUTPUT_CHUNK_BYTES)
            except zlib.error as exc:
                if self._first and self._coding == "deflate":
                    # Many servers send raw deflate under "deflate" (browsers accept both): try that once.
                    self._first = False
                    self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                    continue
                raise UndecodableBody(f"body could not be decoded as {self._coding} ({exc})") from None
            self._first = False
            pending = self._zlib.unconsumed_tail
            if piece:
                yield piece
            if not pending and len(piece) < OUTPUT_CHUNK_BYTES:
                return  # all input taken and all its output given: wait for the next chunk
