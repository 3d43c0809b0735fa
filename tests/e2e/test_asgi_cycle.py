"""The ASGI request/response cycle against real processes and raw sockets:
what receive() gives after the body (issue 11 item 1), request-body flow
control (item 2), apps still running after their response (item 3)."""

from __future__ import annotations

import json
import socket
import time

import psutil
import pytest

pytestmark = pytest.mark.e2e

APP = "asgi_cycle:app"


def read_response(sock: socket.socket, buf: bytearray | None = None) -> tuple[int, dict, bytes]:
    """One response (Content-Length or chunked) from a keep-alive socket;
    bytes after it stay in ``buf``."""
    buf = buf if buf is not None else bytearray()

    def fill() -> None:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed after {bytes(buf[:200])!r}")
        buf.extend(data)

    while b"\r\n\r\n" not in buf:
        fill()
    end = buf.index(b"\r\n\r\n")
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    del buf[:end + 4]
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(buf) < n:
            fill()
        body = bytes(buf[:n])
        del buf[:n]
        return status, headers, body
    body = bytearray()
    while True:
        while b"\r\n" not in buf:
            fill()
        i = buf.index(b"\r\n")
        size = int(bytes(buf[:i]).split(b";")[0], 16)
        while len(buf) < i + 2 + size + 2:
            fill()
        body += buf[i + 2:i + 2 + size]
        del buf[:i + 2 + size + 2]
        if size == 0:
            return status, headers, bytes(body)


def record(server) -> dict:
    status, _, body = server.get("/record")
    assert status == 200
    return json.loads(body)


