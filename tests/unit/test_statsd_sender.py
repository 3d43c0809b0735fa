"""statsd: gunicorn's address forms, its metric lines, and a sender that
never blocks and never raises (forkserve/statsd.py)."""

from __future__ import annotations

import logging
import os
import socket

import pytest

from forkserve import statsd
from forkserve.config import Config, ConfigError
from forkserve.statsd import MasterMetrics, Packets, Sender, datagrams, parse_address


@pytest.mark.parametrize("value, expected", [
    ("127.0.0.1:9125", (socket.AF_INET, ("127.0.0.1", 9125))),
    ("127.0.0.1", (socket.AF_INET, ("127.0.0.1", 8125))),
    ("[::1]:9125", (socket.AF_INET6, ("::1", 9125))),
    ("[::1]", (socket.AF_INET6, ("::1", 8125))),
    ("localhost:8125", (socket.AF_UNSPEC, ("localhost", 8125))),
    ("unix:/run/statsd.sock", (socket.AF_UNIX, "/run/statsd.sock")),
    ("unix:///run/statsd.sock", (socket.AF_UNIX, "/run/statsd.sock")),
])
def test_addresses_as_gunicorn_reads_them(value, expected):
    assert parse_address(value) == expected


@pytest.mark.parametrize("value", ["", ":9125", "host:0", "host:65536", "host:port",
                                   "[::1", "[::1]x", "unix:", "host:1:2x"])
def test_bad_addresses_are_refused(value):
    with pytest.raises(ValueError):
        parse_address(value)


def test_settings_validate_and_keep_gunicorns_defaults():
    cfg = Config()
    assert (cfg.statsd_host, cfg.statsd_prefix, cfg.dogstatsd_tags,
            cfg.enable_backlog_metric) == (None, "", "", False)
    cfg.set("statsd_host", "localhost:9125", "test")
    assert cfg.statsd_host == "localhost:9125"
    cfg.set("statsd_host", None, "test")
    assert cfg.statsd_host is None
    for name, bad in (("statsd_host", "nohost:port"), ("statsd_prefix", "a|b"),
                      ("statsd_prefix", "a:b"), ("dogstatsd_tags", "env:x|y"),
                      ("dogstatsd_tags", "env:x\nfoo:1|c"), ("dogstatsd_tags", "caf\u00e9")):
        with pytest.raises(ConfigError, match=name):
            cfg.set(name, bad, "test")
    # No longer a gunicorn setting without effect: no warning note.
    cfg.set("statsd_host", "127.0.0.1:9125", "test")
    assert "statsd_host" not in cfg.notes and "statsd_host" not in cfg.foreign


def test_lines_have_gunicorns_names_types_prefix_and_tags():
    assert Packets().request(200, 0.0125) == [
        b"gunicorn.request.duration:12.500|ms",
        b"gunicorn.requests:1|c|@1.0",
        b"gunicorn.request.status.200:1|c|@1.0",
    ]
    tagged = Packets("app..", "env:prod,svc:web")
    assert tagged.line("gunicorn.workers", 4, "g") == b"app.gunicorn.workers:4|g|#env:prod,svc:web"
    assert Packets("app").line("gunicorn.backlog", 0, "h") == b"app.gunicorn.backlog:0|h"
    assert Packets("a").prefix == "a."  # gunicorn leaves a one-letter prefix without its dot
    # No response status (the client left first): no status counter.
    assert [line.split(b":")[0] for line in Packets().request(0, 0.1)] == [
        b"gunicorn.request.duration", b"gunicorn.requests"]


def test_lines_are_packed_whole_into_bounded_datagrams():
    lines = [b"x" * 500, b"y" * 500, b"z" * 500, b"w" * 2000]
    packed = datagrams(lines)
    assert packed == [lines[0] + b"\n" + lines[1], lines[2], lines[3]]
    assert all(len(d) <= statsd.MAX_DATAGRAM for d in packed[:2])


def _udp_listener():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    return sock


def test_sender_sends_one_datagram_per_request():
    listener = _udp_listener()
    sender = Sender(f"127.0.0.1:{listener.getsockname()[1]}", "p", "t:1")
    try:
        sender.request(404, 0.002)
        data = listener.recv(65536)
    finally:
        sender.close()
        listener.close()
    assert data == (b"p.gunicorn.request.duration:2.000|ms|#t:1\n"
                    b"p.gunicorn.requests:1|c|@1.0|#t:1\n"
                    b"p.gunicorn.request.status.404:1|c|@1.0|#t:1")
    assert sender.sent == 1 and sender.errors == {}


