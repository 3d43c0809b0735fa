"""gunicorn's secure_scheme_headers and forwarder_headers on both worker
kinds, trusted only from forwarded_allow_ips."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

KINDS = [("sync", "proxy_echo:wsgi"), ("asgi", "proxy_echo:asgi")]


@pytest.fixture(params=KINDS, ids=[k for k, _ in KINDS])
def trusted(request, forkserve):
    kind, app = request.param
    return forkserve(app, "-k", kind, "-w", "1", "--forwarded-allow-ips", "127.0.0.1")


@pytest.fixture(params=KINDS, ids=[k for k, _ in KINDS])
def untrusted(request, forkserve):
    kind, app = request.param
    return forkserve(app, "-k", kind, "-w", "1", "--forwarded-allow-ips", "10.9.9.9")


@pytest.mark.parametrize("headers, scheme", [
    ({"X-Forwarded-Ssl": "on"}, "https"),
    ({"X-Forwarded-Protocol": "ssl"}, "https"),
    ({"X-Forwarded-Proto": "https"}, "https"),
    ({"X-Forwarded-Proto": "http"}, "http"),
    ({"X-Forwarded-Ssl": "off"}, "http"),
    ({}, "http"),
])
def test_secure_scheme_headers_from_a_trusted_peer(trusted, headers, scheme):
    status, _, body = trusted.get("/", headers=headers)
    assert status == 200 and body.split()[0] == scheme.encode()


@pytest.mark.parametrize("headers", [{"X-Forwarded-Ssl": "on"}, {"X-Forwarded-Protocol": "ssl"},
                                     {"X-Forwarded-Proto": "https"}])
def test_secure_scheme_headers_from_an_untrusted_peer_are_ignored(untrusted, headers):
    status, _, body = untrusted.get("/", headers=headers)
    assert status == 200 and body.split()[0] == b"http"


def test_disagreeing_scheme_headers_are_a_400_and_the_worker_serves_on(trusted):
    pids = trusted.workers()
    status, headers, _ = trusted.get("/", headers={"X-Forwarded-Ssl": "on",
                                                   "X-Forwarded-Proto": "http"})
    assert status == 400
    assert trusted.get("/")[0] == 200 and trusted.workers() == pids


def test_disagreeing_scheme_headers_from_an_untrusted_peer_are_ignored(untrusted):
    status, _, body = untrusted.get("/", headers={"X-Forwarded-Ssl": "on",
                                                  "X-Forwarded-Proto": "http"})
    assert status == 200 and body.split()[0] == b"http"


def test_configured_secure_scheme_headers(forkserve, tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text("secure_scheme_headers = {'X-SCHEME': 'secure'}\n"
                    "forwarded_allow_ips = '127.0.0.1'\n")
    for kind, app in KINDS:
        server = forkserve(app, "-k", kind, "-w", "1", "-c", str(conf))
        assert server.get("/", headers={"X-Scheme": "secure"})[2].split()[0] == b"https"
        # The default ones are not listed any more.
        assert server.get("/", headers={"X-Forwarded-Ssl": "on"})[2].split()[0] == b"http"
        server.stop()


def test_forwarder_headers_set_script_name_from_a_trusted_peer_only(forkserve):
    trusted = forkserve("proxy_echo:wsgi", "-w", "1", "--forwarded-allow-ips", "127.0.0.1",
                        "--forwarder-headers", "SCRIPT_NAME,REMOTE_USER")
    body = trusted.get("/app/x", headers={"SCRIPT_NAME": "/app", "REMOTE_USER": "bob"})[2]
    assert body.split()[3:] == [b"/app", b"bob"]
    # Without leave in forwarder_headers, a name with '_' never reaches the app.
    default = forkserve("proxy_echo:wsgi", "-w", "1", "--forwarded-allow-ips", "127.0.0.1")
    body = default.get("/app/x", headers={"SCRIPT_NAME": "/app", "REMOTE_USER": "bob"})[2]
    assert body.split()[3:] == [b"/app", b"-"]
    untrusted = forkserve("proxy_echo:wsgi", "-w", "1", "--forwarded-allow-ips", "10.9.9.9",
                          "--forwarder-headers", "SCRIPT_NAME,REMOTE_USER")
    body = untrusted.get("/app/x", headers={"SCRIPT_NAME": "/app", "REMOTE_USER": "bob"})[2]
    assert body.split()[3:] == [b"-", b"-"]
