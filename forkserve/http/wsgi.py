"""PEP 3333 glue: the environ, ``wsgi.input``, ``start_response`` and
response framing, independent of how bytes reach the socket.

The worker passes in two callables: ``fill()`` returns the next piece of the
request body (``b""`` at its end) and ``send(data)`` writes bytes to the
client.  Everything WSGI-specific lives here; the worker only moves bytes.
"""

from __future__ import annotations

import io
import os
import sys
from typing import Any, Callable
from urllib.parse import unquote_to_bytes

from .proxy import Forwarded
from .request import Request, parse_decimal
from .response import (LAST_CHUNK, ResponseError, body_allowed, check_header,
                       chunk, date_header, status_line)

__all__ = ["FileWrapper", "WSGIInput", "WSGIResponse", "base_environ", "build_environ"]


class FileWrapper:
    """``wsgi.file_wrapper``: lets the worker send a file with sendfile()."""

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def fileno(self) -> int | None:
        """The file's descriptor if it has a usable one, else None."""
        try:
            fd = self.filelike.fileno()
            os.fstat(fd)
            return fd
        except (AttributeError, OSError, io.UnsupportedOperation):
            return None

    def __iter__(self):
        read = self.filelike.read
        while True:
            data = read(self.blksize)
            if not data:
                return
            yield data


class WSGIInput:
    """``wsgi.input``: the request body, read on demand from the connection."""

    def __init__(self, fill: Callable[[], bytes]) -> None:
        self._fill = fill
        self._buf = bytearray()
        self._done = False

    def _more(self) -> bool:
        if self._done:
            return False
        data = self._fill()
        if not data:
            self._done = True
            return False
        self._buf += data
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._more():
                pass
            data = bytes(self._buf)
            self._buf.clear()
            return data
        while len(self._buf) < size and self._more():
            pass
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        limit = size if size is not None and size >= 0 else None
        start = 0
        while True:
            i = self._buf.find(b"\n", start)
            if i >= 0:
                end = i + 1
                break
            if limit is not None and len(self._buf) >= limit:
                end = limit
                break
            start = len(self._buf)
            if not self._more():
                end = len(self._buf)
                break
        if limit is not None:
            end = min(end, limit)
        data = bytes(self._buf[:end])
        del self._buf[:end]
        return data

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def drain(self, limit: int) -> bool:
        """Read and drop the unread body, up to ``limit`` bytes; True if all of it."""
        self._buf.clear()
        total = 0
        while self._more():
            total += len(self._buf)
            self._buf.clear()
            if total > limit:
                return False
        return True


def base_environ(server_name: str, server_port: str, multithread: bool,
                 script_name: str) -> dict[str, Any]:
    """The per-worker constant part of every environ."""
    return {
        "wsgi.version": (1, 0),
        "wsgi.multithread": multithread,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.errors": sys.stderr,
        "wsgi.file_wrapper": FileWrapper,
        "wsgi.input_terminated": True,
        "SERVER_SOFTWARE": "forkserve",
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "SCRIPT_NAME": script_name,
    }


# Precomputed CGI names for the common headers; others are derived once and
# cached (bounded: names come from clients).
_CGI_NAMES: dict[bytes, str] = {}


def _cgi_name(name: bytes) -> str | None:
    key = _CGI_NAMES.get(name)
    if key is None:
        # "_" in a name would collide with "-" after the conversion:
        # X-Forwarded_For must not be able to pose as X-Forwarded-For.
        if b"_" in name:
            return None
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        if len(_CGI_NAMES) < 4096:
            _CGI_NAMES[name] = key
    return key


