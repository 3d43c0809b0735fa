"""Response heads and body framing, sans-I/O.

Heads are built from cached bytes: status lines are made once per status,
the Date header once a second.  Every header name and value an application
gives is checked here, so no application can split a response with CR or
LF, whichever worker serves it.
"""

from __future__ import annotations

import re
import time
from email.utils import formatdate
from http import HTTPStatus

__all__ = [
    "OWS", "ResponseError", "status_line", "date_header", "check_header",
    "body_allowed", "chunk", "LAST_CHUNK", "error_response",
]


#: Optional whitespace around a field value (RFC 9110 section 5.6.3): not
#: part of the value, so an app's leading or trailing SP/HTAB is trimmed
#: (Django's Set-Cookie values start with a space).
OWS = b" \t"


class ResponseError(Exception):
    """The application's response is not valid HTTP; answered with a 500."""


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# field-value: visible bytes, obs-text, SP and HTAB; no CR, LF, NUL or other
# controls (RFC 9110 section 5.5).
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_REASON = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")

_STATUS_LINES: dict[tuple[bytes, int, bytes | None], bytes] = {}
# The common case, HTTP/1.1 with the standard reason, keyed by code alone.
_STATUS_LINES_11: dict[int, bytes] = {}


def status_line(version: bytes, code: int, reason: bytes | None = None) -> bytes:
    """``HTTP/1.1 200 OK\\r\\n``, cached."""
    if reason is None and version == b"1.1":
        line = _STATUS_LINES_11.get(code)
        if line is not None:
            return line
    key = (version, code, reason)
    line = _STATUS_LINES.get(key)
    if line is None:
        if not 100 <= code <= 999:
            raise ResponseError(f"invalid status code {code!r}")
        if reason is None:
            try:
                reason = HTTPStatus(code).phrase.encode("ascii")
            except ValueError:
                reason = b""
        if _REASON.fullmatch(reason) is None:
            raise ResponseError(f"invalid reason phrase {reason!r}")
        line = b"HTTP/%s %d %s\r\n" % (version, code, reason)
        if len(_STATUS_LINES) < 1024:
            _STATUS_LINES[key] = line
            if key[0] == b"1.1" and key[2] is None:
                _STATUS_LINES_11[code] = line
    return line


_date_second = 0
_date_header = b""


def date_header() -> bytes:
    """``date: <IMF-fixdate>\\r\\n``, recomputed at most once a second."""
    global _date_second, _date_header
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date_header = b"date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"
    return _date_header


def check_header(name: bytes, value: bytes) -> None:
    """Raise ResponseError unless ``name: value`` is a valid field line."""
    if _TOKEN.fullmatch(name) is None:
        raise ResponseError(f"invalid response header name {name!r}")
    if _FIELD_VALUE.fullmatch(value) is None:
        raise ResponseError(f"invalid character in response header {name!r}")


def body_allowed(method: bytes, status: int) -> bool:
    """False for HEAD, 1xx, 204 and 304: no body, no framing headers added."""
    return not (method == b"HEAD" or status < 200 or status in (204, 304))


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def error_response(status: int, version: bytes = b"1.1", close: bool = True) -> bytes:
    """A complete small text response that forkserve itself sends."""
    phrase = HTTPStatus(status).phrase.encode("ascii")
    body = b"%d %s\n" % (status, phrase)
    return b"".join((
        status_line(version if version in (b"1.0", b"1.1") else b"1.1", status),
        b"server: forkserve\r\n",
        date_header(),
        b"content-type: text/plain; charset=utf-8\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n" if close else b"",
        b"\r\n",
        body,
    ))