def test_nobody_listening_is_counted_never_raised():
    listener = _udp_listener()
    port = listener.getsockname()[1]
    listener.close()  # a closed UDP port: the kernel answers ECONNREFUSED
    sender = Sender(f"127.0.0.1:{port}")
    for _ in range(5):
        sender.request(200, 0.001)
    sender.close()
    assert sender.errors.get("ECONNREFUSED", 0) >= 1
    assert sender.sent + sum(sender.errors.values()) == 5

    missing = Sender("unix:/nonexistent/statsd.sock")
    missing.increment("gunicorn.log.error")
    missing.close()
    assert missing.errors == {"ENOENT": 1} and missing.sent == 0

    unresolvable = Sender("no-such-host.invalid:8125")
    unresolvable.increment("gunicorn.requests")
    assert unresolvable.sent == 0 and sum(unresolvable.errors.values()) == 1


def test_a_full_unix_datagram_queue_never_blocks(tmp_path):
    """A statsd server that stops reading: its queue fills (10 datagrams by
    default) and the sender drops instead of waiting; a blocking sender
    (gunicorn's) would hang here, and pytest-timeout would fail the test."""
    path = str(tmp_path / "statsd.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    sender = Sender(f"unix:{path}")
    try:
        for _ in range(2000):
            sender.request(200, 0.001)
    finally:
        sender.close()
        server.close()
    assert sender.sent >= 1 and sender.errors.get("EAGAIN", 0) >= 1
    assert sender.sent + sum(sender.errors.values()) == 2000


def test_a_forked_child_opens_its_own_socket():
    listener = _udp_listener()
    sender = Sender(f"127.0.0.1:{listener.getsockname()[1]}")
    try:
        sender.increment("parent")
        parent_fd = sender.sock.fileno()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            ok = sender.sock is None
            sender.increment("child")
            os.write(write, b"1" if ok and sender.sent == 2 else b"0")
            os._exit(0)
        os.waitpid(pid, 0)
        assert os.read(read, 1) == b"1"
        os.close(read)
        os.close(write)
        assert sender.sock is not None and sender.sock.fileno() == parent_fd
        got = sorted(listener.recv(100) for _ in range(2))
        assert got == [b"child:1|c|@1.0", b"parent:1|c|@1.0"]
    finally:
        sender.close()
        listener.close()


class _Recording(Sender):
    def __init__(self) -> None:
        super().__init__("127.0.0.1:9")
        self.lines: list[bytes] = []

    def send_lines(self, lines: list[bytes]) -> None:
        self.lines += lines


def test_master_sends_the_worker_gauge_when_it_changes_and_the_backlog_each_second():
    sender = _Recording()
    metrics = MasterMetrics()
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen(8)
    waiting = [socket.create_connection(listening.getsockname()) for _ in range(3)]
    try:
        metrics.tick(sender, 2, [listening], now=10.0)
        metrics.tick(sender, 2, [listening], now=10.5)
        metrics.tick(sender, 3, [], now=11.0)
        metrics.tick(sender, 3, [listening], now=11.1)
    finally:
        for s in waiting:
            s.close()
        listening.close()
    assert sender.lines == [b"gunicorn.workers:2|g", b"gunicorn.backlog:3|h",
                            b"gunicorn.workers:3|g", b"gunicorn.backlog:3|h"]


def test_error_log_records_count_as_gunicorns_log_metrics():
    sender = _Recording()
    log = logging.getLogger("forkserve.error")
    old_level, old_current = log.level, statsd._current
    statsd._current = sender
    log.addFilter(statsd._log_counter)
    log.setLevel(logging.DEBUG)
    try:
        log.info("not counted")
        log.warning("w")
        log.error("e")
        log.critical("c")
        try:
            raise RuntimeError("x")
        except RuntimeError:
            log.exception("exc")
        log.error("Error handling request %s:\n%s", "GET /",
                  "Traceback (most recent call last):\n  ...")
    finally:
        statsd._current = old_current
        log.setLevel(old_level)
    assert [line.split(b":")[0].decode() for line in sender.lines] == [
        "gunicorn.log.warning", "gunicorn.log.error", "gunicorn.log.critical",
        "gunicorn.log.exception", "gunicorn.log.exception"]
