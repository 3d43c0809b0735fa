"""Response body framing, sans-I/O: one set of rules for every worker kind.

How a response body is delimited on an HTTP/1.x connection is decided once,
when its head goes out, from what is known then (RFC 9112 section 6.3):

=========================================  ===================================
the exchange                                framing
=========================================  ===================================
HEAD, 1xx, 204, 304                         no body; HEAD and 304 keep the
                                            app's Content-Length (RFC 9110
                                            8.6), 1xx and 204 never send one
the app gave a Content-Length               that length; more bytes are cut off
                                            and close the connection, fewer
                                            close it too (the client would
                                            wait for the rest)
the whole body is known (one piece) and     Content-Length of that body
no trailers are wanted
HTTP/1.1, length unknown or trailers        chunked
HTTP/1.0, length unknown                    close-delimited: the connection
                                            closes after the body
=========================================  ===================================

Usage (the worker only moves the bytes)::

    framer = BodyFramer(req.method, req.http_version, status, app_length,
                        body_length=len(body) if whole else None)
    head = ... + framer.header + ...           # content-length / chunked / b""
    out = framer.frame(data)                   # bytes to write for a piece
    out = framer.end(trailers)                 # last chunk (+ trailers) or b""
    framer.must_close                          # framing forces a close

``framed`` counts the body bytes accepted for sending (after truncation);
what actually reached the socket is the worker's to count (see
:meth:`BodyFramer.payload_in` for a frame only partly written).
"""

from __future__ import annotations

import enum

from .response import LAST_CHUNK, check_header

__all__ = ["Framing", "BodyFramer"]

class Framing(enum.Enum):
    """How the end of a response body is marked."""

    NO_BODY = "no-body"            # HEAD, 1xx, 204, 304
    LENGTH = "content-length"
    CHUNKED = "chunked"
    CLOSE = "close-delimited"      # HTTP/1.0 with unknown length


# Members as module constants: an enum member looked up on its class costs
# more than the rest of a small response's framing.
_NO_BODY, _LENGTH, _CHUNKED, _CLOSE = (Framing.NO_BODY, Framing.LENGTH, Framing.CHUNKED,
                                       Framing.CLOSE)


class BodyFramer:
    """The framing of one response body; see the module docstring.

    ``header`` is the framing field line for the head (``b""`` if none).
    ``must_close`` is True when the connection cannot be reused after this
    response: close-delimited from the start, or set by :meth:`frame` (the
    app sent more than its Content-Length) or :meth:`end` (fewer).
    """

    __slots__ = ("kind", "length", "header", "framed", "must_close", "trailers")

    def __init__(self, method: bytes, version: bytes, status: int,
                 content_length: int | None, body_length: int | None = None,
                 trailers: bool = False) -> None:
        self.framed = 0
        self.must_close = False
        self.trailers = False
        self.length: int | None = None
        if method == b"HEAD" or status < 200 or status == 204 or status == 304:
            self.kind = _NO_BODY
            # A HEAD or 304 may say how long the body would have been; 1xx
            # and 204 must not carry a Content-Length at all.
            if content_length is not None and (method == b"HEAD" or status == 304):
                self.header = b"content-length: %d\r\n" % content_length
            else:
                self.header = b""
        elif content_length is not None:
            self.kind = _LENGTH
            self.length = content_length
            self.header = b"content-length: %d\r\n" % content_length
        elif body_length is not None and not trailers:
            self.kind = _LENGTH
            self.length = body_length
            self.header = b"content-length: %d\r\n" % body_length
        elif version == b"1.1":
            self.kind = _CHUNKED
            self.trailers = trailers
            self.header = b"transfer-encoding: chunked\r\n"
        else:
            self.kind = _CLOSE
            self.header = b""
            self.must_close = True

    @property
    def has_body(self) -> bool:
        return self.kind is not _NO_BODY

    def frame(self, data: bytes) -> bytes:
        """The bytes to write for one piece of body ``data``: a chunk, the
        data itself, the part of it that fits the announced length, or
        ``b""`` (no body allowed, or an empty piece)."""
        kind = self.kind
        n = len(data)
        if kind is _LENGTH:
            left = self.length - self.framed  # type: ignore[operator]
            if n > left:
                # More than announced: the extra bytes must never reach the
                # client, which would read them as the next response.
                data = data[:left]
                n = left
                self.must_close = True
            self.framed += n
            return data
        if kind is _CHUNKED:
            if not n:
                return b""  # an empty chunk would end the body
            self.framed += n
            return b"%x\r\n%s\r\n" % (n, data)
        if kind is _CLOSE:
            self.framed += n
            return data
        return b""

    def file_count(self, size: int) -> int | None:
        """For a file of ``size`` bytes sent outside :meth:`frame` (sendfile):
        how many bytes to send, counted as framed; None if the file cannot
        go out as is (chunked: it would need chunk framing)."""
        kind = self.kind
        if kind is _NO_BODY:
            return 0
        if kind is _CHUNKED:
            return None
        if kind is _LENGTH:
            size = min(size, self.length - self.framed)  # type: ignore[operator]
        self.framed += size
        return size

    def end(self, trailers: list[tuple[bytes, bytes]] | None = None) -> bytes:
        """The bytes that end the body: the last chunk with any trailers
        (validated; dropped unless chunked, as the trailers extension
        allows), else ``b""``.  A body shorter than its Content-Length sets
        ``must_close``."""
        kind = self.kind
        if kind is _CHUNKED:
            if not trailers:
                return LAST_CHUNK
            lines = [b"0\r\n"]
            for name, value in trailers:
                check_header(name, value)
                lines.append(name + b": " + value + b"\r\n")
            lines.append(b"\r\n")
            return b"".join(lines)
        if kind is _LENGTH and self.framed < self.length:  # type: ignore[operator]
            self.must_close = True
        return b""

    def payload_in(self, written: int, payload: int) -> int:
        """How many body bytes the first ``written`` bytes of one frame of a
        ``payload``-byte piece carried (a write cut short by the client)."""
        if self.kind is _CHUNKED and payload:
            written -= len(b"%x\r\n" % payload)
        return max(0, min(written, payload))