def build_environ(base: dict[str, Any], req: Request, wsgi_input: WSGIInput,
                  peer: tuple[str, int] | None, forwarded: Forwarded) -> dict[str, Any]:
    """The environ for one request (PEP 3333).  ``forwarded`` is what a
    trusted proxy said about the client (see http/proxy.py)."""
    environ = base.copy()
    url_scheme = forwarded.scheme or req.scheme and req.scheme.decode("ascii") or "http"
    script_name = base["SCRIPT_NAME"]
    path = unquote_to_bytes(req.path).decode("latin-1") if b"%" in req.path else req.path.decode("latin-1")
    if script_name and (path == script_name or path.startswith(script_name + "/")):
        path = path[len(script_name):]
    environ["REQUEST_METHOD"] = req.method.decode("latin-1")
    environ["PATH_INFO"] = path
    environ["QUERY_STRING"] = req.query.decode("latin-1")
    environ["RAW_URI"] = req.target.decode("latin-1")
    environ["REQUEST_URI"] = environ["RAW_URI"]
    environ["SERVER_PROTOCOL"] = "HTTP/1.1" if req.http_version == b"1.1" else "HTTP/1.0"
    environ["wsgi.input"] = wsgi_input
    environ["wsgi.url_scheme"] = url_scheme
    if forwarded.client is not None:
        environ["REMOTE_ADDR"] = forwarded.client
        environ["REMOTE_PORT"] = "0"
    elif peer:
        environ["REMOTE_ADDR"] = peer[0]
        environ["REMOTE_PORT"] = str(peer[1])
    else:
        environ["REMOTE_ADDR"] = ""
    for name, value in req.headers:
        if name == b"content-type":
            environ["CONTENT_TYPE"] = value.decode("latin-1")
            continue
        if name == b"content-length":
            environ["CONTENT_LENGTH"] = value.decode("latin-1")
            continue
        key = _cgi_name(name)
        if key is None:
            continue
        text = value.decode("latin-1")
        old = environ.get(key)
        environ[key] = text if old is None else old + "," + text
    raw_host = forwarded.host if forwarded.host is not None else req.host
    if raw_host is not None:
        host = raw_host.decode("latin-1")
        environ["HTTP_HOST"] = host
        if host:
            name, sep, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
            if sep and "]" not in port:
                environ["SERVER_NAME"], environ["SERVER_PORT"] = name, port or environ["SERVER_PORT"]
            else:
                environ["SERVER_NAME"] = host
                environ["SERVER_PORT"] = "443" if url_scheme == "https" else "80"
    return environ


_HOP_BY_HOP = frozenset({b"keep-alive", b"proxy-connection", b"transfer-encoding",
                         b"te", b"trailer", b"upgrade", b"proxy-authenticate",
                         b"proxy-authorization"})


_HEADER_CACHE: dict[tuple[str, str], tuple[bytes, bytes, bytes]] = {}


def _encode_header(item: Any) -> tuple[bytes, bytes, bytes]:
    """Validate one (name, value) from start_response: (name, value, lower name)."""
    if not isinstance(item, tuple) or len(item) != 2:
        raise ResponseError(f"header must be a (name, value) tuple, got {item!r}")
    name, value = item
    if type(name) is not str or type(value) is not str:
        raise ResponseError(f"header name and value must be str, got {item!r}")
    try:
        bname = name.encode("latin-1")
        bvalue = value.encode("latin-1")
    except UnicodeEncodeError:
        raise ResponseError(f"header {name!r} is not latin-1") from None
    check_header(bname, bvalue)
    return bname, bvalue, bname.lower()


