"""A raw WebSocket client for the tests: exact bytes on a plain socket, so
that tests can send what a library would refuse to (unmasked frames,
invalid UTF-8, data before the handshake completes)."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import urllib.parse


def handshake(sock: socket.socket, path: str = "/ws", script: list | None = None,
              name: str = "ws", extra: bytes = b"") -> None:
    """Send an upgrade request (the script for tests/apps/asgi_spec.py)."""
    if script is not None:
        path += "?" + urllib.parse.urlencode({"script": json.dumps(script), "name": name})
    key = base64.b64encode(os.urandom(16))
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n"
                 % (path.encode(), key, extra))


def read_head(sock: socket.socket, buf: bytearray) -> tuple[int, bytes]:
    """The response head (status, raw head); what follows stays in ``buf``."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed before a response head: {bytes(buf)!r}")
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    del buf[:end]
    return int(head.split(b" ", 2)[1]), head


def frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = True, rsv: int = 0) -> bytes:
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, (0x80 if mask else 0) | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, (0x80 if mask else 0) | 126, n)
    else:
        head = struct.pack("!BBQ", first, (0x80 if mask else 0) | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if n < 4096 else _mask(payload, key)
    return head + key + masked


def _mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    k = int.from_bytes((key * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ k).to_bytes(n, "big")


def read_frame(sock: socket.socket, buf: bytearray) -> tuple[int, bytes]:
    """One (unmasked, server) frame: (opcode, payload)."""
    def need(n: int) -> None:
        while len(buf) < n:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed before a whole frame")
            buf.extend(data)
    need(2)
    opcode = buf[0] & 0x0F
    n = buf[1] & 0x7F
    at = 2
    if n == 126:
        need(4)
        n = struct.unpack("!H", buf[2:4])[0]
        at = 4
    elif n == 127:
        need(10)
        n = struct.unpack("!Q", buf[2:10])[0]
        at = 10
    need(at + n)
    payload = bytes(buf[at:at + n])
    del buf[:at + n]
    return opcode, payload


def close_code(payload: bytes) -> int:
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
