"""A gevent app that patches the standard library itself, first thing, as
apps served with preload_app must (tests/e2e/test_gevent.py)."""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import time  # noqa: E402

VERSION = b"v1"


def application(environ, start_response):
    if environ["PATH_INFO"] == "/sleep":
        time.sleep(0.5)
    body = b"%s %d" % (VERSION, os.getpid())
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
