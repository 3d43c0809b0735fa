"""Every ASGI event sequence against real processes, message by message
(issue 11, "what to build" item 3): each sequence the ASGI HTTP and
WebSocket specs (and the trailers, pathsend and websocket.http.response
extensions) allow works; each one they forbid gets a clear error in the
log and a 500 or a close, for that request only.

The app (tests/apps/asgi_spec.py) plays the messages the test sends it;
the client reads what went out with h11 (HTTP) or a raw WebSocket client.
"""

from __future__ import annotations

import json
import time

import h11
import pytest

import wsraw
from conftest import APPS

pytestmark = pytest.mark.e2e

APP = "asgi_spec:app"
FILE = str(APPS / "asgi_spec.py")


def enc(obj):
    """JSON for the app: bytes as {"$b": ...}, tuples as lists."""
    if isinstance(obj, bytes):
        return {"$b": obj.decode("latin-1")}
    if isinstance(obj, dict):
        return {k: enc(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [enc(v) for v in obj]
    return obj


def start(status=200, headers=((b"content-type", b"text/plain"),), **kw):
    return {"type": "http.response.start", "status": status, "headers": list(headers), **kw}


def body(data=b"", more=False):
    return {"type": "http.response.body", "body": data, "more_body": more}


def trailers(headers, more=False):
    return {"type": "http.response.trailers", "headers": headers, "more_trailers": more}


CL = lambda n: (b"content-length", str(n).encode())  # noqa: E731

# name: (script, method, expected)
#   ("ok", status, body[, header that must be there])  a complete response
#   ("500", log)        a complete 500 and the error in the log
#   ("close", log)      the response is cut off, the connection closed, the error logged
#   ("cut", log, body)  complete as announced (the rest never sent), then closed
#   ("late", log)       a complete 200; the app's later error is logged
HTTP = {
    # -- allowed ---------------------------------------------------------------
    "one-body": ([start(), body(b"hello")], "GET", ("ok", 200, b"hello")),
    "streamed": ([start(), body(b"a", True), body(b"b", True), body()], "GET",
                 ("ok", 200, b"ab", "transfer-encoding")),
    "defaults": ([{"type": "http.response.start", "status": 200},
                  {"type": "http.response.body"}], "GET", ("ok", 200, b"")),
    "content-length-split": ([start(headers=[CL(4)]), body(b"ab", True), body(b"cd")], "GET",
                             ("ok", 200, b"abcd")),
    "head-with-body": ([start(headers=[CL(5)]), body(b"hello")], "HEAD", ("ok", 200, b"")),
    "204-with-body": ([start(204), body(b"dropped")], "GET", ("ok", 204, b"")),
    "404": ([start(404), body(b"nope")], "GET", ("ok", 404, b"nope")),
    "trailers": ([start(trailers=True), body(b"data"), trailers([(b"x-sum", b"1")])], "GET",
                 ("ok", 200, b"data", "transfer-encoding")),
    "more-trailers": ([start(trailers=True), body(b"d"), trailers([(b"x-a", b"1")], True),
                       trailers([(b"x-b", b"2")])], "GET", ("ok", 200, b"d")),
    "pathsend": ([start(), {"type": "http.response.pathsend", "path": FILE}], "GET",
                 ("ok", 200, open(FILE, "rb").read())),
    "pathsend-trailers": ([start(trailers=True), {"type": "http.response.pathsend", "path": FILE},
                           trailers([])], "GET", ("ok", 200, open(FILE, "rb").read())),
    # -- forbidden, before the head went out: a 500 ------------------------------
    "nothing-sent": ([], "GET", ("500", "returned without starting a response")),
    "body-before-start": ([body(b"x")], "GET", ("500", "expected 'http.response.start'")),
    "trailers-before-start": ([trailers([])], "GET", ("500", "expected 'http.response.start'")),
    "start-twice": ([start(), start()], "GET", ("500", "http.response.start sent twice")),
    "start-only": ([start()], "GET", ("500", "without sending the body")),
    "status-str": ([start("200"), body()], "GET", ("500", "invalid status '200'")),
    "status-bool": ([start(True), body()], "GET", ("500", "invalid status True")),
    "status-1xx": ([start(101), body()], "GET", ("500", "invalid status 101")),
    "status-600": ([start(600), body()], "GET", ("500", "invalid status 600")),
    "headers-dict": ([{"type": "http.response.start", "status": 200, "headers": {"a": "b"}},
                      body()], "GET", ("500", "headers must be")),
    "header-str": ([start(headers=[["x-a", "b"]]), body()], "GET", ("500", "must be bytes")),
    "header-3-items": ([start(headers=[[b"x", b"y", b"z"]]), body()], "GET",
                       ("500", "(name, value) pair")),
    "header-crlf": ([start(headers=[(b"x-a", b"b\r\nset-cookie: x")]), body()], "GET",
                    ("500", "invalid character in response header")),
    "two-content-lengths": ([start(headers=[CL(1), CL(1)]), body(b"x")], "GET",
                            ("500", "more than one content-length")),
    "body-str": ([start(), {"type": "http.response.body", "body": "text"}], "GET",
                 ("500", "'body' must be bytes, got str")),
    "no-type": ([start(), {"body": b""}], "GET", ("500", "a dict with a 'type'")),
    "not-a-dict": ([start(), ["http.response.body"]], "GET", ("500", "a dict with a 'type'")),
    "unknown-type": ([start(), {"type": "http.response.push"}], "GET",
                     ("500", "unexpected ASGI message 'http.response.push'")),
    "pathsend-relative": ([start(), {"type": "http.response.pathsend", "path": "x.py"}], "GET",
                          ("500", "needs an absolute path")),
    "pathsend-missing": ([start(), {"type": "http.response.pathsend", "path": "/nonexistent"}],
                         "GET", ("500", "FileNotFoundError")),
    # -- forbidden, after the head went out: the connection closes ---------------
    "unfinished": ([start(), body(b"part", True)], "GET",
                   ("close", "returned without completing the response")),
    "short-content-length": ([start(headers=[CL(10)]), body(b"12345")], "GET",
                             ("close", "shorter than its Content-Length (5 of 10 bytes)")),
    "long-content-length": ([start(headers=[CL(3)]), body(b"12345")], "GET",
                            ("cut", "longer than its Content-Length (3)", b"123")),
    "trailers-unannounced": ([start(), body(b"x", True), trailers([])], "GET",
                             ("close", "without 'trailers': True")),
    "trailers-too-early": ([start(trailers=True), body(b"x", True), trailers([])], "GET",
                           ("close", "before the last http.response.body")),
    "body-instead-of-trailers": ([start(trailers=True), body(b"x"), body(b"y")], "GET",
                                 ("close", "expected 'http.response.trailers'")),
    "trailers-never-sent": ([start(trailers=True), body(b"x")], "GET",
                            ("close", "returned without completing the response")),
    "pathsend-after-body": ([start(), body(b"x", True),
                             {"type": "http.response.pathsend", "path": FILE}], "GET",
                            ("close", "cannot be mixed")),
    "bad-trailer": ([start(trailers=True), body(b"x"), trailers([(b"x", b"a\nb")])], "GET",
                    ("close", "invalid character")),
    # -- forbidden after the response completed: logged, the response stands --
    "body-after-complete": ([start(), body(b"done"), body(b"more")], "GET",
                            ("late", "'http.response.body' sent after the response completed")),
    "start-after-complete": ([start(), body(b"done"), start()], "GET",
                             ("late", "'http.response.start' sent after the response completed")),
}


def _exchange(server, method: str, script: list) -> tuple[list, bool]:
    """Send the script; h11's events for what came back, and whether the
    response was complete."""
    payload = json.dumps(enc(script)).encode()
    raw = server.raw(b"%s /%s HTTP/1.1\r\nHost: t\r\nTE: trailers\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (method.encode(), b"x", len(payload),
                                                         payload))
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("Host", "t")]))
    client.send(h11.EndOfMessage())
    client.receive_data(raw)
    client.receive_data(b"")
    events = []
    try:
        while True:
            ev = client.next_event()
            if ev in (h11.NEED_DATA, h11.PAUSED) or isinstance(ev, h11.ConnectionClosed):
                break
            events.append(ev)
    except h11.RemoteProtocolError:
        return events, False
    return events, any(isinstance(e, h11.EndOfMessage) for e in events)


