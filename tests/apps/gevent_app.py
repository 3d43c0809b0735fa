"""A WSGI app written for gevent, for tests/e2e/test_gevent.py: it blocks
the way such apps do (``time.sleep``, plain sockets), which only the
worker's monkey-patching makes cooperative.  Nothing here imports gevent.

Routes: ``/`` hello; ``/pid``; ``/sleep?S`` sleeps S seconds (default 0.5);
``/outbound?PORT`` asks a local server on PORT and answers what it said;
``/echo`` the request body; ``/fail`` raises; ``/spin?S`` burns the CPU for
S seconds without yielding; ``/patched`` whether ``time.sleep`` and
``socket.socket`` are gevent's.
"""

import os
import socket
import time


def _answer(start_response, body, status="200 OK"):
    start_response(status, [("Content-Type", "text/plain"),
                            ("Content-Length", str(len(body)))])
    return [body]


def _seconds(environ, default):
    query = environ.get("QUERY_STRING", "")
    return float(query) if query else default


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/":
        return _answer(start_response, b"hello from gevent")
    if path == "/pid":
        return _answer(start_response, str(os.getpid()).encode())
    if path == "/sleep":
        time.sleep(_seconds(environ, 0.5))
        return _answer(start_response, b"slept")
    if path == "/outbound":
        port = int(environ["QUERY_STRING"])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"ping\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(100)
                if not chunk:
                    break
                data += chunk
        return _answer(start_response, data.strip())
    if path == "/echo":
        body = environ["wsgi.input"].read()
        return _answer(start_response, b"%d:%s" % (len(body), body[:64]))
    if path == "/fail":
        raise RuntimeError("the app failed on purpose")
    if path == "/spin":
        end = time.monotonic() + _seconds(environ, 1.0)
        while time.monotonic() < end:
            pass
        return _answer(start_response, b"spun")
    if path == "/patched":
        from gevent import monkey
        body = b"%s %s" % (str(monkey.is_module_patched("time")).encode(),
                           str(monkey.is_module_patched("socket")).encode())
        return _answer(start_response, body)
    return _answer(start_response, b"not found", "404 Not Found")