class WSGIResponse:
    """``start_response``, ``write()`` and framing for one exchange.

    ``send`` writes bytes to the client.  The head is held back until the
    first non-empty body data (PEP 3333), so a small response goes out in a
    single write together with its head.
    """

    __slots__ = ("send", "method", "version", "keep_alive", "status", "status_code",
                 "headers", "content_length", "chunked", "head_sent", "sent",
                 "must_close", "_started", "_body_allowed", "_written")

    def __init__(self, send: Callable[[bytes], None], req: Request, keep_alive: bool) -> None:
        self.send = send
        self.method = req.method
        self.version = req.http_version
        self.keep_alive = keep_alive
        self.status = b""
        self.status_code = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.content_length: int | None = None
        self.chunked = False
        self.head_sent = False
        self.sent = 0            # body bytes sent, for the access log
        self.must_close = False
        self._started = False
        self._body_allowed = True
        self._written = 0        # body bytes counted against Content-Length

    def start_response(self, status: str, headers: list[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        """PEP 3333 ``start_response``."""
        if exc_info:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self._started:
            raise AssertionError("start_response() called twice without exc_info")
        if not isinstance(status, str):
            raise ResponseError(f"status must be a str, got {status!r}")
        try:
            raw_status = status.encode("latin-1")
        except UnicodeEncodeError:
            raise ResponseError(f"status is not latin-1: {status!r}") from None
        code_text = raw_status[:3]
        if len(raw_status) < 4 or not code_text.isdigit() or raw_status[3:4] != b" " or code_text[:1] == b"0":
            raise ResponseError(f"invalid status {status!r}")
        code = (code_text[0] - 48) * 100 + (code_text[1] - 48) * 10 + (code_text[2] - 48)
        # Always HTTP/1.1: the version we conform to (RFC 9110 6.2); a 1.0
        # client still gets 1.0 framing (no chunking).
        line = status_line(b"1.1", code, raw_status[4:])
        out: list[tuple[bytes, bytes]] = []
        content_length = None
        if not isinstance(headers, list):
            raise ResponseError(f"headers must be a list, got {type(headers).__name__}")
        cache = _HEADER_CACHE
        for item in headers:
            # Apps send the same few headers again and again: each distinct
            # (name, value) is validated and encoded once.
            cached = cache.get(item) if type(item) is tuple else None
            if cached is None:
                cached = _encode_header(item)
                if len(cache) < 2048:
                    cache[item] = cached
            bname, bvalue, lname = cached
            if lname == b"content-length":
                if content_length is not None:
                    raise ResponseError("more than one Content-Length")
                content_length = parse_decimal(bvalue)
                if content_length is None:
                    raise ResponseError(f"invalid Content-Length {bvalue!r}")
            elif lname == b"connection":
                if b"close" in bvalue.lower():
                    self.keep_alive = False
                continue
            elif lname in _HOP_BY_HOP:
                # Framing and connection management are the server's job.
                continue
            out.append((bname, bvalue))
        self.status = line
        self.status_code = code
        self.headers = out
        self.content_length = content_length
        self._body_allowed = body_allowed(self.method, code)
        self._started = True
        return self.write

    def _head(self, body_len_hint: int | None) -> bytes:
        """The response head, deciding framing now that it must be sent."""
        headers = self.headers
        parts = [self.status]
        names = set()
        for name, value in headers:
            names.add(name.lower())
            parts.append(name + b": " + value + b"\r\n")
        if b"server" not in names:
            parts.append(b"server: forkserve\r\n")
        if b"date" not in names:
            parts.append(date_header())
        if self.content_length is None and self._body_allowed:
            if body_len_hint is not None:
                self.content_length = body_len_hint
                parts.append(b"content-length: %d\r\n" % body_len_hint)
            elif self.version == b"1.1":
                self.chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
            else:
                self.keep_alive = False  # the end of the body is the close
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        elif self.version == b"1.0":
            parts.append(b"connection: keep-alive\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def write(self, data: bytes, body_len_hint: int | None = None) -> None:
        """The PEP 3333 ``write()`` callable, also used for the iterable."""
        if not self._started:
            raise AssertionError("write() before start_response()")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ResponseError(f"response body must be bytes, got {type(data).__name__}")
        if not self.head_sent:
            head = self._head(body_len_hint)
            self.head_sent = True
            if not data or not self._body_allowed:
                self.send(head)
                return
            self.send(head + self._frame(data))
            return
        if data and self._body_allowed:
            self.send(self._frame(data))

    def _frame(self, data: bytes) -> bytes:
        n = len(data)
        if self.content_length is not None:
            left = self.content_length - self._written
            if n > left:
                # The app sent more than it announced: never let the extra
                # bytes reach the client as the start of another response.
                data = data[:left]
                n = left
                self.must_close = True
            self._written += n
            self.sent += n
            return bytes(data)
        self.sent += n
        if self.chunked:
            return chunk(bytes(data))
        return bytes(data)

    def finish(self) -> None:
        """End the body: head if not sent yet, last chunk, framing checks."""
        if not self.head_sent:
            self.write(b"", body_len_hint=0)
        if self.chunked:
            self.send(LAST_CHUNK)
        elif (self._body_allowed and self.content_length is not None
              and self._written < self.content_length):
            # Fewer bytes than announced: the client would wait forever for
            # the rest, or read our next response as body.
            self.must_close = True

    def sendfile_plan(self, wrapper: FileWrapper) -> tuple[int, int, int] | None:
        """For a file response: (fd, offset, count) to pass to sendfile, or
        None when the iterable must be used.  Sends the head."""
        fd = wrapper.fileno()
        if fd is None or self.chunked or not self._body_allowed:
            return None
        try:
            offset = os.lseek(fd, 0, os.SEEK_CUR)
            size = os.fstat(fd).st_size - offset
        except OSError:
            return None
        if size < 0:
            return None
        count = size if self.content_length is None else min(size, self.content_length)
        if self.head_sent:
            return None
        self.send(self._head(count))
        self.head_sent = True
        self._written += count
        self.sent += count
        return fd, offset, count

    @property
    def close_after(self) -> bool:
        """True when the connection must be closed after this response."""
        return self.must_close or not self.keep_alive