def test_every_http_sequence(forkserve):
    server = forkserve(APP, "-w", "1")
    pids = server.workers()
    problems = []
    for name, (script, method, expected) in HTTP.items():
        mark = len(server.log)
        events, complete = _exchange(server, method, script)
        resp = next((e for e in events if isinstance(e, h11.Response)), None)
        data = b"".join(bytes(e.data) for e in events if isinstance(e, h11.Data))
        kind = expected[0]
        if kind in ("500", "close", "late", "cut"):
            try:
                new = server.log[mark:]
                for _ in range(50):
                    if expected[1] in new:
                        break
                    time.sleep(0.1)
                    new = server.log[mark:]
                assert expected[1] in new, f"log lacks {expected[1]!r}:\n{new[-600:]}"
            except AssertionError as exc:
                problems.append(f"{name}: {exc}")
                continue
        got = (resp.status_code if resp else None, complete)
        if kind == "ok" or kind == "late":
            status, want = (expected[1], expected[2]) if kind == "ok" else (200, b"done")
            if got != (status, True) or data != want:
                problems.append(f"{name}: got {got} {data[:80]!r}")
            if kind == "ok":
                if "Error" in server.log[mark:] or "Traceback" in server.log[mark:]:
                    problems.append(f"{name}: an allowed sequence logged an error")
                if len(expected) > 3 and not any(n.lower() == expected[3].encode()
                                                 for n, _ in resp.headers):
                    problems.append(f"{name}: no {expected[3]} header")
        elif kind == "500":
            if got != (500, True):
                problems.append(f"{name}: expected a 500, got {got}")
        elif kind == "close" and complete:
            problems.append(f"{name}: expected a cut-off response, got a complete {got}")
        elif kind == "cut" and (got != (200, True) or data != expected[2]):
            problems.append(f"{name}: got {got} {data!r}")
    assert not problems, "\n".join(problems)
    assert server.workers() == pids


