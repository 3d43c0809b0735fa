"""Mutations of HTTP/1.1 requests, shared by the reader's property tests
(tests/unit/test_reader_properties.py, where hypothesis draws the
operations) and the wire fuzzer (tests/e2e/test_wire_fuzz.py, where a
seeded ``random.Random`` does).

A mutation is a list of operations ``(op, where, arg)``; :func:`mutate`
applies them.  ``where`` is any non-negative integer, taken modulo the
length of the data, so an operation drawn before the data is known always
applies somewhere.
"""

from __future__ import annotations

import random
import re

TCHAR = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Bytes of a path or query, without '%' (pct-encoding is left to mutations).
PCHAR = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/"
VCHAR = bytes(range(0x21, 0x7f)) + bytes(range(0x80, 0x100))
# Names the framing depends on; random fields avoid them, mutations add them.
FRAMING_NAMES = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection",
                           b"expect", b"upgrade"})

OPS = ("flip", "insert", "delete", "header", "dup-line")

# Bytes inserted by "insert": line ends, bare CR and LF, NUL, whitespace
# (obs-fold when after a CRLF), separators, digits and signs for numbers.
INSERTS = [b"\r", b"\n", b"\r\n", b"\x00", b" ", b"\t", b":", b";", b",", b"\x7f", b"\x80",
           b"\r\n ", b"\r\n\t", b"0", b"f", b"-", b"+", b"\"", b"\\", b"#", b"\xff"]
# Field lines inserted by "header" after a line of the first head: framing
# fields added, repeated or contradicting those there (CL/TE combinations),
# smuggling classics, obs-fold, control bytes.
FRAMING_LINES = [
    b"Content-Length: 0\r\n", b"Content-Length: 5\r\n", b"Content-Length: 5, 5\r\n",
    b"Content-Length: +5\r\n", b"Content-Length:\r\n", b"content-length: 99999999999999999999\r\n",
    b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: gzip\r\n",
    b"Transfer-Encoding: chunked, chunked\r\n", b"Transfer-Encoding: identity, chunked\r\n",
    b"Transfer-Encoding : chunked\r\n", b" Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding:\x0bchunked\r\n", b"Transfer-Encoding: \"chunked\"\r\n",
    b"Host: b\r\n", b"Connection: close\r\n", b"Connection: keep-alive, Upgrade\r\n",
    b"Upgrade: websocket\r\n", b"Expect: 100-continue\r\n", b"Expect: 100-continue, x\r\n",
    b"X: y\r\n folded\r\n", b"X: a\x00b\r\n", b"X: a\rb\r\n", b"X: a\nb\r\n",
]


def mutate(data: bytes, ops: list[tuple]) -> bytes:
    """``data`` with the operations applied in order (see the module doc)."""
    for op, where, arg in ops:
        pos = where % (len(data) + 1)
        if op == "flip":
            if data:
                pos %= len(data)
                data = data[:pos] + bytes([data[pos] ^ arg]) + data[pos + 1:]
        elif op == "insert":
            data = data[:pos] + arg + data[pos:]
        elif op == "delete":
            data = data[:pos] + data[pos + arg:]
        elif op == "header":
            head_end = data.find(b"\r\n\r\n")
            ends = [m.end() for m in re.finditer(rb"\r\n", data[:head_end + 2])] \
                if head_end >= 0 else []
            at = ends[where % len(ends)] if ends else pos
            data = data[:at] + arg + data[at:]
        elif op == "dup-line":
            lines = data.split(b"\r\n")
            i = where % len(lines)
            lines.insert(i, lines[i])
            data = b"\r\n".join(lines)
        else:
            raise ValueError(op)
    return data


def random_ops(rng: random.Random, most: int = 4) -> list[tuple]:
    """One to ``most`` random operations."""
    ops = []
    for _ in range(rng.randint(1, most)):
        op = rng.choice(OPS)
        where = rng.randrange(1 << 16)
        if op == "flip":
            arg = rng.randrange(1, 256)
        elif op == "insert":
            arg = rng.choice(INSERTS) if rng.random() < 0.7 else rng.randbytes(rng.randint(1, 4))
        elif op == "delete":
            arg = rng.randint(1, 8)
        elif op == "header":
            arg = rng.choice(FRAMING_LINES)
        else:
            arg = None
        ops.append((op, where, arg))
    return ops


def _pick(rng: random.Random, alphabet: bytes, lo: int, hi: int) -> bytes:
    return bytes(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def random_request(rng: random.Random, keep_alive: bool = True) -> bytes:
    """A valid request: a few fields; no body, a Content-Length body, or a
    chunked body with extensions and trailers; Expect: 100-continue now
    and then.  ``keep_alive=False`` asks the server to close after it."""
    method = rng.choice([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"])
    target = b"/" + _pick(rng, PCHAR, 0, 20)
    if rng.random() < 0.3:
        target += b"?" + _pick(rng, PCHAR + b"?", 0, 12)
    ows = [b"", b" ", b"\t", b"  "]
    lines = [b"Host:" + rng.choice(ows) + rng.choice([b"a", b"example.com:8080", b"[::1]"])]
    for _ in range(rng.randint(0, 3)):
        name = _pick(rng, TCHAR, 1, 12)
        if name.lower() in FRAMING_NAMES:
            continue
        value = b" ".join(_pick(rng, VCHAR, 1, 12) for _ in range(rng.randint(0, 3)))
        lines.append(name + b":" + rng.choice(ows) + value + rng.choice(ows))
    if not keep_alive:
        lines.append(b"Connection: close")
    kind = rng.choice(["none", "length", "length", "chunked", "chunked"])
    payload = b""
    if kind == "length":
        body = rng.randbytes(rng.choice([0, 1, 5, 40, 300]))
        lines.append(b"Content-Length: %d" % len(body))
        payload = body
    elif kind == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
        parts = []
        for _ in range(rng.randint(0, 3)):
            chunk = rng.randbytes(rng.randint(1, 40))
            ext = rng.choice([b"", b"", b";a", b";a=b", b" ;q=\"x y\""])
            parts.append(b"%x%s\r\n%s\r\n" % (len(chunk), ext, chunk))
        trailers = b"".join(b"X-T%d: %s\r\n" % (i, _pick(rng, VCHAR, 1, 8))
                            for i in range(rng.randint(0, 2)))
        payload = b"".join(parts) + b"0\r\n" + trailers + b"\r\n"
    if kind != "none" and rng.random() < 0.15:
        lines.append(b"Expect: 100-continue")
    rng.shuffle(lines)
    return b"%s %s HTTP/1.1\r\n" % (method, target) + b"".join(
        line + b"\r\n" for line in lines) + b"\r\n" + payload
