"""The ASGI worker's WebSockets at their bounds, against real processes
and a raw client: flow control from the handshake on, and the close frame
RFC 6455 asks for on every protocol error (issue 12 item 9)."""

from __future__ import annotations

import json
import threading
import time

import psutil
import pytest

import wsraw

pytestmark = pytest.mark.e2e

APP = "asgi_spec:app"
ACCEPT = {"type": "websocket.accept"}


def _record(server, name: str):
    status, _, body = server.get(f"/record?{name}")
    assert status == 200
    return json.loads(body)


def test_data_before_a_delayed_accept_is_bounded(forkserve):
    """A client floods frames while the app waits 3 s before accepting:
    the worker stops reading instead of buffering (it took 600 MiB in
    1.7 s), and after the accept every frame reaches the app."""
    server = forkserve(APP, "-w", "1")
    worker = psutil.Process(server.workers()[0])
    rss_before = worker.memory_info().rss
    piece = wsraw.frame(0x2, b"x" * 65536)
    sent = 0
    stop_at = time.monotonic() + 2.5

    with server.connect(timeout=30) as s:
        wsraw.handshake(s, script=[{"sleep": 3}, ACCEPT, "receive-all"], name="flood")

        def flood():
            nonlocal sent
            while time.monotonic() < stop_at:
                s.sendall(piece)  # blocks once the worker stops reading
                sent += 1

        sender = threading.Thread(target=flood)
        sender.start()
        peak = 0
        while time.monotonic() < stop_at + 0.3:
            peak = max(peak, worker.memory_info().rss)
            time.sleep(0.05)
        sender.join(20)
        assert not sender.is_alive()
        buf = bytearray()
        assert wsraw.read_head(s, buf)[0] == 101
        s.sendall(wsraw.frame(0x8, b"\x03\xe8"))
        opcode, payload = wsraw.read_frame(s, buf)
        assert opcode == 0x8 and wsraw.close_code(payload) == 1000
    # Bounded: socket buffers and 64 KiB held by the worker, not the flood.
    assert peak - rss_before < 32 << 20, (peak - rss_before) >> 20
    assert sent * 65536 < 64 << 20, f"the client pushed {sent * 65536 >> 20} MiB before accept"
    deadline = time.monotonic() + 5
    while not _record(server, "flood"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert _record(server, "flood") == [f"{sent} messages {sent * 65536} bytes"]


CASES = {
    # name: (frames the client sends, close code it must get)
    "unmasked": ([wsraw.frame(0x1, b"hi", mask=False)], 1002),
    "reserved-bit": ([wsraw.frame(0x1, b"hi", rsv=4)], 1002),
    "reserved-opcode": ([wsraw.frame(0x3, b"hi")], 1002),
    "long-ping": ([wsraw.frame(0x9, b"p" * 200)], 1002),
    "fragmented-ping": ([wsraw.frame(0x9, b"p", fin=False)], 1002),
    "continuation-first": ([wsraw.frame(0x0, b"hi")], 1002),
    "bad-close-code": ([wsraw.frame(0x8, b"\x03\xed")], 1002),  # 1005 is not sendable
    "invalid-utf8": ([wsraw.frame(0x1, b"\xff\xfe\xfd")], 1007),
    "invalid-utf8-fragment": ([wsraw.frame(0x1, b"ok", fin=False),
                               wsraw.frame(0x0, b"\xc3")], 1007),
    "too-big": ([wsraw.frame(0x2, b"y" * 2000)], 1009),
    "too-big-in-fragments": ([wsraw.frame(0x2, b"y" * 600, fin=False),
                              wsraw.frame(0x0, b"y" * 600)], 1009),
}


@pytest.mark.parametrize("name", list(CASES))
def test_protocol_error_gets_its_close_frame(forkserve, name):
    frames, code = CASES[name]
    server = forkserve(APP, "-w", "1", "--ws-max-size", "1000")
    pids = server.workers()
    with server.connect() as s:
        wsraw.handshake(s, script=[ACCEPT, "receive-all"], name=name)
        buf = bytearray()
        assert wsraw.read_head(s, buf)[0] == 101
        for f in frames:
            s.sendall(f)
        opcode, payload = wsraw.read_frame(s, buf)
        assert (opcode, wsraw.close_code(payload)) == (0x8, code), payload
        # Then the server closes the connection.
        s.settimeout(5)
        while s.recv(4096):
            pass
    assert server.workers() == pids
    assert "Traceback" not in server.log