def test_trailers_reach_only_a_client_that_asked(forkserve):
    server = forkserve(APP, "-w", "1")
    script = json.dumps(enc([start(trailers=True), body(b"d"), trailers([(b"x-sum", b"1")])]))
    for te, present in ((b"TE: trailers\r\n", True), (b"", False)):
        raw = server.raw(b"POST / HTTP/1.1\r\nHost: t\r\n%sConnection: close\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (te, len(script), script.encode()))
        assert raw.endswith(b"1\r\nd\r\n0\r\nx-sum: 1\r\n\r\n" if present else b"1\r\nd\r\n0\r\n\r\n")


def test_disconnect_receive_and_send_after_it(forkserve):
    """receive() after the body waits for the client to go, then says
    http.disconnect, again and again; send() then raises an OSError
    subclass, which an app may let out without a traceback logged."""
    server = forkserve(APP, "-w", "1")
    for name, script, want in (
        ("d1", ["receive", "receive", {"catch": start()}],
         ["http.disconnect", "http.disconnect", "ClientDisconnected"]),
        ("d2", ["receive", start()], ["http.disconnect"]),
    ):
        payload = json.dumps(enc(script)).encode()
        with server.connect() as s:
            s.sendall(b"POST /%s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s"
                      % (name.encode(), len(payload), payload))
            time.sleep(0.3)  # the app waits in receive()
        deadline = time.monotonic() + 5
        while json.loads(server.get(f"/record?{name}")[2]) != want:
            assert time.monotonic() < deadline, json.loads(server.get(f"/record?{name}")[2])
            time.sleep(0.1)
    time.sleep(0.3)
    assert "Traceback" not in server.log and "Error" not in server.log


# -- WebSocket ---------------------------------------------------------------------

ACCEPT = {"type": "websocket.accept"}


def close(code=None, reason=None):
    msg = {"type": "websocket.close"}
    if code is not None:
        msg["code"] = code
    if reason is not None:
        msg["reason"] = reason
    return msg


def wsend(text=None, data=None):
    msg = {"type": "websocket.send"}
    if text is not None:
        msg["text"] = text
    if data is not None:
        msg["bytes"] = data
    return msg


def deny_start(status=401, headers=()):
    return {"type": "websocket.http.response.start", "status": status, "headers": list(headers)}


def deny_body(data=b"", more=False):
    return {"type": "websocket.http.response.body", "body": data, "more_body": more}


# name: (script, expected)
#   (101, [(opcode, payload or close code), ...])  frames after the handshake
#   (status, body)      an HTTP answer instead of the handshake
#   log text: the error the log must name (None: no error may be logged)
WS = {
    # -- allowed ---------------------------------------------------------------
    "echo-and-close": ([ACCEPT, wsend("hi"), wsend(data=b"\x00\x01"), close()],
                       (101, [(1, b"hi"), (2, b"\x00\x01"), (8, 1000)]), None),
    "close-code-reason": ([ACCEPT, close(4001, "bye")], (101, [(8, 4001)]), None),
    "close-none-reason": ([ACCEPT, close(3000, None)], (101, [(8, 3000)]), None),
    "return-after-accept": ([ACCEPT], (101, [(8, 1000)]), None),
    "close-before-accept": ([close()], (403, None), None),
    "deny-one-piece": ([deny_start(401, [(b"content-type", b"text/plain")]),
                        deny_body(b"no entry")], (401, b"no entry"), None),
    "deny-streamed": ([deny_start(451), deny_body(b"no ", True), deny_body(b"entry")],
                      (451, b"no entry"), None),
    "send-after-close": ([ACCEPT, close(), {"catch": wsend("late")}], (101, [(8, 1000)]), None),
    # -- forbidden ------------------------------------------------------------------
    "send-before-accept": ([wsend("x")], (500, None), "expected 'websocket.accept'"),
    "return-without-accept": ([], (500, None), "returned without accepting"),
    "accept-twice": ([ACCEPT, ACCEPT], (101, [(8, 1011)]), "websocket.accept sent twice"),
    "text-and-bytes": ([ACCEPT, wsend("a", b"b")], (101, [(8, 1011)]), "exactly one of"),
    "neither": ([ACCEPT, {"type": "websocket.send"}], (101, [(8, 1011)]), "exactly one of"),
    "text-as-bytes": ([ACCEPT, wsend(b"a")], (101, [(8, 1011)]), "'text' must be str"),
    "bytes-as-str": ([ACCEPT, wsend(data="a")], (101, [(8, 1011)]), "'bytes' must be bytes"),
    "close-1005": ([ACCEPT, close(1005)], (101, [(8, 1011)]), "code 1005 cannot be sent"),
    "close-2000": ([ACCEPT, close(2000)], (101, [(8, 1011)]), "code 2000 cannot be sent"),
    "close-code-str": ([ACCEPT, close("1000")], (101, [(8, 1011)]), "cannot be sent"),
    "close-long-reason": ([ACCEPT, close(1000, "r" * 124)], (101, [(8, 1011)]),
                          "longer than 123 bytes"),
    "subprotocol-not-offered": ([{"type": "websocket.accept", "subprotocol": "chat"}],
                                (500, None), "was not offered"),
    "accept-protocol-header": ([{"type": "websocket.accept",
                                 "headers": [(b"sec-websocket-protocol", b"x")]}],
                               (500, None), "is the server's to set"),
    "accept-header-str": ([{"type": "websocket.accept", "headers": [["x", "y"]]}],
                          (500, None), "must be bytes"),
    "deny-after-accept": ([ACCEPT, deny_start()], (101, [(8, 1011)]),
                          "unexpected message 'websocket.http.response.start'"),
    "deny-body-first": ([deny_body(b"x")], (500, None), "expected 'websocket.accept'"),
    "deny-bad-status": ([deny_start("401")], (500, None), "invalid status"),
    "deny-then-accept": ([deny_start(), ACCEPT], (500, None),
                         "expected 'websocket.http.response.body'"),
    "deny-unfinished": ([deny_start(401), deny_body(b"x", True)], (401, None),
                        "without completing its websocket.http.response"),
    "unknown-type": ([ACCEPT, {"type": "websocket.ping"}], (101, [(8, 1011)]),
                     "unexpected message 'websocket.ping'"),
}


def _ws_exchange(server, name, script):
    with server.connect() as s:
        wsraw.handshake(s, script=enc(script), name=name)
        buf = bytearray()
        status, head = wsraw.read_head(s, buf)
        frames = []
        if status == 101:
            while True:
                opcode, payload = wsraw.read_frame(s, buf)
                frames.append((opcode, wsraw.close_code(payload) if opcode == 8 else payload))
                if opcode == 8:
                    s.sendall(wsraw.frame(0x8, payload[:2]))
                    break
            return status, frames, head
        rest = bytes(buf)
        s.settimeout(5)
        while True:
            data = s.recv(65536)
            if not data:
                break
            rest += data
        return status, rest, head


def test_every_websocket_sequence(forkserve):
    server = forkserve(APP, "-w", "1")
    pids = server.workers()
    problems = []
    for name, (script, (status, want), log) in WS.items():
        mark = len(server.log)
        try:
            got_status, got, head = _ws_exchange(server, name, script)
        except (OSError, ConnectionError) as exc:
            problems.append(f"{name}: {exc!r}")
            continue
        if got_status != status:
            problems.append(f"{name}: status {got_status}, expected {status}")
        elif status == 101 and got != want:
            problems.append(f"{name}: frames {got}, expected {want}")
        elif status != 101 and want is not None:
            if b"chunked" in head.lower():
                body, rest = b"", got
                while True:
                    size_line, _, rest = rest.partition(b"\r\n")
                    size = int(size_line, 16)
                    if not size:
                        break
                    body += rest[:size]
                    rest = rest[size + 2:]
                got = body
            if got != want:
                problems.append(f"{name}: body {got!r}, expected {want!r}")
        deadline = time.monotonic() + 5
        new = server.log[mark:]
        if log is not None:
            while log not in new and time.monotonic() < deadline:
                time.sleep(0.1)
                new = server.log[mark:]
            if log not in new:
                problems.append(f"{name}: log lacks {log!r}: {new[-300:]!r}")
        else:
            time.sleep(0.2)
            new = server.log[mark:]
            if "Error" in new or "Traceback" in new:
                problems.append(f"{name}: an allowed sequence logged: {new[-300:]!r}")
    assert not problems, "\n".join(problems)
    assert json.loads(server.get("/record?send-after-close")[2]) == ["ClientDisconnected"]
    assert server.workers() == pids


def test_websocket_receive_sequence_and_disconnect(forkserve):
    """The client's messages in order, then websocket.disconnect with its
    close code -- and again on every later receive()."""
    server = forkserve(APP, "-w", "1")
    with server.connect() as s:
        wsraw.handshake(s, script=[ACCEPT, "receive", "receive", "receive", "receive"], name="r")
        buf = bytearray()
        assert wsraw.read_head(s, buf)[0] == 101
        s.sendall(wsraw.frame(0x1, b"one") + wsraw.frame(0x2, b"two")
                  + wsraw.frame(0x8, b"\x0f\xa1bye"))
        opcode, payload = wsraw.read_frame(s, buf)
        assert (opcode, wsraw.close_code(payload)) == (8, 4001)  # the close echoed
    deadline = time.monotonic() + 5
    want = ["websocket.receive", "websocket.receive", "websocket.disconnect 4001",
            "websocket.disconnect 4001"]
    while json.loads(server.get("/record?r")[2]) != want:
        assert time.monotonic() < deadline, server.get("/record?r")[2]
        time.sleep(0.1)
