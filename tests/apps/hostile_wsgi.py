"""WSGI app for the hostile-load suite (tests/e2e/test_hostile.py).

Plain WSGI, no forkserve import: gunicorn serves it too (tests/hostile_peers.py).
The module-level VERSION and IMPORT_DELAY are rewritten by tests that copy
this file to deploy new code; HOSTILE_IMPORT_DELAY slows the import too.
"""

import ctypes
import os
import time

VERSION = "v1"
IMPORT_DELAY = float(os.environ.get("HOSTILE_IMPORT_DELAY", "0"))
time.sleep(IMPORT_DELAY)

_hoard = []


def application(environ, start_response):
    path = environ["PATH_INFO"]
    qs = environ.get("QUERY_STRING", "")
    status = "200 OK"
    if path == "/pid":
        body = str(os.getpid()).encode()
    elif path == "/version":
        body = VERSION.encode()
    elif path == "/catch-body":
        # What Django and Flask do: a broken body becomes an error response.
        try:
            body = b"read %d" % len(environ["wsgi.input"].read())
        except Exception as exc:  # noqa: BLE001 - the point of this route
            status, body = "500 Internal Server Error", f"caught {type(exc).__name__}".encode()
    elif path == "/read-body":
        # No try: a broken body is the server's to answer.
        body = b"read %d" % len(environ["wsgi.input"].read())
    elif path == "/ignore-body":
        body = b"ignored"
    elif path == "/sleep":
        time.sleep(float(qs or "1"))
        body = b"slept"
    elif path == "/segv":
        ctypes.string_at(0)  # reads address 0: SIGSEGV
        body = b"unreachable"
    elif path == "/leak":
        # qs MiB kept for good, every page touched.
        _hoard.append(b"x" * (int(qs or "10") << 20))
        body = str(len(_hoard)).encode()
    else:
        body = b"ok"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
