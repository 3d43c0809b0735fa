"""PROXY protocol (v1 and v2) on both worker kinds: a real HAProxy in front
with send-proxy / send-proxy-v2, and hostile raw-socket clients."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import time

import pytest

from conftest import read_until_close, wait_for
from servers import HAPROXY, start_haproxy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

KINDS = [("sync", "proxy_echo:wsgi"), ("asgi", "proxy_echo:asgi")]
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
GET = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def v2_inet(src, sport, dst="127.0.0.1", dport=80, tlvs=b""):
    body = (ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
            + struct.pack(">HH", sport, dport) + tlvs)
    return V2_SIGNATURE + b"\x21\x11" + struct.pack(">H", len(body)) + body


def _body(raw: bytes) -> bytes:
    assert raw.startswith(b"HTTP/1.1 200 "), raw[:200]
    return raw.split(b"\r\n\r\n", 1)[1]


@pytest.fixture(params=KINDS, ids=[k for k, _ in KINDS])
def kind(request):
    return request.param


def _start(forkserve, tmp_path, kind, *args):
    name, app = kind
    access = tmp_path / f"access-{name}-{len(list(tmp_path.glob('access-*')))}.log"
    # ``args`` first: a bare --proxy-protocol (auto) must not take the next
    # argument as its value.
    server = forkserve(app, *args, "-k", name, "-w", "1", "--access-logfile", str(access))
    server.access_log = access
    return server


# -- behind HAProxy ---------------------------------------------------------------

@pytest.mark.skipif(not os.path.exists(HAPROXY), reason="haproxy is not installed")
@pytest.mark.parametrize("send_proxy", ["send-proxy", "send-proxy-v2"])
def test_the_app_sees_haproxys_client(forkserve, tmp_path, kind, send_proxy):
    server = _start(forkserve, tmp_path, kind, "--proxy-protocol")
    haproxy = start_haproxy(tmp_path / send_proxy, server.port, send_proxy)
    try:
        for _ in range(2):
            # HAProxy connects from 127.0.0.1; the client from 127.0.0.2.
            with socket.socket() as client:
                client.settimeout(10)
                client.bind(("127.0.0.2", 0))
                client.connect(("127.0.0.1", haproxy.port))
                port = client.getsockname()[1]
                client.sendall(GET)
                body = _body(read_until_close(client))
            assert body.split()[:3] == [b"http", b"127.0.0.2", str(port).encode()]
        wait_for(lambda: server.access_log.read_text().count("127.0.0.2 ") == 2, 10,
                 what="the access log to name the client")
        # A connection without a PROXY header is served as it is (as gunicorn).
        assert _body(server.raw(GET)).split()[1] == b"127.0.0.1"
    finally:
        haproxy.stop()


# -- raw headers ------------------------------------------------------------------

def test_headers_set_the_client_for_the_app_and_access_log(forkserve, tmp_path, kind):
    server = _start(forkserve, tmp_path, kind, "--proxy-protocol", "auto")
    body = _body(server.raw(b"PROXY TCP4 192.0.2.7 127.0.0.1 4242 80\r\n" + GET))
    assert body.split()[1:3] == [b"192.0.2.7", b"4242"]
    body = _body(server.raw(b"PROXY TCP6 2001:db8::7 ::1 4243 80\r\n" + GET))
    assert body.split()[1:3] == [b"2001:db8::7", b"4243"]
    body = _body(server.raw(v2_inet("198.51.100.9", 4244, tlvs=b"\x05\x00\x02ab") + GET))
    assert body.split()[1:3] == [b"198.51.100.9", b"4244"]
    # UNKNOWN and LOCAL keep the connection's own address.
    assert _body(server.raw(b"PROXY UNKNOWN\r\n" + GET)).split()[1] == b"127.0.0.1"
    local = V2_SIGNATURE + b"\x20\x00\x00\x00"
    assert _body(server.raw(local + GET)).split()[1] == b"127.0.0.1"
    wait_for(lambda: all(a in server.access_log.read_text()
                         for a in ("192.0.2.7 ", "2001:db8::7 ", "198.51.100.9 ")), 10,
             what="the access log to name the clients")


def test_keep_alive_requests_after_the_header_keep_its_client(forkserve, tmp_path, kind):
    server = _start(forkserve, tmp_path, kind, "--proxy-protocol", "v1")
    keep = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    # Split across writes, the way a slow network delivers it.
    with server.connect() as s:
        s.sendall(b"PROXY TCP4 192.0.2.8 127.0.0.1 ")
        time.sleep(0.2)
        s.sendall(b"5555 80\r\nGET / HT")
        time.sleep(0.2)
        s.sendall(b"TP/1.1\r\nHost: x\r\n\r\n" + keep + GET)
        raw = read_until_close(s)
    assert raw.count(b"http 192.0.2.8 5555") == 3
    # A second PROXY line is not a header any more: a bad request.
    raw = server.raw(b"PROXY TCP4 192.0.2.8 127.0.0.1 5555 80\r\n" + keep
                     + b"PROXY TCP4 192.0.2.9 127.0.0.1 5555 80\r\n" + GET)
    assert raw.count(b"192.0.2.9") == 0 and b"HTTP/1.1 400 " in raw


def test_a_mode_reads_only_its_version(forkserve, tmp_path, kind):
    server = _start(forkserve, tmp_path, kind, "--proxy-protocol", "v2")
    assert server.raw(b"PROXY TCP4 192.0.2.7 127.0.0.1 4242 80\r\n" + GET).startswith(
        b"HTTP/1.1 400 ")
    assert _body(server.raw(v2_inet("198.51.100.9", 4244) + GET)).split()[1] == b"198.51.100.9"


def test_proxy_protocol_off_reads_no_header(forkserve, tmp_path, kind):
    server = _start(forkserve, tmp_path, kind)
    assert server.raw(b"PROXY TCP4 192.0.2.7 127.0.0.1 4242 80\r\n" + GET).startswith(
        b"HTTP/1.1 400 ")


# -- hostile clients --------------------------------------------------------------

HOSTILE = {
    "bad-v2-signature": (V2_SIGNATURE[:-2] + b"X\n" + b"\x21\x11\x00\x0c" + b"\x00" * 12 + GET,
                         b"HTTP/1.1 400 "),
    "bad-v2-version": (V2_SIGNATURE + b"\x31\x11\x00\x0c" + b"\x00" * 12 + GET, b"HTTP/1.1 400 "),
    "v2-length-beyond-bound": (V2_SIGNATURE + b"\x21\x11\xff\xff" + b"\x00" * 5000,
                               b"HTTP/1.1 400 "),
    "oversized-v1-line": (b"PROXY TCP4 " + b"1" * 200 + b"\r\n" + GET, b"HTTP/1.1 400 "),
    "bad-v1-port": (b"PROXY TCP4 192.0.2.7 127.0.0.1 99999 80\r\n" + GET, b"HTTP/1.1 400 "),
    "v1-family-mismatch": (b"PROXY TCP4 ::1 127.0.0.1 1 80\r\n" + GET, b"HTTP/1.1 400 "),
    "truncated-v2-then-eof": (v2_inet("192.0.2.7", 1)[:20], b""),
    "truncated-v1-then-eof": (b"PROXY TCP4 192.0.2.7", b""),
}


def test_hostile_headers_close_the_connection(forkserve, tmp_path, kind):
    server = _start(forkserve, tmp_path, kind, "--proxy-protocol")
    pids = server.workers()
    for case, (data, answer) in HOSTILE.items():
        with server.connect() as s:
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass
            raw = read_until_close(s)
        assert raw.startswith(answer) and b"200 OK" not in raw, (case, raw[:200])
        assert _body(server.raw(GET)).split()[0] == b"http", case
    assert server.workers() == pids


def test_a_header_from_an_untrusted_peer_is_forbidden(forkserve, tmp_path, kind):
    server = _start(forkserve, tmp_path, kind, "--proxy-protocol",
                    "--proxy-allow-from", "10.0.0.0/8")
    pids = server.workers()
    for header in (b"PROXY TCP4 192.0.2.7 127.0.0.1 4242 80\r\n", v2_inet("192.0.2.7", 1)):
        raw = server.raw(header + GET)
        assert raw.startswith(b"HTTP/1.1 403 ") and b"192.0.2.7" not in raw
    # Without a header, the same peer is served, with its own address.
    assert _body(server.raw(GET)).split()[1] == b"127.0.0.1"
    assert server.workers() == pids


def test_a_header_sent_slowly_is_ended_by_header_timeout(forkserve, tmp_path, kind):
    server = _start(forkserve, tmp_path, kind, "--proxy-protocol", "--header-timeout", "2")
    pids = server.workers()
    slow = []
    try:
        for _ in range(5):
            s = server.connect()
            s.sendall(b"PROXY TCP4 1")
            slow.append(s)
        start = time.monotonic()
        # Others are served meanwhile, at once.
        for _ in range(3):
            assert _body(server.raw(GET, timeout=5)).split()[0] == b"http"
        closed = 0
        for s in slow:
            s.settimeout(1)
            for _ in range(15):  # a byte a second: never a whole header
                try:
                    s.sendall(b"2")
                    if s.recv(4096) == b"":
                        break
                except socket.timeout:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
            else:
                continue
            closed += 1
        assert closed == len(slow)
        assert time.monotonic() - start < 30
    finally:
        for s in slow:
            s.close()
    assert server.workers() == pids
