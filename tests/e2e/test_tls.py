"""TLS termination on both worker kinds (sync, sync with threads, ASGI):
real clients (curl, httpx, ``openssl s_client``, websockets, raw TLS
sockets) against a certificate authority made by the test.

Hostile handshakes (plaintext HTTP, garbage, half a ClientHello then a stall,
a close mid-handshake) must never hold up other clients, are bounded by
header_timeout, and leave the worker PIDs unchanged.
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import APPS, parse_response, read_until_close, run_forkserve, wait_for

sys.path.insert(0, str(Path(__file__).parent.parent))
from tlscerts import OPENSSL, SERVER2_SERIAL, SERVER_SERIAL, make_pki  # noqa: E402

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")]

CURL = shutil.which("curl")

#: (id, app, extra arguments): each worker kind.
KINDS = [
    ("sync", "wsgi_basic:application", ("-k", "sync")),
    ("threads", "wsgi_basic:application", ("-k", "sync", "--threads", "4")),
    ("asgi", "asgi_basic:app", ("-k", "asgi")),
]
KIND_IDS = [k[0] for k in KINDS]


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _server_args(pki: Path, cert: str = "server") -> tuple[str, ...]:
    return ("--certfile", str(pki / f"{cert}.pem"), "--keyfile", str(pki / f"{cert}.key"))


def client_context(pki: Path, cert: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert:
        ctx.load_cert_chain(str(pki / f"{cert}.pem"), str(pki / f"{cert}.key"))
    return ctx


def tls_connect(port: int, ctx: ssl.SSLContext, timeout: float = 10.0) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def read_response(sock: ssl.SSLSocket) -> tuple[int, dict[str, str], bytes]:
    """One response off a keep-alive connection (Content-Length or chunked)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response head: {buf!r}"
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in head.decode("latin-1").split("\r\n")[1:])}
    if "content-length" in headers:
        need = int(headers["content-length"])
        while len(rest) < need:
            chunk = sock.recv(65536)
            assert chunk, "closed mid-body"
            rest += chunk
    else:
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            assert chunk, "closed mid-body"
            rest += chunk
    return parse_response(head + b"\r\n\r\n" + rest)


