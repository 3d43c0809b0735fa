"""The ASGI worker against real processes: HTTP, lifespan, WebSockets,
timeouts and graceful stops (issue 3)."""

from __future__ import annotations

import ast
import asyncio
import signal
import socket
import time

import httpx
import pytest
import websockets

from conftest import parse_response, wait_for

pytestmark = pytest.mark.e2e

APP = "asgi_basic:app"


def _scope(server, path="/scope", **kw):
    status, _, body = server.get(path, **kw)
    assert status == 200
    return ast.literal_eval(body.decode())


def test_auto_detects_asgi_and_serves(forkserve):
    server = forkserve(APP, "-w", "2")
    assert "(asgi, detected)" in server.log
    assert server.get("/") [::2] == (200, b"hello")
    status, headers, body = server.get("/stream")
    assert headers["transfer-encoding"] == "chunked" and body == b"part0;part1;part2;"


def test_scope_and_lifespan_state(forkserve):
    server = forkserve(APP, "-w", "1", "--root-path", "/mount")
    # The proxy stripped /mount: the request says /scope.
    scope = _scope(server, "/scope?q=1%202")
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1" and scope["method"] == "GET"
    assert scope["path"] == "/mount/scope" and scope["raw_path"] == b"/scope"
    assert scope["root_path"] == "/mount" and scope["query_string"] == b"q=1%202"
    assert scope["scheme"] == "http"
    assert scope["client"][0] == "127.0.0.1" and isinstance(scope["client"][1], int)
    assert scope["server"] == ("127.0.0.1", server.port)
    assert scope["state"]["started_at"].startswith("boot-")
    assert "host" in scope["header_names"]


def test_unix_socket_scope(forkserve):
    server = forkserve(APP, "-w", "1", unix=True)
    scope = _scope(server)
    assert scope["server"] == (server.unix, None)
    assert scope["client"] is None


def test_streamed_request_body_and_100_continue(forkserve):
    server = forkserve(APP, "-w", "1")

    def chunks():
        for i in range(50):
            yield b"x" * 1000

    r = httpx.post(f"{server.url}/echo", content=chunks(), timeout=10)
    assert r.status_code == 200 and r.content == b"x" * 50_000
    with server.connect() as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"hello")
        resp = s.recv(4096)
        assert resp.startswith(b"HTTP/1.1 200") and resp.endswith(b"hello")
    # The app never reads the body: no 100 Continue, just the answer.
    with server.connect() as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")


def test_pipelined_requests_are_answered_in_order(forkserve):
    server = forkserve(APP, "-w", "1")
    raw = server.raw(b"GET /sleep?0.2 HTTP/1.1\r\nHost: t\r\n\r\n"
                     b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
                     b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    bodies = []
    while raw:
        status, headers, body = parse_response(raw)
        bodies.append(body)
        head_len = raw.index(b"\r\n\r\n") + 4
        raw = raw[head_len + int(headers["content-length"]):]
    assert bodies == [b"slept", b"abc", b"hello"]


def test_disconnect_is_delivered_and_send_raises_oserror(forkserve, tmp_path):
    marker = tmp_path / "disc"
    server = forkserve(APP, "-w", "1", env={"ASGI_DISCONNECT_MARKER": str(marker)})
    s = server.connect()
    s.sendall(b"POST /disconnect HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab")
    time.sleep(0.3)
    s.close()
    wait_for(lambda: marker.exists(), 5, what="http.disconnect")
    wait_for(lambda: (tmp_path / "disc.send").exists(), 5, what="send after disconnect")
    assert (tmp_path / "disc.send").read_text() == "ClientDisconnected"
    assert "Traceback" not in server.log


def test_app_error_is_500_and_worker_serves_on(forkserve):
    server = forkserve(APP, "-w", "1")
    pid = server.get("/pid")[2]
    status, _, body = server.get("/error")
    assert status == 500 and b"boom" not in body
    assert "RuntimeError: boom from the ASGI test app" in server.log
    assert server.get("/pid")[2] == pid
    assert server.get("/badheader")[0] == 500


def test_trailers_and_pathsend(forkserve):
    server = forkserve(APP, "-w", "1")
    raw = server.raw(b"GET /trailers HTTP/1.1\r\nHost: t\r\nTE: trailers\r\nConnection: close\r\n\r\n")
    assert raw.endswith(b"4\r\ndata\r\n0\r\nx-checksum: abc\r\n\r\n")
    status, headers, body = server.get("/pathsend")
    from conftest import APPS
    assert status == 200 and body == (APPS / "asgi_basic.py").read_bytes()


def test_lifespan_startup_failure_stops_the_server(forkserve):
    server = forkserve(APP, "-w", "2", env={"ASGI_FAIL_STARTUP": "1"}, wait=False)
    assert server.wait_exit(20) == 3
    assert "ASGI lifespan startup failed: database is down" in server.log
    assert "Worker failed to boot" in server.log


def test_lifespan_shutdown_runs_on_term(forkserve, tmp_path):
    marker = tmp_path / "shutdown"
    server = forkserve(APP, "-w", "2", env={"ASGI_SHUTDOWN_MARKER": str(marker)})
    server.signal(signal.SIGTERM)
    assert server.wait_exit(15) == 0
    assert marker.read_text().count("shutdown") == 2


def test_blocked_event_loop_is_killed_at_timeout(forkserve):
    server = forkserve(APP, "-w", "1", "-t", "2")
    old = server.workers()[0]
    try:
        server.raw(b"GET /block HTTP/1.1\r\nHost: t\r\n\r\n", timeout=20)
    except ConnectionResetError:
        pass
    server.wait_log("WORKER TIMEOUT", timeout=10)
    line = [ln for ln in server.log.splitlines() if "WORKER TIMEOUT" in ln][0]
    assert f"pid:{old}" in line and "GET /block" in line
    server.wait_workers(1, exclude={old}, timeout=10)
    assert server.get("/")[0] == 200


def _ws(url, coro):
    return asyncio.run(asyncio.wait_for(coro(url), 20))


def test_websocket_echo_subprotocol_and_big_message(forkserve):
    server = forkserve(APP, "-w", "1")

    async def run(url):
        async with websockets.connect(url + "/ws/echo", subprotocols=["chat"],
                                      max_size=4 << 20) as ws:
            assert ws.subprotocol == "chat"
            assert ws.response.headers["x-ws-test"] == "yes"
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\xff")
            assert await ws.recv() == b"\x00\xff"
            big = b"y" * (1 << 20)
            await ws.send(big)
            assert await ws.recv() == big
    _ws(f"ws://127.0.0.1:{server.port}", run)


def test_websocket_denials_and_close_codes(forkserve):
    server = forkserve(APP, "-w", "1", "--ws-max-size", "1000")

    async def run(url):
        with pytest.raises(websockets.InvalidStatus) as exc:
            async with websockets.connect(url + "/ws/deny"):
                pass
        assert exc.value.response.status_code == 403
        with pytest.raises(websockets.InvalidStatus) as exc:
            async with websockets.connect(url + "/ws/http-deny"):
                pass
        assert exc.value.response.status_code == 401 and exc.value.response.body == b"no entry"
        async with websockets.connect(url + "/ws/close-4001") as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "bye")
        async with websockets.connect(url + "/ws/echo") as ws:
            await ws.send("z" * 2000)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd.code == 1009
    _ws(f"ws://127.0.0.1:{server.port}", run)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["term", "hup"])
