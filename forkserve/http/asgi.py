"""ASGI glue, sans-I/O: the HTTP scope from a request, the response head
from ``http.response.start``, and the checks on what an app sends.

Message validation lives here, so that the protocol code in the workers only
moves bytes and events; every check raises :class:`ResponseError` (a 500,
or a close once the head is out) with a message naming what was wrong.
"""

from __future__ import annotations

from typing import Any, Iterable
from urllib.parse import unquote

from .proxy import Forwarded
from .request import Request, parse_decimal
from .response import OWS, ResponseError, check_header, date_header, status_line

__all__ = ["ASGI_VERSION", "ClientDisconnected", "http_scope", "ResponseHead", "build_head",
           "head_bytes", "body_bytes", "header_pairs", "accepts_trailers", "ws_payload",
           "ws_close_args"]


class ClientDisconnected(OSError):
    """``send()`` on a connection that is gone (ASGI spec 2.4: a
    server-specific subclass of OSError, which the server does not log)."""

ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}
_WS_ASGI = {"version": "3.0", "spec_version": "2.4"}


def _decode_path(raw: bytes) -> str:
    # raw is visible ASCII (the reader refuses anything else), so decoding
    # as ASCII cannot fail; percent-escapes are UTF-8 as the spec says.
    text = raw.decode("ascii")
    return unquote(text) if "%" in text else text


def http_scope(req: Request, server: tuple[str, int | None] | None,
               client: tuple[str, int] | None, forwarded: Forwarded, root_path: str,
               state: dict[str, Any] | None, websocket: bool = False,
               tls: bool = False) -> dict[str, Any]:
    """The scope for one HTTP (or WebSocket) request, per the ASGI spec;
    ``tls``: the connection is TLS (https, wss), unless a trusted proxy
    says otherwise."""
    if forwarded.client is not None:
        client = (forwarded.client, 0)
    if websocket:
        secure = forwarded.scheme == "https" if forwarded.scheme else tls
        scheme = "wss" if secure else "ws"
    else:
        scheme = forwarded.scheme or (req.scheme.decode("ascii") if req.scheme else
                                      "https" if tls else "http")
    headers = req.headers
    if forwarded.host is not None:
        headers = [(n, v) for n, v in headers if n != b"host"] + [(b"host", forwarded.host)]
    scope: dict[str, Any] = {
        "type": "websocket" if websocket else "http",
        "asgi": _WS_ASGI if websocket else ASGI_VERSION,
        "http_version": "1.1" if req.http_version == b"1.1" else "1.0",
        "scheme": scheme,
        "path": root_path + _decode_path(req.path),
        "raw_path": req.path,
        "query_string": req.query,
        "root_path": root_path,
        "headers": headers,
        "client": client,
        "server": server,
        "extensions": {"websocket.http.response": {}} if websocket else
        {"http.response.trailers": {}, "http.response.pathsend": {}},
    }
    if not websocket:
        scope["method"] = req.method.decode("ascii")
    else:
        scope["subprotocols"] = _subprotocols(req.headers)
    if state is not None:
        scope["state"] = state.copy()
    return scope