def client_hello(half: bool = False) -> bytes:
    """A real TLS ClientHello, made with a memory BIO (or its first half)."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    return hello[:len(hello) // 2] if half else hello


def peer_serial(port: int, pki: Path) -> int:
    with tls_connect(port, client_context(pki)) as s:
        der = s.getpeercert(binary_form=True)
    proc = subprocess.run([OPENSSL, "x509", "-inform", "DER", "-noout", "-serial"],
                          input=der, capture_output=True, check=True, timeout=10)
    return int(proc.stdout.decode().strip().split("=")[1], 16)


def start(forkserve, kind: str, pki: Path, *args: str, cert: str = "server"):
    _, app, extra = next(k for k in KINDS if k[0] == kind)
    return forkserve(app, *extra, *_server_args(pki, cert), *args)


# -- served over TLS -------------------------------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KIND_IDS)
def test_real_clients_are_served_over_tls(forkserve, pki, kind):
    server = start(forkserve, kind, pki, "-w", "1")
    pids = server.workers()
    url = f"https://127.0.0.1:{server.port}"
    if CURL:
        out = subprocess.run([CURL, "-sS", "--cacert", str(pki / "ca.pem"), url + "/",
                              "https://localhost:%d/" % server.port],
                             capture_output=True, timeout=20)
        assert out.returncode == 0 and out.stdout == b"hellohello", out.stderr
    # httpx, several requests on one keep-alive connection, and the scheme.
    ctx = client_context(pki)
    with httpx.Client(verify=ctx, timeout=10) as client:
        for _ in range(3):
            assert client.get(url + "/").text == "hello"
        if kind == "asgi":
            assert "'scheme': 'https'" in client.get(url + "/scope").text
        else:
            assert "wsgi.url_scheme=https" in client.get(url + "/environ").text
        big = client.post(url + "/echo", content=b"x" * (3 << 20))
        assert big.status_code == 200 and big.content == b"x" * (3 << 20)
    # openssl s_client
    proc = subprocess.run([OPENSSL, "s_client", "-connect", f"127.0.0.1:{server.port}",
                           "-CAfile", str(pki / "ca.pem"), "-verify_return_error", "-quiet"],
                          input=b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                          capture_output=True, timeout=20)
    assert proc.stdout.startswith(b"HTTP/1.1 200") and proc.stdout.endswith(b"hello"), proc
    assert server.workers() == pids


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KIND_IDS)
def test_keep_alive_chunked_and_large_bodies_over_tls(forkserve, pki, kind):
    server = start(forkserve, kind, pki, "-w", "1")
    with tls_connect(server.port, client_context(pki)) as s:
        for _ in range(3):  # keep-alive: three exchanges, one TLS connection
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(s)[2] == b"hello"
        chunks = [b"a" * 10, b"b" * 70000, b"c"]
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
        assert read_response(s)[2] == b"".join(chunks)
        s.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")  # a chunked response
        assert read_response(s)[2] == b"part0;part1;part2;"
        if kind != "asgi":
            # wsgi.file_wrapper: sendfile cannot go through TLS; read and written.
            s.sendall(b"GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(s)[2] == (APPS / "wsgi_basic.py").read_bytes()
            s.sendall(b"GET /big?5000000 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert len(read_response(s)[2]) == 5000000


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["sync", "asgi"])
def test_tls_on_a_unix_socket(forkserve, pki, kind):
    _, app, extra = next(k for k in KINDS if k[0] == kind)
    server = forkserve(app, *extra, *_server_args(pki), unix=True)
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.settimeout(10)
    raw.connect(server.unix)
    with client_context(pki).wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert parse_response(read_until_close(s))[2] == b"hello"


@pytest.mark.timeout(60)
def test_wss_websocket(forkserve, pki):
    from websockets.sync.client import connect

    server = start(forkserve, "asgi", pki)
    ctx = client_context(pki)
    with connect(f"wss://127.0.0.1:{server.port}/ws/scheme", ssl=ctx, open_timeout=10) as ws:
        assert ws.recv(timeout=10) == "wss"
        ws.send("over tls")
        assert ws.recv(timeout=10) == "over tls"
        ws.send(b"\x00" * 200000)
        assert ws.recv(timeout=10) == b"\x00" * 200000


# -- hostile handshakes ---------------------------------------------------------------

def _closed_without_http(sock: socket.socket) -> bytes:
    try:
        data = read_until_close(sock)
    except socket.timeout:
        raise AssertionError("the server did not close the connection") from None
    assert not data.startswith(b"HTTP/"), data
    return data


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", KIND_IDS)
def test_hostile_handshakes_never_block_other_clients(forkserve, pki, kind):
    server = start(forkserve, kind, pki, "-w", "1", "--header-timeout", "3")
    pids = server.workers()
    ctx = client_context(pki)
    port = server.port

    def served_quickly() -> None:
        t0 = time.monotonic()
        with tls_connect(port, ctx) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert parse_response(read_until_close(s))[2] == b"hello"
        assert time.monotonic() - t0 < 2.0  # loaded machine; the stalls below last 3 s

    # Plaintext HTTP to the TLS port, and garbage: closed, with no HTTP
    # answer and no reset, as gunicorn and uvicorn close it.
    for data in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00\xffgarbage" * 50):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(data)
            assert s.recv(100) == b""
    # Stalls: half a ClientHello, a TCP connection that says nothing, a TLS
    # connection that completes its handshake and sends nothing.
    stalled_at = time.monotonic()  # before the server accepts any of them
    half = socket.create_connection(("127.0.0.1", port), timeout=10)
    half.sendall(client_hello(half=True))
    silent = socket.create_connection(("127.0.0.1", port), timeout=10)
    idle_tls = tls_connect(port, ctx)
    # Aborted mid-handshake: a FIN, then a reset after a half hello.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(client_hello()[:40])
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(client_hello(half=True))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    # A TLS client gone mid-request without close_notify.
    with tls_connect(port, ctx) as t:
        t.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        t.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    for _ in range(5):
        served_quickly()
    assert time.monotonic() - stalled_at < 3.0, "too slow to prove anything: rerun"
    # The stalled ones are closed once header_timeout (3 s) has passed.
    for sock in (half, silent):
        with sock:
            sock.settimeout(10)
            _closed_without_http(sock)
            assert 2.8 < time.monotonic() - stalled_at < 9.0
    with idle_tls:
        idle_tls.settimeout(10)
        try:
            assert idle_tls.recv(100) == b""
        except (ssl.SSLError, ConnectionResetError):
            pass
    served_quickly()
    assert server.workers() == pids


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["sync", "asgi"])
def test_stalled_handshakes_make_room_at_worker_connections(forkserve, pki, kind):
    """Connections still in their handshake are waiting ones: at
    worker_connections the oldest is closed to serve a new client."""
    server = start(forkserve, kind, pki, "-w", "1", "--worker-connections", "3",
                   "--header-timeout", "30")
    stalled = []
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        s.sendall(client_hello(half=True))
        stalled.append(s)
    time.sleep(0.5)
    t0 = time.monotonic()
    with tls_connect(server.port, client_context(pki)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert parse_response(read_until_close(s))[2] == b"hello"
    assert time.monotonic() - t0 < 5.0
    assert stalled[0].recv(100) == b""  # the oldest made room
    for s in stalled:
        s.close()


# -- client certificates, ciphers, versions ----------------------------------------------

def _refused(port: int, ctx: ssl.SSLContext) -> None:
    """The handshake, or the first read after it (TLS 1.3 checks the
    client's certificate after the client thinks it is done), fails."""
    try:
        with tls_connect(port, ctx) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = read_until_close(s)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return
    assert not data.startswith(b"HTTP/"), data


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["sync", "asgi"])
def test_mutual_tls(forkserve, pki, kind):
    server = start(forkserve, kind, pki, "--cert-reqs", "2", "--ca-certs", str(pki / "ca.pem"))
    pids = server.workers()
    _refused(server.port, client_context(pki))
    _refused(server.port, client_context(pki, "rogue"))  # signed by another CA
    with tls_connect(server.port, client_context(pki, "client")) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert parse_response(read_until_close(s))[2] == b"hello"
    if CURL:
        out = subprocess.run([CURL, "-sS", "--cacert", str(pki / "ca.pem"), "--cert",
                              str(pki / "client.pem"), "--key", str(pki / "client.key"),
                              f"https://127.0.0.1:{server.port}/"], capture_output=True,
                             timeout=20)
        assert out.stdout == b"hello", out.stderr
    assert server.workers() == pids


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["sync", "asgi"])
def test_minimum_version_and_ciphers(forkserve, pki, kind):
    server = start(forkserve, kind, pki, "--ssl-min-version", "TLSv1.3")
    old = client_context(pki)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        tls_connect(server.port, old).close()
    with tls_connect(server.port, client_context(pki)) as s:
        assert s.version() == "TLSv1.3"

    server = start(forkserve, kind, pki, "--ciphers", "ECDHE-ECDSA-AES256-GCM-SHA384")
    for cipher, ok in (("ECDHE-ECDSA-AES128-GCM-SHA256", False),
                       ("ECDHE-ECDSA-AES256-GCM-SHA384", True)):
        ctx = client_context(pki)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(cipher)
        if ok:
            with tls_connect(server.port, ctx) as s:
                assert s.cipher()[0] == cipher
        else:
            with pytest.raises((ssl.SSLError, ConnectionResetError)):
                tls_connect(server.port, ctx).close()


