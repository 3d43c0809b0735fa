"""Scrape a forkserve control listener and read the Prometheus text format
(a small reader for the tests: sample lines only, no escapes beyond ours)."""

from __future__ import annotations

import re
import socket

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def control_get(port: int, path: str, headers: dict[str, str] | None = None,
                timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """One request to the control listener; (status, headers, body)."""
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall((head + "\r\n").encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    raw_head, _, body = data.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return int(lines[0].split(" ")[1]), hdrs, body


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, frozenset of label pairs): value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = frozenset(_LABEL.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    status, _, body = control_get(port, "/metrics")
    assert status == 200, body
    return parse(body.decode())


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)
