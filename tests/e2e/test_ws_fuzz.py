"""WebSocket frames fuzzed after the handshake, against the ASGI worker.

A real forkserve (-k asgi) serves the echo app of tests/apps/fuzz_target.py
with a small ``ws_max_size``.  Frames are built here, byte by byte, so they
can break every rule of RFC 6455 section 5: unmasked, reserved bits,
unknown opcodes, control frames too long or fragmented, continuations out
of place, non-minimal or oversized lengths, text that is not UTF-8, close
codes that may not be sent, messages over the size limit.

* Each protocol error has its own case, and the server must answer it as
  RFC 6455 asks: a Close frame with 1002 (protocol error), 1007 (invalid
  data) or 1009 (too big), then the end of the TCP connection (sections
  5.1-5.5, 7.1.7, 7.4.1, 8.1).
* Seeded random and mutated frame streams (``FORKSERVE_WS_FUZZ_COUNT``,
  default 1000) must get only well-formed, unmasked server frames, with a
  Close code from the RFC's list if one comes, and a close in time.
* Throughout, the worker survives (PID unchanged) and logs no traceback,
  and a fresh connection still echoes.
"""

from __future__ import annotations

import base64
import os
import random
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from typing import NamedTuple

import pytest
from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Message

from conftest import APPS, ROOT, free_port, stop_tree, wait_for

pytestmark = pytest.mark.e2e

MAX_SIZE = 4096
COUNT = int(os.environ.get("FORKSERVE_WS_FUZZ_COUNT", "1000"))
FIRST_SEED = int(os.environ.get("FORKSERVE_FUZZ_SEED", "0"))

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