# -- certificates on disk: startup errors, HUP ------------------------------------------

@pytest.mark.parametrize("args, line", [
    (("--certfile", "@/server.pem", "--keyfile", "@/other.key"),
     "forkserve: error: keyfile: the private key in @/other.key does not match the "
     "certificate in @/server.pem (command line)"),
    (("--certfile", "@/missing.pem"),
     "forkserve: error: certfile: cannot read @/missing.pem: No such file or directory "
     "(command line)"),
])
def test_bad_certificate_is_one_line_and_exit_2(pki, args, line):
    args = tuple(a.replace("@", str(pki)) for a in args)
    for extra in ((), ("--check-config",)):
        proc = run_forkserve(*extra, *args, "wsgi_basic:application")
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip() == line.replace("@", str(pki)), proc.stderr
        assert "Booting" not in proc.stderr + proc.stdout


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["sync", "asgi"])
def test_hup_reads_new_certificates_and_drains_over_tls(forkserve, pki, kind, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(pki / "server.pem", cert)
    shutil.copy(pki / "server.key", key)
    _, app, extra = next(k for k in KINDS if k[0] == kind)
    server = forkserve(app, *extra, "-w", "2", "--certfile", str(cert), "--keyfile", str(key),
                       "--graceful-timeout", "20")
    old = set(server.workers())
    assert peer_serial(server.port, pki) == SERVER_SERIAL
    # A request in flight over TLS when the HUP comes: the old worker drains it.
    slow: dict[str, object] = {}

    def in_flight() -> None:
        with tls_connect(server.port, client_context(pki), timeout=30) as s:
            s.sendall(b"GET /sleep?3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            slow["answer"] = parse_response(read_until_close(s))[2]

    t = threading.Thread(target=in_flight)
    t.start()
    time.sleep(0.5)
    shutil.copy(pki / "server2.pem", cert)
    shutil.copy(pki / "server2.key", key)
    server.signal(signal.SIGHUP)
    server.wait_workers(2, timeout=30, exclude=old)
    assert peer_serial(server.port, pki) == SERVER2_SERIAL
    t.join(30)
    assert slow.get("answer") == b"slept"
    # A broken certificate on the next HUP: the reload fails, the workers
    # serving keep their certificate.
    serving = set(server.workers())
    key.write_bytes((pki / "other.key").read_bytes())
    server.signal(signal.SIGHUP)
    server.wait_log("Reload failed, keeping the running config: keyfile: the private key in")
    time.sleep(0.5)
    assert set(server.workers()) == serving
    assert peer_serial(server.port, pki) == SERVER2_SERIAL
