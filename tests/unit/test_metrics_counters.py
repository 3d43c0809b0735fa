"""The workers' shared counters and what the master reads from them."""

import socket

from forkserve.heartbeat import (DURATION_BUCKETS, STATUS_CLASSES, Heartbeat, RetireReason, Slot,
                                 by_bucket, by_status)
from forkserve.master.metrics import exit_reason
from forkserve.sockets import listen_queue
from forkserve.master.pool import Exit, WorkerRecord


def test_count_exchange_fills_status_and_duration_at_once():
    hb = Heartbeat()
    hb.count_exchange(200, 0.0004, 5, 0)
    hb.count_exchange(204, 0.003, 0, 10)
    hb.count_exchange(503, 100.0, 7, 0)
    hb.count_exchange(0, 0.02, 0, 0)      # no response: the client left
    hb.count_exchange(999, 0.02, 0, 0)    # out of range: "none", not an IndexError
    hb.count_exchange(12345, 0.02, 0, 0)
    counts = hb.read_counts()
    assert dict(zip(STATUS_CLASSES, by_status(counts))) == {
        "none": 3, "1xx": 0, "2xx": 2, "3xx": 0, "4xx": 0, "5xx": 1}
    buckets = by_bucket(counts)
    assert len(buckets) == len(DURATION_BUCKETS) + 1 and sum(buckets) == 6
    assert buckets[0] == 1                     # 0.4 ms <= 1 ms
    assert buckets[DURATION_BUCKETS.index(0.005)] == 1
    assert buckets[DURATION_BUCKETS.index(0.025)] == 3
    assert buckets[-1] == 1                    # 100 s: +Inf only
    assert abs(hb.read_duration_sum() - (0.0004 + 0.003 + 100.0 + 0.02 + 0.02 + 0.02)) < 1e-9
    assert counts[Slot.SENT_BYTES] == 12 and counts[Slot.RECEIVED_BYTES] == 10
    hb.close()


def test_kind_reason_gauges_and_header_untouched():
    hb = Heartbeat()
    hb.set_requests(41)
    hb.set_current(b"GET / HTTP/1.1")
    hb.set_kind("asgi")
    hb.set_retire_reason(RetireReason.MAX_REQUESTS)
    hb.count_begun()
    hb.count_websocket(opened=True)
    hb.count_websocket(opened=False)
    hb.set_connections(3)
    _, _, requests, line = hb.read()
    assert (requests, line) == (41, b"GET / HTTP/1.1")
    assert hb.kind() == "asgi" and hb.retire_reason() is RetireReason.MAX_REQUESTS
    c = hb.read_counts()
    assert (c[Slot.BEGUN], c[Slot.WS_OPENED], c[Slot.WS_CLOSED], c[Slot.CONNECTIONS]) == (
        1, 1, 1, 3)
    hb.close()


def test_listen_queue_of_a_real_listening_socket():
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(7)
        clients = [socket.create_connection(lsock.getsockname(), timeout=2) for _ in range(3)]
        try:
            assert listen_queue(lsock) == (3, 7)
            lsock.accept()[0].close()
            assert listen_queue(lsock) == (2, 7)
        finally:
            for c in clients:
                c.close()
    with socket.socket(socket.AF_UNIX) as usock:
        assert listen_queue(usock) is None


def _rec(**kw):
    return WorkerRecord(pid=1, age=1, generation=0, heartbeat=None, spawned_at=0.0, **kw)


def test_exit_reasons():
    none = RetireReason.NONE
    assert exit_reason(_rec(aborted_at=1.0, exit_reason="reload"), Exit.EXPECTED, none) == "timeout"
    assert exit_reason(_rec(exit_reason="scale_down"), Exit.EXPECTED, none) == "scale_down"
    assert exit_reason(_rec(), Exit.LEFT, RetireReason.MEMORY) == "memory"
    assert exit_reason(_rec(), Exit.CRASH, none) == "crash"
    assert exit_reason(_rec(), Exit.BOOT_CRASH, none) == "crash"
    assert exit_reason(_rec(), Exit.BOOT_ERROR, none) == "boot_error"
    assert exit_reason(_rec(), Exit.LEFT, none) == "exited"
