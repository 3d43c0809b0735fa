"""WSGI app for the chaos tests: crashes, leaks and versions on demand."""

import ctypes
import os
import time

VERSION = os.environ.get("CHAOS_VERSION_OVERRIDE", "v1")
_hoard = []


def application(environ, start_response):
    path = environ["PATH_INFO"]
    qs = environ.get("QUERY_STRING", "")
    if path == "/version":
        body = VERSION.encode()
    elif path == "/pid":
        body = str(os.getpid()).encode()
    elif path == "/sleep":
        time.sleep(float(qs or "1"))
        body = b"slept"
    elif path == "/segv":
        ctypes.string_at(0)  # reads address 0: SIGSEGV
        body = b"unreachable"
    elif path == "/leak":
        _hoard.append(bytearray(30 * 1024 * 1024))
        body = str(len(_hoard)).encode()
    else:
        body = b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
