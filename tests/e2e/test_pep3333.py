"""PEP 3333 through the real sync worker, with wsgiref's validator around the
app: any violation raises in the worker and shows up as a 500 here."""

from __future__ import annotations

import pytest

from conftest import APPS, parse_response

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def markers(tmp_path_factory):
    return tmp_path_factory.mktemp("markers")


@pytest.fixture
def server(forkserve, markers):
    return forkserve("wsgi_validated:application", "-w", "1",
                     env={"FS_TEST_MARKERS": str(markers)})


def _no_500(server):
    assert "AssertionError" not in server.log, server.log


def test_get_and_post_body_read_in_pieces(server):
    assert server.get("/") == (200, server.get("/")[1], b"hello")
    body = bytes(range(256)) * 40
    status, _, echoed = server.request("POST", "/echo", body=body)
    assert (status, echoed) == (200, body)
    _no_500(server)


def test_chunked_request_body(server):
    raw = server.raw(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                     b"Connection: close\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")
    status, _, body = parse_response(raw)
    assert (status, body) == (200, b"hello world")
    _no_500(server)


def test_wsgi_input_iteration(server):
    status, _, body = server.request("POST", "/lines", body=b"a\nb\nc")
    assert (status, body) == (200, b"3 lines")


def test_write_callable_then_iterable(server):
    status, headers, body = server.get("/write")
    assert status == 200
    assert headers["transfer-encoding"] == "chunked"
    assert body == b"written;returned"
    _no_500(server)


def test_exc_info_before_headers_replaces_the_status(server):
    status, _, body = server.get("/excinfo")
    assert (status, body) == (503, b"recovered")
    _no_500(server)


def test_iterable_close_is_called(server, markers):
    status, _, body = server.get("/close?closed-1.txt")
    assert (status, body) == (200, b"ab")
    assert (markers / "closed-1.txt").read_text() == "closed"


def test_file_wrapper_is_sent_whole(server):
    # Behind the validator the wrapper is wrapped again, so it is iterated.
    status, _, body = server.get("/file")
    assert (status, body) == (200, (APPS / "wsgi_validated.py").read_bytes())


def test_file_wrapper_uses_sendfile_with_a_length(forkserve):
    # Without the validator in between, the file goes out with sendfile():
    # the length is known up front instead of being chunked.
    server = forkserve("wsgi_basic:application", "-w", "1")
    status, headers, body = server.get("/file")
    expected = (APPS / "wsgi_basic.py").read_bytes()
    assert status == 200
    assert headers["content-length"] == str(len(expected))
    assert "transfer-encoding" not in headers
    assert body == expected


@pytest.mark.parametrize("path", ["/204", "/304"])
def test_no_body_statuses(server, path):
    raw = server.raw(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n"
                     f"Connection: close\r\n\r\n".encode())
    first, _, rest = raw.partition(b"\r\n\r\n")
    assert first.startswith(f"HTTP/1.1 {path[1:]} ".encode())
    assert b"content-length" not in first.lower() and b"transfer-encoding" not in first.lower()
    # The next response follows at once: no body bytes in between.
    assert rest.startswith(b"HTTP/1.1 200 OK")


def test_head_has_no_body(server):
    raw = server.raw(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n"
                     b"Connection: close\r\n\r\n")
    first, _, rest = raw.partition(b"\r\n\r\n")
    assert b"content-length: 5" in first.lower()
    assert rest.startswith(b"HTTP/1.1 200 OK")
    assert rest.endswith(b"hello")


def test_unknown_length_is_chunked_on_11_and_close_delimited_on_10(server):
    status, headers, body = server.get("/stream")
    assert headers.get("transfer-encoding") == "chunked" and body == b"one;two;three"
    raw = server.raw(b"GET /stream HTTP/1.0\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert b"connection: close" in head.lower()
    assert body == b"one;two;three"


def test_http_10_keep_alive(server):
    with server.connect() as s:
        s.sendall(b"GET /pid HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        first = s.recv(65536)
        assert b"connection: keep-alive" in first.lower()
        s.sendall(b"GET /pid HTTP/1.0\r\n\r\n")
        second = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            second += chunk
    assert first.split(b"\r\n\r\n")[1] == second.split(b"\r\n\r\n")[1]  # same worker


def test_app_exception_is_a_500_and_the_worker_serves_on(server):
    pid_before = server.get("/pid")[2]
    status, _, body = server.get("/boom")
    assert status == 500
    assert b"app failure" not in body and b"Traceback" not in body
    assert "RuntimeError: app failure for the test" in server.log
    assert "Traceback" in server.log
    assert server.get("/pid")[2] == pid_before


def test_header_names_with_underscores_are_dropped(forkserve):
    # X-Forwarded_For would become HTTP_X_FORWARDED_FOR too: it must not be
    # able to pose as the header a proxy sets.
    server = forkserve("wsgi_basic:application", "-w", "1", "--forwarded-allow-ips", "10.9.9.9")
    _, _, body = server.request("GET", "/environ", headers={"X-Forwarded_For": "6.6.6.6",
                                                            "X-Real-Thing": "yes"})
    env = dict(line.split("=", 1) for line in body.decode().splitlines())
    assert "HTTP_X_FORWARDED_FOR" not in env
    assert env["HTTP_X_REAL_THING"] == "yes"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