def test_websocket_closed_with_1012_on_stop_and_reload(forkserve, sig):
    server = forkserve(APP, "-w", "1")

    async def run(url):
        async with websockets.connect(url + "/ws/echo") as ws:
            await ws.send("before")
            assert await ws.recv() == "before"
            server.signal(sig)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 15)
            return closed.value.rcvd.code
    assert _ws(f"ws://127.0.0.1:{server.port}", run) == 1012
    if sig == signal.SIGHUP:
        server.wait_log("Reload complete")
        assert server.get("/")[0] == 200


def test_starlette_app_with_websocket_under_two_workers(forkserve):
    server = forkserve("starlette_app:app", "-k", "asgi", "-w", "2")
    r = httpx.get(server.url + "/", timeout=10)
    assert r.json() == {"hello": "world", "state": "from-lifespan"}
    r = httpx.post(server.url + "/echo", content=b"payload", timeout=10)
    assert r.text == "payload"
    assert httpx.get(server.url + "/stream", timeout=10).text == "chunk0;chunk1;chunk2;"

    async def run(url):
        async with websockets.connect(url + "/ws") as ws:
            await ws.send("hi")
            return await ws.recv()
    assert _ws(f"ws://127.0.0.1:{server.port}", run) == "starlette: hi"


def test_slow_head_gets_408_and_close(forkserve):
    server = forkserve(APP, "-w", "1", "--header-timeout", "1")
    with server.connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\n")
        start = time.monotonic()
        data = s.recv(4096)
        assert data.startswith(b"HTTP/1.1 408")
        assert time.monotonic() - start < 5
    # Idle keep-alive connections are closed after keepalive, silently.
    server2 = forkserve(APP, "-w", "1", "--keep-alive", "1")
    with server2.connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        first = s.recv(4096)
        assert first.startswith(b"HTTP/1.1 200")
        s.settimeout(5)
        assert s.recv(4096) == b""
    assert isinstance(socket.AF_INET, int)


def test_deadlines_hold_after_the_worker_was_idle(forkserve):
    """The deadline sweep stops while a worker has no connections; the next
    connection must arm it again: idle close after keepalive (not before),
    and 408 for a head that stalls."""
    server = forkserve(APP, "-w", "1", "--keep-alive", "1", "--header-timeout", "1")
    for _ in range(2):
        with server.connect() as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
            start = time.monotonic()
            s.settimeout(5)
            assert s.recv(4096) == b""
            assert 0.9 <= time.monotonic() - start < 3
        time.sleep(1.5)  # no connections: the sweep stops
    with server.connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\n")
        start = time.monotonic()
        s.settimeout(5)
        assert s.recv(4096).startswith(b"HTTP/1.1 408")
        assert 0.9 <= time.monotonic() - start < 3
