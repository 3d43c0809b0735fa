"""Strict, sans-I/O HTTP/1.x request reader.

Bytes go in with :meth:`RequestReader.feed`; events come out of
:meth:`RequestReader.next_event`.  No sockets here: the sync and async workers
both drive this one reader, so a request is framed the same way whichever
worker serves it.

Everything is validated on the raw bytes against the RFC 9110/9112 grammar
before a request is framed or handed to an application.  Numbers are converted
by :func:`parse_decimal` and :func:`parse_hex` only after a regex has proven
they are plain ASCII digits: ``int()`` accepts ``+``, ``_``, spaces and
non-ASCII digits, any of which would let a proxy and this server disagree about
where a body ends.

After any error the reader is dead: every later call raises the same
:class:`HTTPError`, so no byte after a malformed request can be read as another
request.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "HTTPError",
    "Limits",
    "Request",
    "EndOfMessage",
    "ConnectionClosed",
    "NEED_DATA",
    "PAUSED",
    "RequestReader",
    "parse_decimal",
    "parse_hex",
]


class HTTPError(Exception):
    """A request the server must refuse.  ``status`` is the response code."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    """Size bounds for one request; gunicorn's names, defaults and counts.

    ``request_line`` counts the request line without its CRLF;
    ``field_size`` counts a whole field line as sent (name, colon,
    whitespace and value) plus its CRLF, as gunicorn does, so one setting
    refuses the same requests under either server.
    """

    request_line: int = 4094
    fields: int = 100
    field_size: int = 8190
    head: int = 65536
    body: int | None = None
    chunk_line: int = 1024
    trailer_size: int = 8192

    @classmethod
    def from_config(cls, cfg: Any) -> "Limits":
        """The limits for a worker's settings: gunicorn's ``limit_request_*``
        (0 means the head cap, which the reader always keeps)."""
        head = 65536
        return cls(
            request_line=cfg.limit_request_line or head,
            fields=cfg.limit_request_fields or 32768,
            field_size=cfg.limit_request_field_size or head,
            head=max(head, cfg.limit_request_line + cfg.limit_request_field_size + 4),
            body=cfg.limit_request_body,
        )


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: :meth:`RequestReader.next_event` needs more bytes before it can go on.
NEED_DATA = _Sentinel("NEED_DATA")
#: The current request was read completely; call
#: :meth:`RequestReader.start_next` once its response is written.
PAUSED = _Sentinel("PAUSED")


class Request:
    """The head of one request, validated."""

    __slots__ = (
        "method", "target", "path", "query", "http_version", "headers",
        "keep_alive", "chunked", "content_length", "expect_continue",
        "upgrade", "host", "scheme", "raw_line",
    )

    method: bytes
    target: bytes
    path: bytes          # raw path, still percent-encoded, no query
    query: bytes         # raw query string, without "?"
    http_version: bytes  # b"1.0" or b"1.1"
    headers: list[tuple[bytes, bytes]]  # names lowercased, values trimmed
    keep_alive: bool
    chunked: bool
    content_length: int | None
    expect_continue: bool
    upgrade: bytes | None
    host: bytes | None
    scheme: bytes | None  # from an absolute-form target, else None
    raw_line: bytes       # the request line, for logs

    def __repr__(self) -> str:
        return f"<Request {self.raw_line!r}>"


class EndOfMessage:
    """The request body is complete.  ``trailers`` from a chunked body."""

    __slots__ = ("trailers",)

    def __init__(self, trailers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.trailers = trailers or []

    def __repr__(self) -> str:
        return f"<EndOfMessage trailers={self.trailers!r}>"


class ConnectionClosed:
    """The peer closed the connection cleanly between requests."""

    __slots__ = ()


_END_OF_MESSAGE = EndOfMessage()
CONNECTION_CLOSED = ConnectionClosed()


class _State(enum.Enum):
    HEAD = "head"
    BODY_LENGTH = "body-length"
    CHUNK_SIZE = "chunk-size"
    CHUNK_DATA = "chunk-data"
    CHUNK_CRLF = "chunk-crlf"
    TRAILERS = "trailers"
    END = "end"            # body complete, EndOfMessage not returned yet
    DONE = "done"
    CLOSED = "closed"
    ERROR = "error"


# Members as module constants: on Python 3.11 looking a member up on its
# class (_State.HEAD) costs about 0.1 us, as much as a small function call,
# and next_event() would pay a few of those on every call.
(_HEAD, _BODY_LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _END, _DONE,
 _CLOSED, _ERROR) = (
    _State.HEAD, _State.BODY_LENGTH, _State.CHUNK_SIZE, _State.CHUNK_DATA,
    _State.CHUNK_CRLF, _State.TRAILERS, _State.END, _State.DONE, _State.CLOSED,
    _State.ERROR)
# A tuple, not a set: membership by identity, without Enum.__hash__ (Python
# code on 3.11).
_BODY_STATES = (_BODY_LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _END)

# --- grammar (RFC 9110 section 5.6, RFC 9112 sections 3-7) -------------------

_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_VCHAR_OBS = rb"\x21-\x7e\x80-\xff"

_REQUEST_LINE = re.compile(
    rb"([" + _TCHAR + rb"]+) ([^\x00-\x20\x7f-\xff]+) HTTP/([0-9]\.[0-9])"
)
# Any other well-formed version is answered 505.  Requests carry these very
# objects, so the reader compares versions by identity.
_HTTP_11 = b"1.1"
_HTTP_10 = b"1.0"
_VERSIONS = {_HTTP_11: _HTTP_11, _HTTP_10: _HTTP_10}
# One header line including its CRLF.  The value is field-content with the
# optional whitespace on both sides outside the group.  The alternation of
# visible runs and whitespace runs cannot backtrack badly.
_HEADER_LINE = (
    rb"([" + _TCHAR + rb"]+):[ \t]*"
    rb"((?:[" + _VCHAR_OBS + rb"]+(?:[ \t]+[" + _VCHAR_OBS + rb"]+)*)?)"
    rb"[ \t]*\r\n"
)
_HEADER_FIELD = re.compile(_HEADER_LINE)
# The bytes a header block may hold besides CRLF pairs: HTAB, SP, visible
# ASCII and obs-text.  ``block.translate(None, _FIELD_LINE_BYTES)`` deletes
# them, so anything left is a control byte (or a CR or LF, checked apart).
_FIELD_LINE_BYTES = bytes([9, 13, 10]) + bytes(range(0x20, 0x7f)) + bytes(range(0x80, 0x100))
# Field names already proven to be tokens, with their lowercase form: the
# same few dozen names arrive on every request.  Bounded, as names come
# from the network.
_field_names: dict[bytes, bytes] = {}
_BAD_LINE_END = re.compile(rb"(?<!\r)\n|\r(?!\n)")

_DIGITS = re.compile(rb"[0-9]{1,18}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
_TOKEN = re.compile(rb"[" + _TCHAR + rb"]+")
# A comma-separated list of tokens with optional whitespace (RFC 9110 5.6.1).
_TOKEN_LIST = re.compile(
    rb"[ \t]*[" + _TCHAR + rb"]+(?:[ \t]*,[ \t]*[" + _TCHAR + rb"]+)*[ \t]*"
)
# The same with empty elements, which a recipient must accept and ignore
# (RFC 9110 5.6.1.2).  Each repetition consumes a comma: linear time.
_TOKEN_LIST_EMPTY_OK = re.compile(
    rb"[ \t]*(?:[" + _TCHAR + rb"]+)?(?:[ \t]*,[ \t]*(?:[" + _TCHAR + rb"]+)?)*[ \t]*"
)
_MAX_EMPTY_LINES = 8
# chunk-size [chunk-ext] (RFC 9112 7.1, 7.1.1).  Whitespace is BWS, allowed
# only before a ';' and around an '=': never at the end of the line.  A
# parser that took "5 " (or "0 ") as a size while a proxy refused it, or read
# it another way, would frame the body differently.
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]+)"
    rb"((?:[ \t]*;[ \t]*[" + _TCHAR + rb"]+"
    rb"(?:[ \t]*=[ \t]*(?:[" + _TCHAR + rb"]+|\"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*\"))?)*)"
)
_HOST = re.compile(
    rb"(?:\[[0-9A-Fa-f:.]+\]|\[v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+\]"
    rb"|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)"
    rb"(?::[0-9]*)?"
)
_ABSOLUTE = re.compile(rb"([A-Za-z][A-Za-z0-9+\-.]*)://([^/?]*)([^?]*)(?:\?(.*))?", re.S)
_AUTHORITY = re.compile(rb"[^/?#@]+:[0-9]+")

# Fields that must not appear in a trailer section: framing, routing, request
# modifiers and authentication (RFC 9110 section 6.5.1).  Trailers are kept
# apart from the headers anyway; these would mean a client or a proxy is
# confused about framing, so the request is refused.
_FORBIDDEN_TRAILERS = frozenset({
    b"transfer-encoding", b"content-length", b"host", b"connection",
    b"keep-alive", b"te", b"trailer", b"upgrade", b"expect", b"max-forwards",
    b"proxy-connection", b"cache-control", b"authorization",
    b"proxy-authorization", b"cookie", b"set-cookie", b"content-type",
    b"content-encoding", b"content-range", b"range", b"if-match",
    b"if-none-match", b"if-modified-since", b"if-unmodified-since",
    b"if-range", b"www-authenticate", b"proxy-authenticate", b"age",
    b"expires", b"date", b"location", b"retry-after", b"vary", b"warning",
})

# The header fields that framing and routing depend on; every other field
# costs one dict lookup in the head loop.
_HOST_FIELD, _CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION, _EXPECT, _UPGRADE = (
    _Sentinel(n) for n in ("host", "content-length", "transfer-encoding", "connection",
                           "expect", "upgrade"))
_SPECIAL_FIELDS = {
    b"host": _HOST_FIELD, b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING, b"connection": _CONNECTION,
    b"expect": _EXPECT, b"upgrade": _UPGRADE,
}

_HEX_VALUES = {c: i for i, c in enumerate(b"0123456789abcdef")}
_HEX_VALUES.update({c: i + 10 for i, c in enumerate(b"ABCDEF")})


def parse_decimal(data: bytes) -> int | None:
    """Return the value of 1-18 ASCII decimal digits, or None for anything else."""
    if _DIGITS.fullmatch(data) is None:
        return None
    n = 0
    for c in data:
        n = n * 10 + (c - 48)
    return n


def parse_hex(data: bytes) -> int | None:
    """Return the value of 1-15 ASCII hex digits, or None for anything else."""
    if _HEX.fullmatch(data) is None:
        return None
    n = 0
    for c in data:
        n = n * 16 + _HEX_VALUES[c]
    return n


def _bare_line_end(buf: bytes | bytearray, start: int) -> bool:
    """True if ``buf`` from ``start`` has an LF without CR before it, or a CR
    without LF after it (a CR at the very end may still get its LF)."""
    end = len(buf) - 1 if buf.endswith(b"\r") else len(buf)
    return _BAD_LINE_END.search(buf, start, end) is not None


def _bare_line_end_before(buf: bytes | bytearray, n: int) -> bool:
    """True if a bare LF or CR in ``buf`` shows before its byte ``n`` came:
    an LF at an index below ``n``, or a CR below ``n - 1`` with no LF
    after it.

    A limit is exceeded when byte ``n`` arrives, so when bytes come one
    at a time a bare line end that shows earlier is refused first (400).
    Refusing a whole buffer the same way keeps the answer the same
    however the bytes were split across reads.
    """
    m = _BAD_LINE_END.search(buf, 0, n)
    return m is not None and not (m.start() == n - 1 and buf[m.start()] == 13)


_valid_hosts: dict[bytes, bool] = {}


def _valid_host(value: bytes) -> bool:
    """Whether ``value`` is a valid Host / authority; a bounded cache, since
    the same few values arrive on every request."""
    known = _valid_hosts.get(value)
    if known is None:
        known = _HOST.fullmatch(value) is not None
        if len(_valid_hosts) < 256:
            _valid_hosts[value] = known
    return known


def _split_tokens(value: bytes, empty_ok: bool = False) -> list[bytes] | None:
    """Lowercased tokens of a #token list, or None if it is not one.

    ``empty_ok`` accepts and drops empty elements, as RFC 9110 5.6.1.2 asks
    of a recipient.  Transfer-Encoding does not take it: a proxy that reads
    ``chunked,`` another way would frame the body differently, so that
    form is refused rather than guessed at.
    """
    if (_TOKEN_LIST_EMPTY_OK if empty_ok else _TOKEN_LIST).fullmatch(value) is None:
        return None
    tokens = [t.strip(b" \t").lower() for t in value.split(b",")]
    return [t for t in tokens if t] if empty_ok else tokens


class RequestReader:
    """Reads a stream of pipelined requests from one connection.

    Usage::

        reader.feed(data)            # b"" means the peer sent EOF
        event = reader.next_event()  # Request, bytes, EndOfMessage,
                                     # ConnectionClosed, NEED_DATA or PAUSED
        reader.start_next()          # after the response to a request

    Body data comes out as ``bytes``.  Errors raise :class:`HTTPError`.
    """

    __slots__ = (
        "limits", "_buf", "_state", "_eof", "_remaining", "_body_read",
        "_error", "_trailers", "_trailer_bytes", "_scanned", "_empty_lines", "request",
    )

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        # Unread input: the bytes object last fed, untouched, while it is
        # all there is (a whole head or a whole body goes out without a
        # copy); a bytearray once input must be joined or partly consumed.
        self._buf: bytes | bytearray = b""
        self._state = _HEAD
        self._eof = False
        self._remaining = 0
        self._body_read = 0
        self._error: HTTPError | None = None
        self._trailers: list[tuple[bytes, bytes]] = []
        self._trailer_bytes = 0
        # How far the incomplete head has been searched already, so that a
        # head arriving one byte at a time costs linear, not quadratic, time.
        self._scanned = 0
        # Empty lines skipped before the current request line, across reads.
        self._empty_lines = 0
        self.request: Request | None = None

    # -- input -----------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Add bytes read from the peer; ``b""`` records end of file."""
        if data:
            if self._eof:
                raise RuntimeError("data fed after EOF")
            buf = self._buf
            if not buf:
                self._buf = data if type(data) is bytes else bytes(data)
            elif type(buf) is bytes:
                joined = bytearray(buf)
                joined += data
                self._buf = joined
            else:
                buf += data
        else:
            self._eof = True

    @property
    def buffered(self) -> int:
        """Bytes received but not consumed yet."""
        return len(self._buf)

    @property
    def pending(self) -> bool:
        """True if next_event() may have an event without more input: bytes
        are buffered, EOF was fed, or a body's end is yet to be reported."""
        return bool(self._buf) or self._eof or self._state is _END

    @property
    def in_body(self) -> bool:
        """True while a request's body is still being read."""
        return self._state in _BODY_STATES

    @property
    def body_left(self) -> int | None:
        """Bytes of the current Content-Length body that next_event() has not
        returned yet (buffered or still to come); None for a chunked body,
        whose length nobody knows, and outside a body."""
        return self._remaining if self._state is _BODY_LENGTH else None

    @property
    def idle(self) -> bool:
        """True between requests with nothing buffered."""
        return self._state is _HEAD and not self._buf

    def take_buffered(self) -> bytes:
        """Hand over the unread bytes (after a protocol switch, such as a
        WebSocket upgrade); the reader is done with this connection."""
        data = bytes(self._buf)
        self._buf = b""
        self._state = _CLOSED
        return data

    def start_next(self) -> None:
        """Move on to the next pipelined request (after the response)."""
        if self._state is not _DONE:
            raise RuntimeError(f"start_next() in state {self._state.value}")
        self._state = _HEAD
        self._empty_lines = 0
        self.request = None

    # -- output ----------------------------------------------------------

    def next_event(self):
        """Return the next event; see the class docstring."""
        state = self._state
        if state is _HEAD:
            return self._read_head()
        if state is _BODY_LENGTH:
            return self._read_length_body()
        if state is _END:
            self._state = _DONE
            return _END_OF_MESSAGE
        if state is _DONE:
            return PAUSED
        if state is _ERROR:
            raise self._error  # type: ignore[misc]
        if state is _CLOSED:
            return CONNECTION_CLOSED
        return self._read_chunked()

    def _fail(self, status: int, reason: str) -> HTTPError:
        self._state = _ERROR
        self._error = HTTPError(status, reason)
        self._buf = b""
        return self._error

    # -- head ------------------------------------------------------------

    def _read_head(self):
        buf = self._buf
        # RFC 9112 2.2: a server SHOULD ignore empty lines before a request;
        # up to 8 of them, however they arrive.  A ninth is left in place and
        # refused as an empty request line.
        if buf.startswith(b"\r\n") and self._empty_lines < _MAX_EMPTY_LINES:
            start = 0
            while buf.startswith(b"\r\n", start) and self._empty_lines < _MAX_EMPTY_LINES:
                start += 2
                self._empty_lines += 1
            self._drop(start)
            buf = self._buf
            self._scanned = 0
        end = buf.find(b"\r\n\r\n", self._scanned)
        if end < 0:
            return self._head_incomplete()
        self._scanned = 0
        limits = self.limits
        line_end = buf.find(b"\r\n")
        if line_end > limits.request_line:
            raise self._too_large(414, "request line too long", limits.request_line + 1)
        if end + 4 > limits.head:
            raise self._too_large(431, "request head too large", limits.head)
        if end + 4 == len(buf):
            # The usual case, one head per read: no copy.
            head = buf if type(buf) is bytes else bytes(buf)
            self._buf = b""
            self._parse_head(head, line_end, end + 2)
            return self.request
        head = bytes(buf[:end + 4])
        self._parse_head(head, line_end, end + 2)
        if (type(buf) is bytes and self._state is _BODY_LENGTH
                and len(buf) - end - 4 <= self._remaining):
            # A body that came with its head: one copy, then handed on whole.
            self._buf = buf[end + 4:]
        else:
            self._drop(end + 4)
        return self.request

    def _head_incomplete(self):
        buf = self._buf
        limits = self.limits
        line_end = buf.find(b"\r\n")
        if line_end < 0:
            if len(buf) > limits.request_line + 1:
                raise self._too_large(414, "request line too long", limits.request_line + 1)
        elif line_end > limits.request_line:
            raise self._too_large(414, "request line too long", limits.request_line + 1)
        elif len(buf) > limits.head:
            raise self._too_large(431, "request head too large", limits.head)
        # A bare LF or CR would leave us waiting for a CRLFCRLF that never
        # comes; refuse it as soon as it is seen.
        if _bare_line_end(buf, self._scanned):
            raise self._fail(400, "line not terminated by CRLF")
        # Keep three bytes back: a CRLFCRLF may straddle this read and the next.
        self._scanned = max(0, len(buf) - 4)
        if self._eof:
            if not buf:
                self._state = _CLOSED
                return CONNECTION_CLOSED
            raise self._fail(400, "connection closed inside request head")
        return NEED_DATA

    def _too_large(self, status: int, reason: str, at: int) -> HTTPError:
        """Fail for a limit exceeded at byte ``at`` of the buffer, unless a
        bare line end showed before it (see _bare_line_end_before)."""
        if _bare_line_end_before(self._buf, at):
            return self._fail(400, "line not terminated by CRLF")
        return self._fail(status, reason)

    def _parse_head(self, head: bytes, line_end: int, block_end: int) -> None:
        """Validate and frame one head; ``head[line_end:block_end]`` is the
        header block with its leading CRLF, ``block_end`` the final CRLF."""
        limits = self.limits
        m = _REQUEST_LINE.fullmatch(head, 0, line_end)
        if m is None:
            raise self._fail(400, "malformed request line")
        method, target, version = m.groups()

        req = Request()
        req.raw_line = head[:line_end]
        req.method = method
        req.target = target
        req.scheme = None
        headers = req.headers = []
        host = None
        host_count = 0
        # The fields that decide framing (all but Host), in order; most
        # requests have none, and skip _frame's checks altogether.
        framing: list[tuple[_Sentinel, bytes]] | None = None
        if block_end > line_end + 2:
            block = head[line_end + 2:block_end]
            # Two C-speed passes refuse what no field line may hold: a control
            # byte other than HTAB, or a CR or LF that is not part of a CRLF.
            crlf = block.count(b"\r\n")
            if (block.translate(None, _FIELD_LINE_BYTES)
                    or block.count(b"\r") != crlf or block.count(b"\n") != crlf):
                raise self._fail(400, self._block_error(block))
            if crlf > limits.fields:
                raise self._fail(431, "too many header fields")
            lines = block.split(b"\r\n")
            lines.pop()  # after the last CRLF
        else:
            lines = ()
        # After the block's bare CR and LF checks: split byte by byte, a
        # bare line end is refused before the head is complete, so it must
        # win over any status the complete head would get.
        version = _VERSIONS.get(version)
        if version is None:
            raise self._fail(505, "HTTP version not supported")
        req.http_version = version
        if lines:
            # A line as sent, plus its CRLF, within field_size (see Limits).
            field_size = limits.field_size - 2
            special = _SPECIAL_FIELDS.get
            known = _field_names.get
            for line in lines:
                name, colon, value = line.partition(b":")
                lname = known(name)
                if lname is None or not colon:
                    if not colon or _TOKEN.fullmatch(name) is None:
                        raise self._fail(400, self._block_error(block))
                    lname = name.lower()
                    if len(_field_names) < 512:
                        _field_names[name] = lname
                if len(line) > field_size:
                    raise self._fail(431, "header field too large")
                # Only HTAB, SP, visible and obs-text bytes are left (checked
                # above), so trimming the optional whitespace leaves
                # field-content.
                value = value.strip(b" \t")
                headers.append((lname, value))
                kind = special(lname)
                if kind is None:
                    continue
                if kind is _HOST_FIELD:
                    host = value
                    host_count += 1
                elif framing is None:
                    framing = [(kind, value)]
                else:
                    framing.append((kind, value))

        if version is _HTTP_11:
            if host_count != 1:
                raise self._fail(400, "HTTP/1.1 request needs exactly one Host")
        elif host_count > 1:
            raise self._fail(400, "more than one Host")
        if host is not None and not _valid_host(host):
            raise self._fail(400, "invalid Host")
        req.host = host

        if target[:1] == b"/" and b"#" not in target:
            path, _, query = target.partition(b"?")
            req.path = path
            req.query = query
        else:
            self._parse_target(req, target, method)

        self.request = req
        if framing is None:
            req.chunked = False
            req.content_length = None
            req.expect_continue = False
            req.upgrade = None
            req.keep_alive = version is _HTTP_11
            self._state = _END
        else:
            self._frame(req, framing)

    def _frame(self, req: Request, framing: list[tuple[_Sentinel, bytes]]) -> None:
        """Body framing, Expect, keep-alive and Upgrade from the fields that
        decide them; the reader's next state."""
        limits = self.limits
        version = req.http_version
        content_length = None
        te = None
        connection: list[bytes] = []
        expect = None
        upgrade = None
        for kind, value in framing:
            if kind is _CONTENT_LENGTH:
                if content_length is not None:
                    raise self._fail(400, "more than one Content-Length")
                content_length = parse_decimal(value)
                if content_length is None:
                    raise self._fail(400, "invalid Content-Length")
            elif kind is _TRANSFER_ENCODING:
                te = value if te is None else te + b"," + value
            elif kind is _CONNECTION:
                tokens = _split_tokens(value, empty_ok=True)
                if tokens is None:
                    raise self._fail(400, "invalid Connection header")
                connection.extend(tokens)
            elif kind is _EXPECT:
                expect = value if expect is None else expect + b"," + value
            else:
                upgrade = value

        chunked = False
        if te is not None:
            if version is _HTTP_10:
                raise self._fail(400, "Transfer-Encoding in an HTTP/1.0 request")
            if content_length is not None:
                raise self._fail(400, "both Transfer-Encoding and Content-Length")
            codings = _split_tokens(te)
            if codings is None:
                raise self._fail(400, "invalid Transfer-Encoding")
            if codings[-1] != b"chunked":
                if b"chunked" in codings:
                    raise self._fail(400, "chunked is not the final transfer coding")
                raise self._fail(501, "transfer coding not implemented")
            if len(codings) > 1:
                if codings.count(b"chunked") > 1:
                    raise self._fail(400, "chunked applied more than once")
                raise self._fail(501, "transfer coding not implemented")
            chunked = True
        req.chunked = chunked
        req.content_length = content_length
        if limits.body is not None and content_length is not None and content_length > limits.body:
            raise self._fail(413, "request body too large")

        if expect is not None:
            if expect.lower() != b"100-continue":
                raise self._fail(417, "unsupported expectation")
            # A 1.0 client does not know 100 Continue (RFC 9110 10.1.1).
            req.expect_continue = version is _HTTP_11
        else:
            req.expect_continue = False

        if version is _HTTP_11:
            req.keep_alive = b"close" not in connection
        else:
            req.keep_alive = b"keep-alive" in connection and b"close" not in connection
        req.upgrade = upgrade if b"upgrade" in connection else None

        if chunked:
            self._state = _CHUNK_SIZE
            self._body_read = 0
            self._trailers = []
            self._trailer_bytes = 0
        elif content_length:
            self._state = _BODY_LENGTH
            self._remaining = content_length
        else:
            self._state = _END

    def _block_error(self, block: bytes) -> str:
        """Name what is wrong with a header block that did not match."""
        for raw in block.split(b"\r\n")[:-1]:
            if _HEADER_FIELD.fullmatch(raw + b"\r\n"):
                continue
            if raw[:1] in (b" ", b"\t"):
                return "obsolete line folding"
            if b":" not in raw:
                return "header line without a colon"
            name = raw.split(b":", 1)[0]
            if name[-1:] in (b" ", b"\t"):
                return "whitespace before colon"
            if _TOKEN.fullmatch(name) is None:
                return "invalid header name"
            return "invalid header value"
        return "malformed header block"

    def _parse_target(self, req: Request, target: bytes, method: bytes) -> None:
        if target[:1] == b"/":
            path, sep, query = target.partition(b"?")
            if b"#" in target:
                raise self._fail(400, "fragment in request target")
            req.path = path
            req.query = query
            return
        if target == b"*":
            if method != b"OPTIONS":
                raise self._fail(400, "asterisk-form is only for OPTIONS")
            req.path = b"*"
            req.query = b""
            return
        if method == b"CONNECT":
            if _AUTHORITY.fullmatch(target) is None:
                raise self._fail(400, "invalid CONNECT target")
            raise self._fail(501, "CONNECT not implemented")
        m = _ABSOLUTE.fullmatch(target)
        if m is None or b"#" in target:
            raise self._fail(400, "invalid request target")
        scheme, authority, path, query = m.groups()
        scheme = scheme.lower()
        if scheme not in (b"http", b"https") or not authority:
            raise self._fail(400, "invalid absolute-form target")
        if not _valid_host(authority):
            raise self._fail(400, "invalid authority in request target")
        # RFC 9112 3.2.2: the target's authority overrides the Host header.
        req.host = authority
        req.scheme = scheme
        req.path = path or b"/"
        req.query = query or b""

    # -- body ------------------------------------------------------------

    def _read_length_body(self):
        buf = self._buf
        if not buf:
            if self._eof:
                raise self._fail(400, "connection closed inside request body")
            return NEED_DATA
        data = self._take()
        if self._remaining == 0:
            self._state = _END
        return data

    def _take(self) -> bytes:
        """Up to ``_remaining`` body bytes from the buffer (it is not empty)."""
        buf = self._buf
        n = self._remaining
        if len(buf) <= n:
            # A body that came in one read goes on as that very object.
            if type(buf) is bytes:
                data = buf
                self._buf = b""
            else:
                data = bytes(buf)
                buf.clear()
        else:
            data = bytes(buf[:n])
            self._drop(n)
        self._remaining = n - len(data)
        return data

    def _drop(self, n: int) -> None:
        """Consume the first ``n`` buffered bytes."""
        buf = self._buf
        if n >= len(buf):
            self._buf = b""
        elif type(buf) is bytes:
            # From here on a bytearray, whose front is dropped in O(1):
            # a burst of pipelined requests costs linear time.
            self._buf = bytearray(memoryview(buf)[n:])
        else:
            del buf[:n]

    def _mutable(self) -> bytearray:
        """The buffer as a bytearray, for the chunked reader's in-place edits."""
        buf = self._buf
        if type(buf) is bytes:
            buf = self._buf = bytearray(buf)
        return buf  # type: ignore[return-value]

    def _read_chunked(self):
        state = self._state
        buf = self._mutable()
        limits = self.limits
        while True:
            if state is _CHUNK_SIZE:
                i = buf.find(b"\r\n", 0, limits.chunk_line + 2)
                if i < 0:
                    if len(buf) > limits.chunk_line:
                        raise self._fail(400, "chunk size line too long")
                    if _bare_line_end(buf, 0):
                        raise self._fail(400, "chunk line not terminated by CRLF")
                    return self._need()
                m = _CHUNK_LINE.fullmatch(buf, 0, i)
                if m is None:
                    raise self._fail(400, "invalid chunk size line")
                size = parse_hex(m.group(1))
                if size is None:
                    raise self._fail(400, "chunk size too large")
                del buf[:i + 2]
                if size == 0:
                    state = self._state = _TRAILERS
                    continue
                self._body_read += size
                if limits.body is not None and self._body_read > limits.body:
                    raise self._fail(413, "request body too large")
                self._remaining = size
                state = self._state = _CHUNK_DATA
            elif state is _CHUNK_DATA:
                if not buf:
                    return self._need()
                data = self._take()
                if self._remaining == 0:
                    self._state = _CHUNK_CRLF
                return data
            elif state is _CHUNK_CRLF:
                if len(buf) < 2:
                    if buf and buf[0] != 13:
                        raise self._fail(400, "chunk data not followed by CRLF")
                    return self._need()
                if buf[0] != 13 or buf[1] != 10:
                    raise self._fail(400, "chunk data not followed by CRLF")
                del buf[:2]
                state = self._state = _CHUNK_SIZE
            elif state is _TRAILERS:
                i = buf.find(b"\r\n")
                if i < 0 or i >= limits.field_size:
                    if len(buf) > limits.field_size:
                        # Too large before its end, as it would be found
                        # byte by byte, whether its end is here or not.
                        raise self._too_large(431, "trailer field too large",
                                              limits.field_size)
                    if _bare_line_end(buf, 0):
                        raise self._fail(400, "trailer not terminated by CRLF")
                    return self._need()
                if i == 0:
                    del buf[:2]
                    self._state = _DONE
                    if self._trailers:
                        return EndOfMessage(self._trailers)
                    return _END_OF_MESSAGE
                line = bytes(buf[:i + 2])
                if _BAD_LINE_END.search(line, 0, i) is not None:
                    raise self._fail(400, "trailer not terminated by CRLF")
                m = _HEADER_FIELD.fullmatch(line)
                if m is None:
                    raise self._fail(400, "invalid trailer field")
                name = m.group(1).lower()
                if name in _FORBIDDEN_TRAILERS:
                    raise self._fail(400, "forbidden trailer field")
                self._trailer_bytes += len(line)
                if (len(line) > limits.field_size
                        or self._trailer_bytes > limits.trailer_size):
                    raise self._fail(431, "trailer section too large")
                self._trailers.append((name, m.group(2)))
                if len(self._trailers) > limits.fields:
                    raise self._fail(431, "too many trailer fields")
                del buf[:i + 2]
            else:  # pragma: no cover - states are exhaustive
                raise AssertionError(state)

    def _need(self):
        if self._eof:
            raise self._fail(400, "connection closed inside request body")
        return NEED_DATA

