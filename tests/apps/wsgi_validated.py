"""A WSGI app wrapped in wsgiref.validate.validator: any PEP 3333 violation
by the server (or the app) raises inside the worker and turns into a 500."""

import os
from wsgiref.validate import validator

MARKER_DIR = os.environ.get("FS_TEST_MARKERS", "/tmp")


class ClosingBody:
    """An iterable whose close() leaves a mark the test can see."""

    def __init__(self, parts, name):
        self.parts = parts
        self.name = name

    def __iter__(self):
        return iter(self.parts)

    def close(self):
        with open(os.path.join(MARKER_DIR, self.name), "w") as f:
            f.write("closed")


def _read_all(stream):
    chunks = []
    while True:
        data = stream.read(7)  # small pieces on purpose
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def _app(environ, start_response):
    path = environ["PATH_INFO"]
    text = [("Content-Type", "text/plain")]
    if path == "/echo":
        body = _read_all(environ["wsgi.input"])
        start_response("200 OK", text + [("Content-Length", str(len(body)))])
        return [body]
    if path == "/lines":
        lines = list(environ["wsgi.input"])
        body = b"%d lines" % len(lines)
        start_response("200 OK", text)
        return [body]
    if path == "/write":
        write = start_response("200 OK", text)
        write(b"written;")
        return [b"returned"]
    if path == "/excinfo":
        try:
            raise KeyError("handled")
        except KeyError:
            import sys
            start_response("503 Service Unavailable", text, sys.exc_info())
        return [b"recovered"]
    if path == "/close":
        start_response("200 OK", text)
        return ClosingBody([b"a", b"b"], environ["QUERY_STRING"] or "closed.txt")
    if path == "/file":
        f = open(__file__, "rb")
        start_response("200 OK", text)
        return environ["wsgi.file_wrapper"](f, 4096)
    if path == "/204":
        start_response("204 No Content", [])
        return []
    if path == "/304":
        start_response("304 Not Modified", [])
        return []
    if path == "/stream":
        start_response("200 OK", text)
        return iter([b"one;", b"two;", b"three"])
    if path == "/boom":
        raise RuntimeError("app failure for the test")
    if path == "/pid":
        body = str(os.getpid()).encode()
        start_response("200 OK", text + [("Content-Length", str(len(body)))])
        return [body]
    start_response("200 OK", text + [("Content-Length", "5")])
    return [b"hello"]


application = validator(_app)