def _subprotocols(headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
    out: list[str] = []
    for name, value in headers:
        if name == b"sec-websocket-protocol":
            out.extend(p.strip(b" \t").decode("latin-1") for p in value.split(b",") if p.strip(b" \t"))
    return out


class ResponseHead:
    """What ``http.response.start`` said, validated and encoded."""

    __slots__ = ("status", "lines", "pairs", "content_length", "close", "trailers", "server")

    def __init__(self) -> None:
        self.status = 200
        self.lines: list[bytes] = []
        # As the app gave them (for the access log and post_request).
        self.pairs: list[tuple[bytes, bytes]] = []
        self.content_length: int | None = None
        self.close = False
        self.trailers = False
        self.server = False  # the app sent its own Server header


# Validated header lines by (name, value): an app sends the same few headers
# on every response.  Each entry is (lowercased name, encoded line, the
# parsed value of a content-length, else None).  Bounded: values can vary.
_HEADER_CACHE: dict[tuple[bytes, bytes], tuple[bytes, bytes, int | None]] = {}
_FRAMING = frozenset({b"content-length", b"connection", b"transfer-encoding", b"server"})


def _header_entry(name: Any, value: Any, item: Any) -> tuple[bytes, bytes, int | None]:
    if type(name) is not bytes or type(value) is not bytes:
        raise ResponseError(f"header name and value must be bytes, got {item!r}")
    trimmed = value.strip(OWS)
    check_header(name, trimmed)
    lname = name.lower()
    length = None
    if lname == b"content-length":
        length = parse_decimal(trimmed)
        if length is None:
            raise ResponseError(f"invalid content-length {value!r}")
    entry = (lname, name + b": " + trimmed + b"\r\n", length)
    if len(_HEADER_CACHE) < 2048:
        _HEADER_CACHE[(name, value)] = entry
    return entry


def build_head(message: dict[str, Any]) -> ResponseHead:
    """Validate an ``http.response.start`` message; ResponseError if bad."""
    head = ResponseHead()
    status = message.get("status")
    # RFC 9110 section 15: 100-599; a 1xx is never the final response.
    if type(status) is not int or not 200 <= status <= 599:
        raise ResponseError(f"invalid status {status!r}: an int from 200 to 599 is required")
    head.status = status
    if message.get("trailers", False):
        head.trailers = True
    lines = head.lines
    pairs = head.pairs
    cached = _HEADER_CACHE.get
    headers = message.get("headers", ())
    if isinstance(headers, (bytes, str, dict)):
        raise ResponseError(f"headers must be an iterable of [name, value] pairs, got {type(headers).__name__}")
    try:
        headers = iter(headers)
    except TypeError:
        raise ResponseError(f"headers must be an iterable of [name, value] pairs, got {type(headers).__name__}") from None
    for item in headers:
        try:
            name, value = item
        except (TypeError, ValueError):
            raise ResponseError(f"header must be a (name, value) pair, got {item!r}") from None
        try:
            entry = cached((name, value))
        except TypeError:
            raise ResponseError(f"header name and value must be bytes, got {item!r}") from None
        if entry is None:
            entry = _header_entry(name, value, item)
        pairs.append((name, value))
        lname, line, length = entry
        if lname in _FRAMING:
            if length is not None:
                if head.content_length is not None:
                    raise ResponseError("more than one content-length")
                head.content_length = length
                continue  # written with the framing decision
            if lname == b"connection":
                if b"close" in value.lower():
                    head.close = True
                continue
            if lname == b"transfer-encoding":
                continue  # framing is ours
            head.server = True
        lines.append(line)
    return head


def head_bytes(head: ResponseHead, framing: bytes, close: bool) -> bytes:
    """The response head on the wire; ``framing`` is a content-length or
    transfer-encoding line (or b"")."""
    return b"".join((
        status_line(b"1.1", head.status),
        b"" if head.server else b"server: forkserve\r\n",
        date_header(),
        b"".join(head.lines),
        framing,
        b"connection: close\r\n\r\n" if close else b"\r\n",
    ))


def body_bytes(message: dict[str, Any], key: str = "body") -> bytes:
    """The byte string under ``key`` (default ``b""``); ResponseError if it
    is of another type (a str is the usual mistake)."""
    body = message.get(key, b"")
    if type(body) is bytes:
        return body
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    raise ResponseError(f"{message.get('type')} {key!r} must be bytes, got {type(body).__name__}")


def header_pairs(headers: Any, what: str) -> list[tuple[bytes, bytes]]:
    """``[name, value]`` pairs of valid field lines (trailers, a WebSocket
    accept's headers), as tuples; ResponseError otherwise."""
    if isinstance(headers, (bytes, str, dict)):
        raise ResponseError(f"{what} headers must be [name, value] pairs, got {type(headers).__name__}")
    pairs = []
    try:
        for item in headers:
            name, value = item
            if type(name) is not bytes or type(value) is not bytes:
                raise ResponseError(f"{what} header name and value must be bytes, got {item!r}")
            check_header(name, value)
            pairs.append((name, value))
    except (TypeError, ValueError):
        raise ResponseError(f"{what} headers must be [name, value] pairs of bytes") from None
    return pairs


def accepts_trailers(req: Request) -> bool:
    """Whether the client said ``TE: trailers`` (the trailers extension
    sends them only then)."""
    for name, value in req.headers:
        if name == b"te":
            for item in value.split(b","):
                if item.split(b";", 1)[0].strip(b" \t").lower() == b"trailers":
                    return True
    return False


# RFC 6455 section 7.4: the close codes an endpoint may send.  1005, 1006
# and 1015 are for reporting only; the rest of 1000-2999 is unassigned.
_SENDABLE_CLOSE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                             1013, 1014})


def ws_payload(message: dict[str, Any]) -> str | bytes:
    """What a ``websocket.send`` carries: exactly one of ``text`` (str) and
    ``bytes`` (bytes); ResponseError otherwise."""
    text = message.get("text")
    data = message.get("bytes")
    if (text is None) == (data is None):
        raise ResponseError("websocket.send needs exactly one of 'bytes' and 'text'")
    if text is not None:
        if type(text) is not str:
            raise ResponseError(f"websocket.send 'text' must be str, got {type(text).__name__}")
        return text
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if type(data) is not bytes:
        raise ResponseError(f"websocket.send 'bytes' must be bytes, got {type(data).__name__}")
    return data


def ws_close_args(message: dict[str, Any]) -> tuple[int, str]:
    """The code (default 1000) and reason of a ``websocket.close``, valid
    to send (RFC 6455 sections 5.5.1 and 7.4); ResponseError otherwise."""
    code = message.get("code")
    if code is None:
        code = 1000
    if type(code) is not int or not (code in _SENDABLE_CLOSE or 3000 <= code <= 4999):
        raise ResponseError(f"websocket.close code {code!r} cannot be sent (RFC 6455 7.4: "
                            f"1000-1003, 1007-1014 or 3000-4999)")
    reason = message.get("reason")
    if reason is None:
        reason = ""
    if type(reason) is not str:
        raise ResponseError(f"websocket.close reason must be str, got {type(reason).__name__}")
    if len(reason.encode("utf-8")) > 123:
        raise ResponseError("websocket.close reason is longer than 123 bytes (RFC 6455 5.5)")
    return code, reason