# --- frames ----------------------------------------------------------------------------


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
          mask: bytes | None = b"\x11\x22\x33\x44", length: int | None = None,
          length_form: int | None = None) -> bytes:
    """One frame as a client sends it (masked unless ``mask`` is None).
    ``length`` overrides the declared length; ``length_form`` forces the 7,
    16 or 64-bit length encoding, minimal or not."""
    n = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    form = length_form or (7 if n < 126 else 16 if n < 65536 else 64)
    mask_bit = 0x80 if mask is not None else 0
    if form == 7:
        head = bytes([first, mask_bit | n])
    elif form == 16:
        head = bytes([first, mask_bit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([first, mask_bit | 127]) + struct.pack("!Q", n)
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


class ServerFrame(NamedTuple):
    fin: bool
    rsv: int
    opcode: int
    masked: bool
    payload: bytes


def parse_server_frames(data: bytes) -> tuple[list[ServerFrame], bytes]:
    """The complete frames in ``data`` and the bytes left over."""
    frames = []
    i = 0
    while len(data) - i >= 2:
        b0, b1 = data[i], data[i + 1]
        n = b1 & 0x7F
        j = i + 2
        if n == 126:
            if len(data) - j < 2:
                break
            n = struct.unpack("!H", data[j:j + 2])[0]
            j += 2
        elif n == 127:
            if len(data) - j < 8:
                break
            n = struct.unpack("!Q", data[j:j + 8])[0]
            j += 8
        masked = bool(b1 & 0x80)
        if masked:
            j += 4
        if len(data) - j < n:
            break
        frames.append(ServerFrame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, masked,
                                  data[j:j + n]))
        i = j + n
    return frames, data[i:]


# --- talking to the server ----------------------------------------------------------------


def handshake(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        assert chunk, f"closed during the handshake: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    # Frames sent with the 101 would follow the head; the echo app sends none.
    assert head.endswith(b"\r\n\r\n"), head
    return s


class Reply(NamedTuple):
    frames: list[ServerFrame]
    leftover: bytes   # a partial frame at the end
    closed: bool      # the server closed TCP (EOF or reset)
    timed_out: bool


def send_and_read(port: int, pieces: list[bytes], shut: bool, timeout: float = 5.0) -> Reply:
    """Handshake, send the pieces, optionally shut our side; read until the
    server closes TCP or ``timeout`` passes."""
    s = handshake(port)
    data = bytearray()
    closed = timed_out = False
    try:
        try:
            for piece in pieces:
                s.sendall(piece)
            if shut:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server failed the connection while we were sending
        s.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                closed = True
                break
            except (TimeoutError, socket.timeout):
                timed_out = True
                break
            if not chunk:
                closed = True
                break
            data += chunk
            frames, _ = parse_server_frames(bytes(data))
            if frames and frames[-1].opcode == CLOSE and not shut:
                # Answer the close, as a client does, then see TCP end.
                try:
                    s.sendall(frame(CLOSE, frames[-1].payload[:2]))
                except OSError:
                    pass
            if time.monotonic() > deadline:
                timed_out = True
                break
    finally:
        s.close()
    frames, leftover = parse_server_frames(bytes(data))
    return Reply(frames, leftover, closed, timed_out)


NO_CODE = 1005  # a Close frame without a status code (RFC 6455 7.1.5)


def close_code(reply: Reply) -> int | None:
    """The code of the server's Close frame (NO_CODE if it has none), or
    None if it sent none."""
    for f in reply.frames:
        if f.opcode == CLOSE:
            return struct.unpack("!H", f.payload[:2])[0] if len(f.payload) >= 2 else NO_CODE
    return None


# --- the cases with a required answer ------------------------------------------------------

TOO_BIG = b"x" * (MAX_SIZE + 1)
BAD_UTF8 = b"caf\xc3"  # a truncated sequence

PROTOCOL_ERRORS: list[tuple[str, list[bytes], int]] = [
    # 5.1: a client MUST mask every frame.
    ("unmasked-text", [frame(TEXT, b"hi", mask=None)], 1002),
    ("unmasked-close", [frame(CLOSE, close_payload(1000), mask=None)], 1002),
    # 5.2: RSV bits without a negotiated extension.
    ("rsv1", [frame(TEXT, b"hi", rsv=4)], 1002),
    ("rsv2", [frame(BINARY, b"hi", rsv=2)], 1002),
    ("rsv3-ping", [frame(PING, b"", rsv=1)], 1002),
    # 5.2: reserved opcodes.
    *[(f"opcode-{op:x}", [frame(op, b"x")], 1002) for op in (3, 4, 5, 6, 7, 0xB, 0xC, 0xF)],
    # 5.5: control frames are at most 125 bytes and never fragmented.
    ("ping-126", [frame(PING, b"p" * 126)], 1002),
    ("ping-16bit-length", [frame(PING, b"p" * 5, length_form=16)], 1002),
    ("close-126", [frame(CLOSE, close_payload(1000, b"r" * 124))], 1002),
    ("pong-fragmented", [frame(PONG, b"p", fin=False)], 1002),
    ("ping-fragmented", [frame(PING, b"p", fin=False)], 1002),
    # 5.4: continuation frames only inside a fragmented message, and no new
    # data frame before the last fragment.
    ("lone-continuation", [frame(CONT, b"x")], 1002),
    ("lone-final-continuation", [frame(CONT, b"x", fin=True)], 1002),
    ("text-inside-fragments", [frame(TEXT, b"a", fin=False), frame(TEXT, b"b")], 1002),
    ("binary-inside-fragments", [frame(BINARY, b"a", fin=False), frame(BINARY, b"b")], 1002),
    # 5.2: the most significant bit of a 64-bit length must be 0.
    ("length-msb", [frame(BINARY, b"", length=1 << 63, length_form=64)], 1002),
    # 5.5.1 and 7.4: a close payload of one byte, or a code no endpoint may send.
    ("close-one-byte", [frame(CLOSE, b"\x03")], 1002),
    *[(f"close-code-{c}", [frame(CLOSE, close_payload(c))], 1002)
      for c in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535)],
    # 8.1: text that is not UTF-8, whole or across fragments, and a close
    # reason that is not UTF-8.
    ("text-bad-utf8", [frame(TEXT, BAD_UTF8)], 1007),
    ("text-overlong-utf8", [frame(TEXT, b"\xc0\xaf")], 1007),
    ("text-surrogate", [frame(TEXT, b"\xed\xa0\x80")], 1007),
    ("text-fragments-bad-utf8", [frame(TEXT, b"caf", fin=False),
                                 frame(CONT, b"\xc3\x28")], 1007),
    ("text-fragment-truncated-utf8", [frame(TEXT, b"caf\xc3", fin=False),
                                      frame(CONT, b"")], 1007),
    ("close-reason-bad-utf8", [frame(CLOSE, close_payload(1000, b"\xff\xfe"))], 1007),
    # 7.4.1: a message bigger than the server will take.
    ("text-too-big", [frame(TEXT, TOO_BIG)], 1009),
    # ws_max_size counts bytes: 2049 two-byte characters are 4098 bytes.
    ("text-too-big-in-bytes", [frame(TEXT, "é".encode() * (MAX_SIZE // 2 + 1))], 1009),
    ("binary-too-big", [frame(BINARY, TOO_BIG)], 1009),
    ("fragments-too-big", [frame(BINARY, b"x" * 3000, fin=False),
                           frame(CONT, b"x" * 3000)], 1009),
]


# --- random and mutated streams ---------------------------------------------------------------

# Close codes a server may send (RFC 6455 7.4.1; 1004-1006 and 1015 never).
SERVER_CODES = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}


def _valid_stream(rng: random.Random) -> list[bytes]:
    frames = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.random()
        if kind < 0.4:
            frames.append(frame(TEXT, "héllo ✓ {}".format(rng.random()).encode()))
        elif kind < 0.6:
            frames.append(frame(BINARY, rng.randbytes(rng.choice([0, 1, 125, 126, 3000]))))
        elif kind < 0.75:
            frames.append(frame(PING, rng.randbytes(rng.randint(0, 125))))
        elif kind < 0.85:
            frames.append(frame(PONG, rng.randbytes(rng.randint(0, 20))))
        else:
            frames.append(frame(TEXT, b"frag", fin=False))
            frames.append(frame(PING, b"between"))
            frames.append(frame(CONT, b"ment"))
    return frames


def expected_close(data: bytes) -> int | None:
    """The Close code RFC 6455 asks of a server that reads ``data``: the
    first protocol error wsproto (the frame parser the worker drives) finds
    (1002, 1007), or 1009 for a message over MAX_SIZE bytes; NO_CODE if the
    client closes first; None if the stream holds neither."""
    conn = WSConnection(ConnectionType.SERVER)
    conn.receive_data(data)
    size = 0
    for event in conn.events():
        if isinstance(event, Message):
            chunk = event.data.encode() if isinstance(event.data, str) else event.data
            size += len(chunk)
            if size > MAX_SIZE:
                return 1009
            if event.message_finished:
                size = 0
        elif isinstance(event, CloseConnection):
            if conn.state is ConnectionState.REMOTE_CLOSING:
                return NO_CODE  # the client's own close: any answer will do
            return event.code
    return None


def ws_case(seed: int) -> tuple[list[bytes], bool]:
    """Pieces to send and whether to shut our side after them."""
    rng = random.Random(seed)
    how = rng.random()
    if how < 0.15:
        data = rng.randbytes(rng.randint(1, 200))
    else:
        data = bytearray(b"".join(_valid_stream(rng)))
        for _ in range(rng.randint(1, 3)):
            if not data:  # all deleted: start again from an empty ping
                data += frame(PING)
            pos = rng.randrange(len(data))
            op = rng.random()
            if op < 0.5:
                data[pos] ^= 1 << rng.randrange(8)
            elif op < 0.7:
                data[pos:pos] = rng.randbytes(rng.randint(1, 4))
            elif op < 0.9:
                del data[pos:pos + rng.randint(1, 8)]
            else:
                data += rng.choice([frame(CLOSE, close_payload(1000)), frame(CLOSE),
                                    frame(TEXT, BAD_UTF8), frame(PING, b"p" * 200)])
        data = bytes(data) or frame(PING)
    cuts = sorted(set(rng.randrange(1, len(data)) for _ in range(rng.randint(0, 4)))) \
        if len(data) > 1 else []
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    return pieces, True


# --- the server ------------------------------------------------------------------------------------


def _workers(master: int) -> list[int]:
    import psutil
    try:
        return sorted(c.pid for c in psutil.Process(master).children()
                      if c.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return []


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wsfuzz")
    port = free_port()
    log = tmp / "error.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(APPS)]))
    env.pop("FORKSERVE_CMD_ARGS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "forkserve", "-k", "asgi", "-w", "1", "-b", f"127.0.0.1:{port}",
         "--error-logfile", str(log), "--ws-max-size", str(MAX_SIZE),
         "--ws-ping-interval", "0", "fuzz_target:asgi"],
        cwd=str(APPS), env=env, stdin=subprocess.DEVNULL,
        stdout=open(tmp / "stdout.log", "wb"), stderr=subprocess.STDOUT)
    seen: set[int] = set()
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError((tmp / "stdout.log").read_text(errors="replace"))
            return log.exists() and "Ready:" in log.read_text()
        wait_for(ready, 20, what="forkserve to be ready")
        workers = wait_for(lambda: _workers(proc.pid), 10, what="a worker")
        seen.update(workers)
        yield {"port": port, "log": log, "proc": proc, "worker": workers[0]}
    finally:
        seen.update(_workers(proc.pid))
        stop_tree(proc, seen)


def _check_health(server) -> None:
    assert _workers(server["proc"].pid) == [server["worker"]], "the worker was replaced"
    log = server["log"].read_text(errors="replace")
    bad = [line for line in log.splitlines()
           if "Traceback" in line or "[ERROR]" in line or "[CRITICAL]" in line]
    assert not bad, "\n".join(bad[:10]) + "\n\nlog tail:\n" + log[-3000:]


def test_each_required_close_is_what_the_frame_parser_finds():
    # The table above is RFC 6455 read by hand; wsproto (which the worker
    # drives) must find the same error in each case, or the worker could
    # not answer it.  1009 is the worker's own byte count (expected_close).
    for name, pieces, code in PROTOCOL_ERRORS:
        assert expected_close(b"".join(pieces)) == code, name
    assert expected_close(frame(TEXT, b"fine") + frame(CLOSE, close_payload(1000))) == NO_CODE
    assert expected_close(frame(TEXT, b"fine")) is None


def test_echo_works(server):
    s = handshake(server["port"])
    try:
        got = []
        for opcode, payload in ((TEXT, "héllo".encode()), (BINARY, b"\x00\x01"),
                                (PING, b"p"), (CLOSE, close_payload(1000))):
            s.sendall(frame(opcode, payload))
            data = b""
            while not parse_server_frames(data)[0]:
                chunk = s.recv(65536)
                assert chunk, (opcode, data)
                data += chunk
            got += parse_server_frames(data)[0]
        assert s.recv(10) == b""  # TCP closed after the close handshake
    finally:
        s.close()
    assert [(f.opcode, f.payload) for f in got] == [
        (TEXT, "héllo".encode()), (BINARY, b"\x00\x01"), (PONG, b"p"),
        (CLOSE, close_payload(1000))]


@pytest.mark.parametrize("name, pieces, code", PROTOCOL_ERRORS,
                         ids=[name for name, _, _ in PROTOCOL_ERRORS])
def test_protocol_error_is_answered_with_a_close_frame(server, name, pieces, code):
    reply = send_and_read(server["port"], pieces, shut=False)
    assert not any(f.masked for f in reply.frames), reply
    assert not reply.timed_out, f"no close within 5 s: {reply}"
    assert close_code(reply) == code, (
        f"expected a Close frame with {code}, got "
        f"{[(f.opcode, f.payload[:20]) for f in reply.frames]}, TCP closed: {reply.closed}")
    assert reply.frames[-1].opcode == CLOSE and not reply.leftover, reply
    assert reply.closed
    _check_health(server)


def test_random_and_mutated_frames(server):
    problems = []
    errors = echoed = 0
    started = time.monotonic()
    for seed in range(FIRST_SEED, FIRST_SEED + COUNT):
        pieces, shut = ws_case(seed)
        reply = send_and_read(server["port"], pieces, shut=shut, timeout=5.0)
        where = f"seed {seed}: sent {b''.join(pieces)[:120]!r}"
        if reply.timed_out:
            problems.append(f"{where}: no close within 5 s")
        for f in reply.frames:
            if f.masked or f.rsv or f.opcode not in (TEXT, BINARY, CLOSE, PING, PONG, CONT):
                problems.append(f"{where}: malformed server frame {f}")
        code = close_code(reply)
        expected = expected_close(b"".join(pieces))
        echoed += any(f.opcode in (TEXT, BINARY, PONG) for f in reply.frames)
        if expected not in (None, NO_CODE):
            errors += 1
            if code != expected:
                problems.append(f"{where}: a protocol error ({expected}) answered with "
                                f"{'no Close frame' if code is None else f'Close {code}'}")
        elif expected == NO_CODE and code is None:
            problems.append(f"{where}: the client's Close frame was not answered")
        if code is not None:
            if code not in SERVER_CODES and code != NO_CODE:
                problems.append(f"{where}: close code {code}")
            if reply.frames[-1].opcode != CLOSE:
                problems.append(f"{where}: frames after the Close frame")
        if reply.leftover:
            problems.append(f"{where}: a partial frame {reply.leftover[:40]!r}")
        if _workers(server["proc"].pid) != [server["worker"]]:
            problems.append(f"{where}: the worker died")
            break
    elapsed = time.monotonic() - started
    kinds = Counter(p.split(": ", 2)[-1].split(" (")[0][:60] for p in problems)
    assert not problems, (f"{len(problems)} problem(s) in {elapsed:.1f} s, by kind: "
                          f"{dict(kinds)}\n" + "\n".join(problems[:15]))
    # The streams reach the app and the frame parser's error paths alike.
    assert echoed > COUNT // 4 and errors > COUNT // 5, (echoed, errors)
    _check_health(server)
    test_echo_works(server)
