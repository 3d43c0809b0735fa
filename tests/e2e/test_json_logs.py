"""JSON lines logs from real forkserve processes, both worker kinds: each
access-log line parses with json.loads and says what the test sent; the
error log is JSON too."""

from __future__ import annotations

import datetime
import json
import time

import pytest

from conftest import parse_response, read_until_close, wait_for

pytestmark = pytest.mark.e2e

APPS = {"sync": "wsgi_basic:application", "asgi": "asgi_basic:app"}
UA = b'tester "q" \\ \xff\xfe caf\xc3\xa9'  # quotes, a backslash, not UTF-8, UTF-8


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["sync", "asgi"])
def test_access_and_error_logs_are_json_lines(forkserve, tmp_path, kind):
    access = tmp_path / "access.log"
    server = forkserve(APPS[kind], "-k", kind, "-w", "1", "--log-format", "json",
                       "--access-logfile", str(access),
                       "--access-logformat", "%(h)s %({x-request-id}i)s %({content-type}o)s")
    [worker] = server.wait_workers(1)
    sent = [
        (b"GET /?a=1&b=%22 HTTP/1.1\r\nHost: x\r\nUser-Agent: " + UA +
         b"\r\nReferer: http://ref/\r\nX-Request-Id: rid-1\r\nConnection: close\r\n\r\n"),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
         b"hello"),
        b"GET /missing HTTP/1.0\r\nHost: x\r\n\r\n",
        (b"GET /long HTTP/1.1\r\nHost: x\r\nUser-Agent: " + b"L" * 6000 +
         b"\r\nConnection: close\r\n\r\n"),
    ]
    statuses = []
    before = time.time()
    for raw in sent:
        with server.connect() as conn:
            conn.sendall(raw)
            statuses.append(parse_response(read_until_close(conn))[0])
    assert statuses == [200, 200, 404, 404]
    lines = wait_for(lambda: access.exists() and len(access.read_bytes().splitlines()) >= 4
                     and access.read_bytes().splitlines(), 10, what="4 access lines")
    assert len(lines) == 4 and all(len(line) < 4096 and line.isascii() for line in lines)
    first, post, missing, long = map(json.loads, lines)
    for obj in (first, post, missing, long):
        assert obj["remote_addr"] == "127.0.0.1" and obj["pid"] == worker
        when = datetime.datetime.fromisoformat(obj["time"])
        assert when.utcoffset() is not None and before - 1 < when.timestamp() < time.time() + 1
        assert isinstance(obj["duration_us"], int) and 0 <= obj["duration_us"] < 10_000_000
    assert {k: first[k] for k in ("method", "path", "query", "protocol", "status", "referer",
                                  "user_agent", "user", "request_headers")} == {
        "method": "GET", "path": "/", "query": "a=1&b=%22", "protocol": "HTTP/1.1",
        "status": 200, "referer": "http://ref/", "user": None,
        "user_agent": 'tester "q" \\ \\xff\\xfe caf\u00e9',
        "request_headers": {"x-request-id": "rid-1"}}
    assert first["bytes"] == 5 and first["response_headers"]["content-type"] == "text/plain"
    assert (post["method"], post["path"], post["status"], post["bytes"]) == ("POST", "/echo",
                                                                           200, 5)
    assert post["user_agent"] is None and post["request_headers"] == {"x-request-id": None}
    assert (missing["protocol"], missing["status"], missing["bytes"]) == ("HTTP/1.0", 404, 9)
    assert long["truncated"] is True and long["user_agent"].endswith("...[cut]")
    assert long["path"] == "/long" and long["status"] == 404
    # The error log: every line one JSON object, the master's and the worker's.
    records = [json.loads(line) for line in server.log_path.read_bytes().splitlines()]
    assert any(r["message"].startswith("Ready:") for r in records)
    assert {r["pid"] for r in records} >= {server.pid, worker}
    assert all(r["level"] in ("debug", "info", "warning") for r in records), records


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["sync", "asgi"])
def test_an_app_traceback_is_one_json_error_line(forkserve, kind):
    server = forkserve(APPS[kind], "-k", kind, "-w", "1", "--log-format", "json")
    assert server.get("/error")[0] == 500
    server.wait_log("boom from the")
    errors = [r for r in map(json.loads, server.log_path.read_bytes().splitlines())
              if r["level"] == "error"]
    assert len(errors) == 1 and "Traceback (most recent call last)" in errors[0]["message"]
    assert "boom from the" in errors[0]["message"]
    assert server.get("/")[0] == 200  # the worker serves on
