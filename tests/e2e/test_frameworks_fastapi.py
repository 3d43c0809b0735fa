"""Differential tests: a real FastAPI app (tests/apps/frameworks/fastapiapp.py)
under forkserve's ASGI worker and under uvicorn (httptools, uvloop), direct
and through nginx, driven by the same clients; every difference must be
declared in differential.DECLARED."""

from __future__ import annotations

import hashlib
import json
import random
import socket
import time

import pytest
import websockets
from websockets.sync.client import connect as ws_connect

from conftest import wait_for
from differential import Conn, differ, encode_request, expect_100_unread_body, observe, read_all
from servers import differential

pytestmark = pytest.mark.e2e
VIA = pytest.mark.parametrize("via", ["direct", "nginx"])
JSON = [("Content-Type", "application/json")]


def _serve(tmp_path_factory, name):
    tmp = tmp_path_factory.mktemp(name)
    return differential(tmp, "fastapiapp:app", "asgi", ready_path="/ping",
                        forkserve_args=("--lifespan", "on"), reference_args=("--lifespan", "on"))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    with _serve(tmp_path_factory, "fastapi") as pair:
        yield pair


# A pair of its own for the tests where the client goes away: what a
# server gets wrong there (a worker spinning on a gone client) must not
# spill into the other tests.
@pytest.fixture(scope="module")
def gone_pair(tmp_path_factory):
    with _serve(tmp_path_factory, "fastapi-gone") as pair:
        yield pair


def _counts(host, port) -> dict:
    with Conn(host, port, timeout=5) as c:
        return json.loads(c.request("GET", "/counts").body)


@VIA
def test_json_routes_and_validation(pair, via):
    def scenario(host, port):
        seen = []
        with Conn(host, port) as c:
            for method, target, body in [
                    ("POST", "/items", b'{"name": "pen", "price": 1.25, "tags": ["a"]}'),
                    ("POST", "/items", b'{"name": "pen"}'),
                    ("POST", "/items", b'{"name": '),
                    ("GET", "/items/7?q=x%20y", b""),
                    ("GET", "/items/404", b""),
                    ("GET", "/items/seven", b""),
                    ("GET", "/nowhere", b""),
                    ("DELETE", "/items/7", b""),
                    ("GET", "/ping", b"")]:
                seen.append(observe(c.request(method, target, JSON if body else [], body)))
        return seen
    ours = differ(pair, via, scenario)
    assert ours[0]["status"] == 201 and ours[1]["status"] == 422


@VIA
def test_lifespan_state(pair, via):
    def scenario(host, port):
        with Conn(host, port) as c:
            return [observe(c.request("GET", "/state"), json.loads)]
    ours = differ(pair, via, scenario)
    assert ours[0]["body"] == {"greeting": "set by lifespan", "answers": [42]}


def _multipart(boundary: str, fields: dict[str, str],
               files: dict[str, tuple[str, str, bytes]]) -> bytes:
    out = bytearray()
    for name, value in fields.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                f"{value}\r\n").encode()
    for name, (filename, ctype, data) in files.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                f"filename=\"{filename}\"\r\nContent-Type: {ctype}\r\n\r\n").encode()
        out += data + b"\r\n"
    return bytes(out + f"--{boundary}--\r\n".encode())


UPLOAD = random.Random(7).randbytes(5 * 1024 * 1024)


