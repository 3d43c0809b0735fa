"""forkserve behind a real nginx (Debian's nginx-light), over a unix socket,
configured with the shipped conf/nginx.conf."""

from __future__ import annotations

import hashlib
import signal
import time
from pathlib import Path

import pytest

from conftest import ROOT, free_port, parse_response, wait_for
from loadgen import Load
from servers import nginx_available, shipped_site, start_nginx

pytestmark = pytest.mark.e2e


@pytest.fixture
def nginx(tmp_path):
    """Start nginx with conf/nginx.conf in front of ``tmp_path/fs.sock``."""
    if not nginx_available():
        pytest.skip("nginx is not installed (Debian package nginx-light)")
    port = free_port()
    sock = tmp_path / "fs.sock"
    proxy = start_nginx(tmp_path / "nginx", shipped_site(str(sock), port), port)
    try:
        yield {"port": port, "sock": str(sock), "proc": proxy.proc}
    finally:
        proxy.stop()


def _via_nginx(port, request: bytes, timeout=30.0):
    import socket
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(1 << 20):
            data += chunk
    return parse_response(data)


def _start(forkserve, nginx, *args):
    # The fixture's unix=True binds a socket in its own tmp dir; bind ours.
    return forkserve("wsgi_basic:application", "-b", f"unix:{nginx['sock']}", *args, bind=False)


def test_wsgi_app_behind_nginx(forkserve, nginx):
    _start(forkserve, nginx, "-w", "2")
    status, _, body = wait_for(lambda: _ok(_via_nginx(nginx["port"], b"GET / HTTP/1.1\r\n"
                                                      b"Host: shop.example\r\nConnection: close\r\n\r\n")),
                               10, what="nginx to reach forkserve")
    assert (status, body) == (200, b"hello")


def _ok(resp):
    return resp if resp[0] == 200 else None


