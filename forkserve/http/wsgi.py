"""PEP 3333 glue: the environ, ``wsgi.input`` and ``start_response``,
independent of how bytes reach the socket.

The worker passes in two callables: ``fill()`` returns the next piece of the
request body (``b""`` at its end) and ``send(data)`` writes bytes to the
client.  Everything WSGI-specific lives here; the body framing and the
keep-alive decision are the connection core's (``http/framing.py``,
``http/connection.py``), recorded on the exchange's
:class:`~forkserve.http.connection.Exchange`; the worker only moves bytes.

``send`` may fail with an ``OSError`` carrying ``written``, the bytes of
that write that did reach the client: the exchange then counts exactly the
body bytes sent (the access log's ``%(B)s`` for an aborted download).
"""

from __future__ import annotations

import io
import logging
import os
import threading
from typing import Any, Callable, Iterable
from urllib.parse import unquote_to_bytes

from .connection import Close, Exchange
from .framing import BodyFramer
from .proxy import Forwarded
from .request import Request, parse_decimal
from .response import OWS, ResponseError, check_header, date_header, status_line

__all__ = ["ErrorStream", "FileWrapper", "WSGIInput", "WSGIResponse", "base_environ",
           "build_environ"]


class ErrorStream:
    """``wsgi.errors``: what the app writes goes to the error log.

    As in gunicorn, that is the ``errorlog`` destination, not the process's
    stderr.  It also goes through the error log's non-blocking writer: a
    stderr pipe that nobody drains (a stalled journal, a closed terminal)
    must not stop a worker in the middle of a request.  Text is logged a
    line at a time; a partial line waits for its newline, ``flush()`` or
    ``_PENDING_MAX`` characters, whichever comes first.
    """

    _PENDING_MAX = 16384

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._lock = threading.Lock()  # threads of one worker share it
        self._pending = ""

    def write(self, text: str) -> int:
        """Write ``text`` (a str: PEP 3333 makes this a text stream)."""
        if not isinstance(text, str):
            raise TypeError(f"wsgi.errors.write() needs str, not {type(text).__name__}")
        size = len(text)
        with self._lock:
            text = self._pending + text
            # Without a newline, rpartition leaves everything in ``rest``.
            done, _, rest = text.rpartition("\n")
            if len(rest) >= self._PENDING_MAX:
                done, rest = text, ""
            self._pending = rest
        if done:
            self._log.error("%s", done)
        return size

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with self._lock:
            text, self._pending = self._pending, ""
        if text:
            self._log.error("%s", text)


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
                 script_name: str, errors: ErrorStream,
                 url_scheme: str = "http") -> dict[str, Any]:
    """The per-worker constant part of every environ; ``url_scheme`` is the
    listeners' (https with TLS), which a trusted proxy's header overrides."""
    return {
        "wsgi.url_scheme": url_scheme,
        "wsgi.version": (1, 0),
        "wsgi.multithread": multithread,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.errors": errors,
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
    url_scheme = forwarded.scheme or req.scheme and req.scheme.decode("ascii") or \
        base["wsgi.url_scheme"]
    script_name = base["SCRIPT_NAME"]
    for name, value in forwarded.extra:
        if name == b"script_name":  # a trusted proxy mounts the app (forwarder_headers)
            script_name = value.decode("latin-1").rstrip("/")
    path = unquote_to_bytes(req.path).decode("latin-1") if b"%" in req.path else req.path.decode("latin-1")
    if script_name and (path == script_name or path.startswith(script_name + "/")):
        path = path[len(script_name):]
    environ["REQUEST_METHOD"] = req.method.decode("latin-1")
    environ["PATH_INFO"] = path
    environ["SCRIPT_NAME"] = script_name
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
    for name, value in forwarded.extra:
        # Names with '_' that _cgi_name keeps out, let in by forwarder_headers.
        key = "HTTP_" + name.decode("latin-1").upper()
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

# What start_response does with a header, by lowercased name.
_KEEP, _LENGTH, _CONNECTION, _DROP, _SERVER, _DATE = range(6)
_ROLE = dict.fromkeys(_HOP_BY_HOP, _DROP)
_ROLE.update({b"content-length": _LENGTH, b"connection": _CONNECTION,
              b"server": _SERVER, b"date": _DATE})

# Validated headers by their (name, value) from the app: an app sends the
# same few headers again and again, so each is checked, trimmed and encoded
# once.  Entry: (name, value, role, the field line for the head).
_HEADER_CACHE: dict[tuple[str, str], tuple[bytes, bytes, int, bytes]] = {}
def _encode_header(item: Any) -> tuple[bytes, bytes, int, bytes]:
    """Validate one (name, value) from start_response; see _HEADER_CACHE."""
    if not isinstance(item, tuple) or len(item) != 2:
        raise ResponseError(f"header must be a (name, value) tuple, got {item!r}")
    name, value = item
    if type(name) is not str or type(value) is not str:
        raise ResponseError(f"header name and value must be str, got {item!r}")
    try:
        bname = name.encode("latin-1")
        # Leading and trailing SP/HTAB are not part of a field value (RFC
        # 9110 section 5.5): " a=1" from the app goes out as "name: a=1".
        bvalue = value.encode("latin-1").strip(OWS)
    except UnicodeEncodeError:
        raise ResponseError(f"header {name!r} is not latin-1") from None
    check_header(bname, bvalue)
    role = _ROLE.get(bname.lower(), _KEEP)
    entry = (bname, bvalue, role, bname + b": " + bvalue + b"\r\n")
    if len(_HEADER_CACHE) < 2048:
        _HEADER_CACHE[item] = entry
    return entry


class WSGIResponse:
    """``start_response``, ``write()`` and the body of one exchange.

    ``send`` writes bytes to the client.  The head is held back until the
    first non-empty body data (PEP 3333), so a small response goes out in a
    single write together with its head.  Status, headers, bytes sent and
    any reason to close the connection are recorded on ``ex``.
    """

    __slots__ = ("send", "ex", "method", "version", "status", "lines", "content_length",
                 "framer", "head_sent", "_started", "_own_server", "_own_date")

    def __init__(self, send: Callable[[bytes], None], ex: Exchange) -> None:
        self.send = send
        self.ex = ex
        req = ex.request
        self.method = req.method
        self.version = req.http_version
        self.status = b""
        self.lines: list[bytes] = []
        self.content_length: int | None = None
        self.framer: BodyFramer | None = None
        self.head_sent = False
        self._started = False
        self._own_server = False
        self._own_date = False

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
        reason = raw_status[4:]
        # Always HTTP/1.1: the version we conform to (RFC 9110 6.2); a 1.0
        # client still gets 1.0 framing (no chunking).
        line = status_line(b"1.1", code, reason)
        if not isinstance(headers, list):
            raise ResponseError(f"headers must be a list, got {type(headers).__name__}")
        out: list[tuple[bytes, bytes]] = []
        lines: list[bytes] = []
        content_length = None
        own_server = own_date = False
        close = False
        cache = _HEADER_CACHE
        for item in headers:
            cached = cache.get(item) if type(item) is tuple else None
            if cached is None:
                cached = _encode_header(item)
            bname, bvalue, role, field_line = cached
            if role:
                if role == _LENGTH:
                    if content_length is not None:
                        raise ResponseError("more than one Content-Length")
                    content_length = parse_decimal(bvalue)
                    if content_length is None:
                        raise ResponseError(f"invalid Content-Length {bvalue!r}")
                    out.append((bname, bvalue))
                    continue  # written by the framing
                if role == _CONNECTION:
                    if b"close" in bvalue.lower():
                        close = True
                    continue
                if role == _DROP:
                    # Framing and connection management are the server's job.
                    continue
                if role == _SERVER:
                    own_server = True
                else:
                    own_date = True
            out.append((bname, bvalue))
            lines.append(field_line)
        # Only a successful start_response replaces the previous one (an
        # error page after exc_info).
        self.status = line
        self.lines = lines
        self.content_length = content_length
        self._own_server = own_server
        self._own_date = own_date
        ex = self.ex
        ex.set_status(code, reason)
        ex.response_headers = out
        if close:
            ex.close_because(Close.APP)
        self._started = True
        return self.write

    def _head(self, body_length: int | None) -> bytes:
        """The response head, deciding the framing now that it must be sent."""
        ex = self.ex
        framer = self.framer = BodyFramer(self.method, self.version, ex.status_code,
                                          self.content_length, body_length)
        if framer.must_close:
            ex.close_because(Close.FRAMING)  # close-delimited
        self.head_sent = ex.head_sent = True
        if ex.closes():
            connection = b"connection: close\r\n\r\n"
        elif self.version == b"1.0":
            connection = b"connection: keep-alive\r\n\r\n"
        else:
            connection = b"\r\n"
        return b"".join((
            self.status,
            b"".join(self.lines),
            b"" if self._own_server else b"server: forkserve\r\n",
            b"" if self._own_date else date_header(),
            framer.header,
            connection,
        ))

    def write(self, data: bytes, body_length: int | None = None) -> None:
        """The PEP 3333 ``write()`` callable, also used for the iterable.
        ``body_length``: this is the whole body (Content-Length framing)."""
        if not self._started:
            raise AssertionError("write() before start_response()")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ResponseError(f"response body must be bytes, got {type(data).__name__}")
        if self.head_sent:
            if data:
                framer = self.framer
                self._send(framer.frame(data), 0, framer.framed)  # type: ignore[union-attr]
            return
        head = self._head(body_length)
        framer = self.framer
        if data:
            self._send(head + framer.frame(data), len(head), framer.framed)  # type: ignore[union-attr]
        else:
            self._send(head, len(head), 0)

    def _send(self, out: bytes, head: int, framed: int) -> None:
        """Write ``out`` (``head`` bytes of head, then one frame); count the
        body bytes that reached the client."""
        ex = self.ex
        payload = framed - ex.sent
        try:
            self.send(out)
        except OSError as exc:
            written = getattr(exc, "written", 0) - head
            ex.sent += self.framer.payload_in(written, payload)  # type: ignore[union-attr]
            raise
        ex.sent = framed

    def finish(self) -> None:
        """End the body: the head if not sent yet, the last chunk, and the
        framing's verdict on reuse (a body shorter than announced)."""
        if not self.head_sent:
            self.write(b"", body_length=0)
        framer = self.framer
        end = framer.end()  # type: ignore[union-attr]
        if end:
            self.send(end)
        if framer.must_close:  # type: ignore[union-attr]
            self.ex.close_because(Close.FRAMING)

    def sendfile_plan(self, wrapper: FileWrapper) -> tuple[int, int, int] | None:
        """For a file response: (fd, offset, count) to pass to sendfile, after
        the head has been sent; None when the iterable must be used.  The
        worker adds what sendfile wrote to ``ex.sent``."""
        if self.head_sent:
            return None
        fd = wrapper.fileno()
        if fd is None:
            return None
        try:
            offset = os.lseek(fd, 0, os.SEEK_CUR)
            size = os.fstat(fd).st_size - offset
        except OSError:
            return None
        if size < 0:
            return None
        # The file's size is the body's length unless the app said otherwise
        # (never chunked, so the file can go out as it is).
        head = self._head(size if self.content_length is None else None)
        count = self.framer.file_count(size) or 0  # type: ignore[union-attr]
        self._send(head, len(head), 0)
        return fd, offset, count
