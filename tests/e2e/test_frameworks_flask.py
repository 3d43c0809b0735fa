"""Differential tests: a real Flask app (tests/apps/frameworks/flaskapp.py)
under forkserve's sync worker and under gunicorn's gthread worker, direct
and through nginx, driven by the same raw client; every difference must be
declared in differential.DECLARED."""

from __future__ import annotations

import json
import random

import pytest

from differential import (Conn, cookie_header, cookies_from, differ, encode_request, observe,
                          expect_100_unread_body, random_cookies, read_all)
from servers import differential

pytestmark = pytest.mark.e2e
VIA = pytest.mark.parametrize("via", ["direct", "nginx"])
FORM = [("Content-Type", "application/x-www-form-urlencoded")]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flask")
    state = tmp / "state"
    state.mkdir()
    (state / "payload.bin").write_bytes(random.Random(11).randbytes(1_500_000))
    with differential(tmp, "flaskapp:app", "wsgi", env={"FS_FRAMEWORKS_STATE": str(state)},
                      ready_path="/ping", forkserve_args=("--threads", "2")) as pair:
        yield pair


@VIA
def test_send_file(pair, via):
    def scenario(host, port):
        seen = []
        with Conn(host, port) as c:
            full = c.request("GET", "/file")
            seen.append(observe(full))
            etag, modified = full.header("etag"), full.header("last-modified")
            seen.append(observe(c.request("HEAD", "/file")))
            seen.append(observe(c.request("GET", "/file", [("Range", "bytes=1000-1999")])))
            seen.append(observe(c.request("GET", "/file", [("Range", "bytes=-10")])))
            seen.append(observe(c.request("GET", "/file", [("Range", "bytes=9000000-")])))
            seen.append(observe(c.request("GET", "/file", [("If-None-Match", etag)])))
            seen.append(observe(c.request("GET", "/file", [("If-Modified-Since", modified)])))
            seen.append(observe(c.request("GET", "/download")))
        return seen
    differ(pair, via, scenario)


def _chunked(body: bytes, sizes: list[int]) -> bytes:
    out, pos, i = bytearray(), 0, 0
    while pos < len(body):
        size = sizes[i % len(sizes)]
        out += b"%x\r\n" % len(body[pos:pos + size]) + body[pos:pos + size] + b"\r\n"
        pos, i = pos + size, i + 1
    return bytes(out + b"0\r\n\r\n")


@VIA
def test_chunked_upload_read_from_request_stream(pair, via):
    payload = random.Random(5).randbytes(3_000_000)
    body = _chunked(payload, [1, 8192, 100_000, 3, 65536, 777_777])
    head = [("Content-Type", "application/octet-stream"), ("Transfer-Encoding", "chunked")]

    def scenario(host, port):
        seen = []
        with Conn(host, port) as c:
            seen.append(observe(c.request("POST", "/upload", head, body), json.loads))
            # The same with Expect: 100-continue: the body goes once the
            # server asks for it.
            c.send(encode_request("POST", "/upload", head + [("Expect", "100-continue")]))
            interim = c.response("POST", interim=True)
            seen.append({"interim": interim.status})
            c.send(body)
            seen.append(observe(c.response("POST"), json.loads))
            seen.append(observe(c.request("POST", "/upload", head, b"0\r\n\r\n"), json.loads))
        return seen
    ours = differ(pair, via, scenario)
    assert ours[0]["body"]["size"] == len(payload) and ours[1] == {"interim": 100}


@VIA
def test_streaming_response(pair, via):
    def scenario(host, port):
        seen = []
        with Conn(host, port) as c:
            seen.append(observe(c.request("GET", "/stream?n=3000")))
            seen.append(observe(c.request("GET", "/stream?n=0")))
        # HTTP/1.0 knows no chunked encoding: the body ends with the connection.
        with Conn(host, port) as c:
            c.send(b"GET /stream?n=50 HTTP/1.0\r\nHost: t\r\n\r\n")
            seen.append(observe(c.response()))
        return seen
    differ(pair, via, scenario)


@VIA
def test_sessions_and_cookies(pair, via):
    hide = [random_cookies("session")]

    def scenario(host, port):
        seen, jar = [], {}
        with Conn(host, port) as c:
            resp = c.request("POST", "/login", FORM, b"user=alice")
            seen.append(observe(resp, normalize=hide))
            cookies_from(resp, jar)
            resp = c.request("GET", "/me", [cookie_header(jar)])
            seen.append(observe(resp, json.loads, hide))
            resp = c.request("POST", "/logout", [cookie_header(jar)])
            seen.append(observe(resp, normalize=hide))
            cookies_from(resp, jar)
            seen.append(observe(c.request("GET", "/me", [cookie_header(jar)] if jar else []),
                                json.loads, hide))
            seen.append(observe(c.request("GET", "/cookie"), json.loads, hide))
        return seen
    ours = differ(pair, via, scenario)
    assert ours[1]["body"] == {"user": "alice"} and ours[3]["body"] == {"user": None}


# Requests whose environ is worth comparing: encoded and non-ASCII paths,
# repeated and odd header names, a body, an absolute-form target.
ODD_REQUESTS = [
    ("GET", "/environ/caf%C3%A9/a%2Fb/%25?x=1&x=2&y=%20z&%C3%A9=%E2%82%AC",
     [("X-Dup", "a"), ("X-Dup", "b"), ("X-Custom-Header", "  padded value  "),
      ("X_Underscore", "u"), ("Accept-Encoding", "gzip")], b""),
    ("POST", "/environ", FORM, b"a=1&b=%C3%A9"),
    ("GET", "http://test.example/environ?absolute=1", [], b""),
    ("GET", "/environ/%ff%fe?raw=%ff", [("X-Latin", "caf\xe9")], b""),
]


@VIA
def test_wsgi_environ(pair, via):
    def scenario(host, port):
        with Conn(host, port) as c:
            return [observe(c.request(method, target, headers, body), json.loads)
                    for method, target, headers, body in ODD_REQUESTS]
    differ(pair, via, scenario)


@VIA
def test_generator_failing_mid_stream(pair, via):
    """The head is out when the app fails: the client must see a cut-short
    body (no last chunk), never a complete one."""
    def scenario(host, port):
        return [read_all(host, port, encode_request("GET", "/stream-fails",
                                                    [("Connection", "close")]))]
    ours = differ(pair, via, scenario)
    assert ours[0]["ends with the last chunk"] is False


@VIA
def test_expect_100_continue_for_a_body_the_app_never_reads(pair, via):
    """POST /logout never reads its body: see expect_100_unread_body."""
    differ(pair, via, lambda host, port: expect_100_unread_body(host, port, "/logout", "/ping"))