def test_forwarded_headers_trusted_only_from_the_proxy(forkserve, nginx):
    direct_port = free_port()
    server = _start(forkserve, nginx, "-w", "1", "-b", f"127.0.0.1:{direct_port}",
                    "--forwarded-allow-ips", "unix")
    req = (b"GET /environ HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n"
           b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n\r\n")
    _, _, body = _via_nginx(nginx["port"], req)
    env = dict(line.split("=", 1) for line in body.decode().splitlines())
    # nginx appended the real peer (127.0.0.1) to what the client claimed;
    # forkserve takes the rightmost address it does not trust as a proxy.
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["HTTP_X_FORWARDED_FOR"] == "6.6.6.6, 127.0.0.1"
    assert env["wsgi.url_scheme"] == "http"  # nginx says $scheme: plain http here
    # Straight to forkserve over TCP: 127.0.0.1 is not trusted here.
    server.port = direct_port
    _, _, body = server.request("GET", "/environ", headers={"X-Forwarded-For": "6.6.6.6",
                                                            "X-Forwarded-Proto": "https"})
    env = dict(line.split("=", 1) for line in body.decode().splitlines())
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["wsgi.url_scheme"] == "http"


def test_hup_through_nginx_has_no_502(forkserve, nginx):
    server = _start(forkserve, nginx, "-w", "2")
    import socket

    def connect(timeout):
        return socket.create_connection(("127.0.0.1", nginx["port"]), timeout=timeout)
    wait_for(lambda: _ok(_via_nginx(nginx["port"], b"GET / HTTP/1.1\r\nHost: t\r\n"
                                    b"Connection: close\r\n\r\n")), 10, what="nginx up")
    with Load(connect, "/", keepalive=3, fresh=2) as load:
        for i in range(5):
            time.sleep(0.4)
            before = server.log.count("Reload complete")
            server.signal(signal.SIGHUP)
            wait_for(lambda: server.log.count("Reload complete") > before, 20, what="reload")
        time.sleep(0.5)
        result = load.stop()
    print(f"\n[nginx] HUP x5 through nginx: {result}")
    assert result.failed == 0, result
    assert result.ok > 100


def test_large_upload_and_download_through_nginx(forkserve, nginx):
    _start(forkserve, nginx, "-w", "1")
    wait_for(lambda: _ok(_via_nginx(nginx["port"], b"GET / HTTP/1.1\r\nHost: t\r\n"
                                    b"Connection: close\r\n\r\n")), 10, what="nginx up")
    payload = bytes(range(256)) * (20 * 4096)  # 20 MiB
    req = (b"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
           % len(payload)) + payload
    status, _, body = _via_nginx(nginx["port"], req, timeout=60)
    assert status == 200 and hashlib.sha256(body).digest() == hashlib.sha256(payload).digest()
    size = 50 * 1024 * 1024
    status, headers, body = _via_nginx(nginx["port"], b"GET /big?%d HTTP/1.1\r\nHost: t\r\n"
                                       b"Connection: close\r\n\r\n" % size, timeout=60)
    assert status == 200 and len(body) == size


def test_asgi_websocket_through_nginx(forkserve, nginx):
    import asyncio

    import websockets
    forkserve("asgi_basic:app", "-b", f"unix:{nginx['sock']}", "-w", "2", bind=False)
    wait_for(lambda: _ok(_via_nginx(nginx["port"], b"GET / HTTP/1.1\r\nHost: t\r\n"
                                    b"Connection: close\r\n\r\n")), 10, what="nginx up")

    async def run():
        async with websockets.connect(f"ws://127.0.0.1:{nginx['port']}/ws/echo") as ws:
            await ws.send("through nginx")
            text = await ws.recv()
            await ws.send(b"\x01" * 100_000)
            return text, await ws.recv()
    text, data = asyncio.run(asyncio.wait_for(run(), 20))
    assert text == "through nginx" and data == b"\x01" * 100_000


def test_shipped_prod_config_behind_shipped_nginx_conf(forkserve, tmp_path):
    """conf/prod.py behind conf/nginx.conf, overriding only the socket path,
    the pidfile, the user (and the worker count: cpu_count()+1 workers is
    the host's business, not the test's).  Without systemd the socket's
    directory does not exist yet; forkserve makes it, the socket is 0660,
    and nginx, running as another user, reaches it through its group.  The
    example WSGI app, then the example ASGI app with its chat WebSocket at
    /ws, answer through nginx."""
    import asyncio
    import grp
    import os
    import shutil
    import stat
    import tempfile

    import psutil
    import websockets

    if not nginx_available():
        pytest.skip("nginx is not installed (Debian package nginx-light)")
    as_root = os.getuid() == 0
    # Outside pytest's tmp_path (0700): nginx's user must reach the socket.
    base = Path(tempfile.mkdtemp(prefix="forkserve-prod-"))
    os.chmod(base, 0o755)
    sock = base / "run" / "forkserve" / "forkserve.sock"
    port = free_port()
    proxy = start_nginx(base / "nginx", shipped_site(str(sock), port), port,
                        user="www-data" if as_root else "root")
    overrides = ["-c", str(ROOT / "conf" / "prod.py"), "-b", f"unix:{sock}",
                 "-p", str(base / "forkserve.pid"), "-w", "2"]
    if as_root:
        # prod.py runs the workers as www-data:www-data.  The test's Python
        # may live where only root may read (pyenv under /root), so the
        # workers stay root, in prod.py's group: the socket is then
        # root:www-data 0660 and nginx (www-data) gets in through the group.
        overrides += ["-u", "root"]
    try:
        server = forkserve("examples.hello_wsgi:application", *overrides, bind=False, cwd=ROOT)
        mode = os.stat(sock)
        assert stat.S_IMODE(mode.st_mode) == 0o660
        assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o755
        assert (base / "forkserve.pid").read_text().strip() == str(server.pid)
        if as_root:
            www_data = grp.getgrnam("www-data").gr_gid
            assert (mode.st_uid, mode.st_gid) == (0, www_data)
            for pid in server.workers():
                assert psutil.Process(pid).gids().real == www_data
        status, _, body = wait_for(lambda: _ok(_via_nginx(port, b"GET / HTTP/1.1\r\nHost: t\r\n"
                                                          b"Connection: close\r\n\r\n")),
                                   10, what="nginx to reach forkserve")
        assert body.startswith(b"Hello from forkserve (worker ")
        payload = os.urandom(2_000_000)
        status, _, body = _via_nginx(port, b"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close"
                                     b"\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
        assert status == 200 and body == payload
        status, _, body = _via_nginx(port, b"GET /stream HTTP/1.1\r\nHost: t\r\n"
                                     b"Connection: close\r\n\r\n")
        assert body == b"".join(b"line %d\n" % i for i in range(5))
        server.stop()
        assert not sock.exists()

        forkserve("examples.hello_asgi:app", *overrides, bind=False, cwd=ROOT)
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
        status, _, body = wait_for(lambda: _ok(_via_nginx(port, b"GET / HTTP/1.1\r\nHost: t\r\n"
                                                          b"Connection: close\r\n\r\n")),
                                   10, what="nginx to reach the ASGI app")
        assert body.startswith(b"Hello from forkserve (worker ")  # lifespan's greeting
        status, _, page = _via_nginx(port, b"GET /chat HTTP/1.1\r\nHost: t\r\n"
                                     b"Connection: close\r\n\r\n")
        assert status == 200 and b'location.host + "/ws"' in page

        async def chat():
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
                await ws.send("hello over nginx")
                return await ws.recv()
        assert asyncio.run(asyncio.wait_for(chat(), 20)) == "echo: hello over nginx"
    finally:
        proxy.stop()
        shutil.rmtree(base, ignore_errors=True)