def test_receive_after_the_body_waits_then_says_disconnect(forkserve):
    """Django's listener: after more_body False, receive() returns nothing
    while the view runs, and http.disconnect once the response is sent."""
    server = forkserve(APP, "-w", "1")
    with server.connect() as s:
        s.sendall(b"POST /django?keepalive HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        assert read_response(s)[::2] == (200, b"done")
        # Still connected: the app's later receive() calls must not wait
        # for the client to go.
        s.sendall(b"GET /sleep?0.3 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(s)[2] == b"slept"
    assert record(server)["keepalive"] == ["nothing", "http.disconnect", "http.disconnect"]


def test_streaming_app_listening_for_disconnect_does_not_spin(forkserve):
    server = forkserve(APP, "-w", "1", "-t", "20")
    worker = psutil.Process(server.workers()[0])
    with server.connect() as s:
        s.sendall(b"GET /sse HTTP/1.1\r\nHost: t\r\n\r\n")
        s.settimeout(5)
        data = b""
        while data.count(b"data: ") < 3:
            data += s.recv(4096)
        before = worker.cpu_times()
        time.sleep(1.0)
        after = worker.cpu_times()
        # Ten small events a second, not a busy loop.
        assert (after.user + after.system) - (before.user + before.system) < 0.3
    # The client closed: the listener sees http.disconnect, promptly.
    deadline = time.monotonic() + 5
    while not record(server)["sse"]["disconnected"]:
        assert time.monotonic() < deadline, "http.disconnect never delivered"
        time.sleep(0.1)
    assert record(server)["sse"]["receives"] <= 2
    assert "Traceback" not in server.log


def _upload(server, size: int, piece: int, expect: bool, delay: float) -> float:
    body = bytes(range(256)) * (size // 256)
    head = (f"POST /upload?{delay} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
            + ("Expect: 100-continue\r\n" if expect else "") + "\r\n").encode()
    start = time.monotonic()
    with server.connect(timeout=20) as s:
        s.sendall(head)
        if expect:
            assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        view = memoryview(body)
        for i in range(0, len(body), piece):
            s.sendall(view[i:i + piece])
        status, _, answer = read_response(s)
    import hashlib
    assert status == 200 and answer == b"%d %s" % (len(body), hashlib.sha1(body).hexdigest().encode())
    return time.monotonic() - start


@pytest.mark.parametrize("expect", [False, True], ids=["plain", "expect-100"])
def test_large_uploads_complete_promptly(forkserve, expect):
    """Bodies far above the 256 KiB read-ahead, consumed slowly or fast,
    sent in pieces of every size: reading pauses and always resumes, so
    none waits for body_timeout (60 s here)."""
    server = forkserve(APP, "-w", "1", "--body-timeout", "60")
    pieces = [1000, 16384, 65536, 300_000, 5 << 20]
    times = []
    for i in range(30):
        times.append(_upload(server, 5 << 20, pieces[i % len(pieces)], expect,
                             delay=0.002 if i % 2 else 0.0))
    assert max(times) < 10, times


def test_response_complete_frees_the_connection_for_the_next_request(forkserve):
    """A background task after the response does not hold the keep-alive
    connection; its receive() says http.disconnect."""
    server = forkserve(APP, "-w", "1")
    with server.connect() as s:
        s.sendall(b"GET /background HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(s)[2] == b"background"
        start = time.monotonic()
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(s)[2] == b"hello"
        # The task still sleeps for most of a second.
        assert time.monotonic() - start < 0.5
    time.sleep(1.5)
    assert record(server)["background"] == ["http.disconnect", "finished"]


def test_request_hooks_run_for_asgi_requests(forkserve, tmp_path):
    """pre_request before the app (a failing hook: a 500, the app not
    called), post_request when the response is complete -- not when the
    app returns -- with the scope as its environ; a failing hook is logged
    and the worker serves on."""
    hook_log = tmp_path / "hooks.log"
    server = forkserve(APP, "-w", "1", "-c", "hooks_asgi_conf.py",
                       env={"FS_HOOK_LOG": str(hook_log)})
    pids = server.workers()
    assert server.get("/")[::2] == (200, b"hello")
    assert server.get("/pre-fails")[0] == 500
    assert server.get("/post-fails")[0] == 200
    answered = time.monotonic()
    assert server.get("/background")[2] == b"background"
    from conftest import wait_for
    wait_for(lambda: hook_log.read_text().count("post ") >= 4, 5, what="post_request lines")
    lines = hook_log.read_text().splitlines()
    assert lines[:2] == ["pre GET /", "post GET / '200 OK' 5 http / " + lines[1].rsplit(" ", 1)[1]]
    assert lines[2] == "pre GET /pre-fails"
    assert lines[3].startswith("post GET /pre-fails '500 Internal Server Error' ")
    assert lines[5].startswith("post GET /post-fails '200 OK' 5 http /post-fails ")
    # The background task sleeps a second after its response: the hook
    # ran at the response.
    post_bg = [ln for ln in lines if ln.startswith("post GET /background")][0]
    assert float(post_bg.rsplit(" ", 1)[1]) - answered < 0.8
    assert "pre_request hook failed" in server.log and "post_request hook failed" in server.log
    assert server.workers() == pids


def test_expect_continue_body_never_asked_for_is_announced_as_a_close(forkserve):
    """As in the sync worker (test_sync_core.py): an app that answers an
    ``Expect: 100-continue`` request without receiving its body gets no 100
    sent for it, and its response says ``Connection: close`` (the body may
    or may not follow, RFC 9110 10.1.1); a body the app asks for gets its
    100 and keeps the connection."""
    server = forkserve(APP, "-k", "asgi", "-w", "1")
    with server.connect(10) as s:
        s.settimeout(5)
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        buf = bytearray()
        status, headers, body = read_response(s, buf)
        assert (status, body) == (200, b"hello")
        assert headers.get("connection") == "close"
        assert bytes(buf) == b""
        assert s.recv(100) == b""
    with server.connect(10) as s:
        s.settimeout(5)
        s.sendall(b"POST /catch HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"0123456789GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = bytearray()
        status, headers, body = read_response(s, buf)
        assert (status, body) == (200, b"read 10")
        assert "connection" not in headers
        assert read_response(s, buf)[0] == 200


def test_leading_and_trailing_whitespace_is_not_part_of_a_value(forkserve):
    """Issue 11 item 7, ASGI side (as test_sync_core's): an app's field value
    with OWS around it goes out trimmed, once (RFC 9110 5.5, 5.6.3)."""
    server = forkserve(APP, "-k", "asgi", "-w", "1")
    raw = server.raw(b"GET /cookie HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"\r\nset-cookie: sessionid=abc; Path=/\r\n" in raw, raw
    assert b"\r\nx-pad: v\r\n" in raw, raw
    assert b"\r\ncontent-length: 6\r\n" in raw, raw