@VIA
@pytest.mark.parametrize("expect", [False, True], ids=["plain", "expect-100"])
def test_upload_file_5mb(pair, via, expect):
    boundary = "forkserve-boundary-7MA4YWxkTrZu0gW"
    body = _multipart(boundary, {"note": "five megabytes"},
                      {"file": ("big.bin", "application/octet-stream", UPLOAD)})
    head = [("Content-Type", f"multipart/form-data; boundary={boundary}"),
            ("Content-Length", str(len(body)))]
    if expect:
        head.append(("Expect", "100-continue"))

    def scenario(host, port):
        seen = []
        # A few in a row, fresh connections and a reused one: the stalls
        # this guards against came and went with timing.
        for attempt in range(3):
            with Conn(host, port, timeout=10) as c:
                for _ in range(1 if attempt < 2 else 2):
                    c.send(encode_request("POST", "/upload", head))
                    if expect:
                        seen.append({"interim": c.response("POST", interim=True).status})
                    c.send(body)
                    seen.append(observe(c.response("POST"), json.loads))
        return seen
    ours = differ(pair, via, scenario)
    answer = ours[-1]["body"]
    assert answer["size"] == len(UPLOAD) and answer["note"] == "five megabytes"
    assert answer["sha256"] == hashlib.sha256(UPLOAD).hexdigest()


@VIA
def test_background_task_does_not_hold_the_connection(pair, via):
    """The response is complete once the app sends its last body message; a
    BackgroundTask running after it must not delay the next request on the
    same keep-alive connection (nor, behind nginx, on the pooled upstream
    connection)."""
    def scenario(host, port):
        before = _counts(host, port)["background_done"]
        with Conn(host, port) as c:
            first = observe(c.request("POST", "/background?seconds=3"), json.loads)
            start = time.monotonic()
            second = observe(c.request("GET", "/ping"), json.loads)
            waited = time.monotonic() - start
        # The task still runs to its end.
        wait_for(lambda: _counts(host, port)["background_done"] > before, 15,
                 what="the background task to finish")
        return [first, second, {"second request waited for the task": waited > 1.5}]
    differ(pair, via, scenario)


@VIA
def test_middleware_awaiting_is_disconnected(gone_pair, via):
    """A middleware polls is_disconnected() while the route works: it must
    say False while the client waits (receive() after the whole body waits
    for the disconnect, ASGI HTTP spec) and True once the client left."""
    def scenario(host, port):
        seen = []
        with Conn(host, port) as c:
            seen.append(observe(c.request("GET", "/slow?seconds=0.3"), json.loads))
            seen.append(observe(c.request("POST", "/items", JSON, b'{"name": "a", "price": 2}')))
        before = _counts(host, port)["cancelled_on_disconnect"]
        with Conn(host, port) as c:
            c.send(encode_request("GET", "/slow?seconds=30"))
            time.sleep(0.3)
        try:
            wait_for(lambda: _counts(host, port)["cancelled_on_disconnect"] > before, 5,
                     what="the middleware to see the client gone")
            seen.append({"noticed the client left": True})
        except (AssertionError, OSError) as exc:
            seen.append({"noticed the client left": False, "why": str(exc)[:200]})
        return seen
    differ(gone_pair, via, scenario)


@VIA
def test_event_source_response(gone_pair, via):
    def scenario(host, port):
        seen = []
        with Conn(host, port) as c:
            seen.append(observe(c.request("GET", "/sse?n=5")))
            seen.append(observe(c.request("GET", "/ping")))
        return seen
    ours = differ(gone_pair, via, scenario)
    assert ours[0]["body"].count(b"event: tick") == 5


@VIA
def test_event_source_client_disconnect(gone_pair, via):
    """A client that leaves an endless event stream ends the generator (its
    finally runs) and leaves the worker serving others at once."""
    def scenario(host, port):
        before = _counts(host, port)["sse_closed"]
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(encode_request("GET", "/sse?n=1000000&interval=0.05"))
            got = b""
            while got.count(b"event: tick") < 3:
                chunk = s.recv(65536)
                assert chunk, "the stream ended early"
                got += chunk
        try:
            wait_for(lambda: _counts(host, port)["sse_closed"] > before, 5,
                     what="the event generator to be closed")
            closed = True
        except (AssertionError, OSError):
            closed = False
        start = time.monotonic()
        try:
            with Conn(host, port, timeout=5) as c:
                status = c.request("GET", "/ping").status
        except OSError as exc:
            status = repr(exc)
        return [{"generator closed": closed, "then /ping": status,
                 "/ping took over 1 s": time.monotonic() - start > 1}]
    differ(gone_pair, via, scenario)


