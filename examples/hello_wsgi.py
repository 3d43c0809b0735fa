"""A small WSGI app to try forkserve with.

    forkserve -w 2 examples.hello_wsgi:application

Routes: ``/`` says hello, ``/echo`` returns the request body, ``/headers``
lists the request headers, ``/slow?s=N`` sleeps N seconds, ``/stream``
streams a chunked body, ``/error`` raises (a 500, and the worker serves on).
"""

import os
import time
from urllib.parse import parse_qs


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/":
        body = b"Hello from forkserve (worker %d)\n" % os.getpid()
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", environ.get("CONTENT_TYPE", "application/octet-stream")),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path == "/headers":
        lines = sorted(f"{k}: {v}" for k, v in environ.items() if k.startswith("HTTP_"))
        body = ("\n".join(lines) + "\n").encode("latin-1")
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
        return [body]
    if path == "/slow":
        seconds = float(parse_qs(environ["QUERY_STRING"]).get("s", ["1"])[0])
        time.sleep(min(seconds, 60))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slept %.1f\n" % seconds]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"line %d\n" % i for i in range(5))
    if path == "/error":
        raise RuntimeError("this route fails on purpose")
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    return [b"not found\n"]
