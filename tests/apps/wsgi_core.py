"""WSGI test app for the connection-core tests (tests/e2e/test_sync_core.py)."""

import os
import tempfile
import time


def application(environ, start_response):
    path = environ["PATH_INFO"]
    qs = environ.get("QUERY_STRING", "")
    if path == "/catch":
        # What Django and Flask do: a body that cannot be read becomes the
        # app's own error page.
        try:
            body = environ["wsgi.input"].read()
        except Exception as exc:
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"caught: " + type(exc).__name__.encode()]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"read %d" % len(body)]
    if path == "/ignore":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ignored"]
    if path == "/pid":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(os.getpid()).encode()]
    if path == "/sleep":
        time.sleep(float(qs or "1"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slept"]
    if path == "/cookie":
        # Django's SimpleCookie output starts with a space.
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Set-Cookie", " sessionid=abc; Path=/"),
                                  ("X-Pad", "\tv\t ")])
        return [b"cookie"]
    if path == "/download":
        size = int(qs or str(64 << 20))
        block = b"x" * (1 << 20)
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size))])
        return (block[:min(len(block), size - i)] for i in range(0, size, len(block)))
    if path == "/download-one":
        size = int(qs or str(64 << 20))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [b"y" * size]
    if path == "/download-file":
        size = int(qs or str(64 << 20))
        f = tempfile.TemporaryFile()
        f.truncate(size)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f)
    if path == "/empty":
        start_response("204 No Content", [])
        return []
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]