@VIA
def test_websocket_echo_close_and_reject(pair, via):
    def scenario(host, port):
        seen = []
        with ws_connect(f"ws://{host}:{port}/ws", open_timeout=10, close_timeout=5,
                        proxy=None) as ws:
            response = ws.response
            seen.append({"status": response.status_code,
                         "upgrade": response.headers.get("upgrade", "").lower(),
                         "extensions": response.headers.get("sec-websocket-extensions")})
            ws.send("hello")
            seen.append(ws.recv(timeout=10))
            ws.send(bytes(range(256)) * 400)
            seen.append(ws.recv(timeout=10) == bytes(range(256)) * 400)
            ws.send("close")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                ws.recv(timeout=10)
            seen.append({"code": closed.value.rcvd.code, "reason": closed.value.rcvd.reason})
        # The client ends it this time.
        with ws_connect(f"ws://{host}:{port}/ws", open_timeout=10, close_timeout=5,
                        proxy=None, compression=None) as ws:
            ws.send("bye")
            seen.append(ws.recv(timeout=10))
            ws.close(1000, "done")
            seen.append({"client close acknowledged": ws.protocol.close_rcvd.code
                         if ws.protocol.close_rcvd else None})
        # Closed before accept: the handshake is refused with 403.
        with pytest.raises(websockets.InvalidStatus) as refused:
            ws_connect(f"ws://{host}:{port}/ws-reject", open_timeout=10, proxy=None)
        seen.append({"refused": refused.value.response.status_code})
        return seen
    ours = differ(pair, via, scenario)
    assert ours[1] == "echo: hello" and ours[3] == {"code": 4001, "reason": "asked to close"}


ODD_REQUESTS = [
    ("GET", "/scope/caf%C3%A9/a%2Fb/%25?x=1&x=2&y=%20z",
     [("X-Dup", "a"), ("X-Dup", "b"), ("X-Custom-Header", "  padded value  "),
      ("X_Underscore", "u")], b""),
    ("POST", "/scope/form", [("Content-Type", "application/x-www-form-urlencoded")], b"a=1"),
    ("GET", "http://test.example/scope/absolute?q=1", [], b""),
    ("GET", "/scope/%ff%fe?raw=%ff", [("X-Latin", "caf\xe9")], b""),
]


def _scope(body: bytes) -> dict:
    """The scope the app saw, with the padded header apart (see DECLARED)."""
    scope = json.loads(body)
    padded = [v for k, v in scope["headers"] if k == "x-custom-header"]
    scope["headers"] = [[k, v] for k, v in scope["headers"] if k != "x-custom-header"]
    if padded:
        scope["padded header"] = padded[0]
    return scope


@VIA
def test_asgi_scope(pair, via):
    def scenario(host, port):
        with Conn(host, port) as c:
            return [observe(c.request(method, target, headers, body), _scope)
                    for method, target, headers, body in ODD_REQUESTS]
    differ(pair, via, scenario)


@VIA
def test_failing_routes(pair, via):
    """A route that raises gets Starlette's 500, and a stream that fails
    half-way ends as both servers end it.  (Starlette's BaseHTTPMiddleware,
    which the app's middleware is, swallows the generator's error and ends
    the body normally; the WSGI test sees a cut-short one.)"""
    def scenario(host, port):
        with Conn(host, port) as c:
            seen = [observe(c.request("GET", "/boom"))]
        seen.append(read_all(host, port, encode_request("GET", "/stream-fails",
                                                        [("Connection", "close")])))
        return seen
    ours = differ(pair, via, scenario)
    assert ours[0]["status"] == 500 and ours[1]["payload"] == b"line 0\nline 1\nline 2\n"


@VIA
def test_expect_100_continue_for_a_body_the_app_never_reads(pair, via):
    """POST /ping is answered 405 without reading the body: see
    expect_100_unread_body."""
    differ(pair, via, lambda host, port: expect_100_unread_body(host, port, "/ping", "/ping"))
