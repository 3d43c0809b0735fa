"""Log lines are bounded, written whole or not at all, never block, and
what is dropped is counted and reported (issue 12 item 10)."""

from __future__ import annotations

import fcntl
import os
import re
import threading

import pytest

from forkserve import logging as fslog
from forkserve.logging import CUT_MARK, MAX_LINE, AccessLog, AccessRecord, log_drops

FMT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


@pytest.fixture
def logs(tmp_path):
    """Error log to a file, access log to a pipe nobody reads (as stdout)."""
    r, w = os.pipe()
    saved = os.dup(1)
    os.dup2(w, 1)
    os.close(w)
    errlog = tmp_path / "error.log"
    try:
        fslog.setup_logging(str(errlog), "info", "-")
        fslog._reports.reset()
        yield r, errlog
    finally:
        for logger in (fslog.error_log, fslog._access_log):
            for h in list(logger.handlers):
                logger.removeHandler(h)
                h.close()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(r)


def _record(ua: bytes = b"curl/8", referer: bytes = b"-") -> AccessRecord:
    rec = AccessRecord()
    rec.peer, rec.method, rec.path, rec.status, rec.sent = "10.0.0.1", "GET", "/x", 200, 12
    rec.request_headers = [(b"user-agent", ua), (b"referer", referer)]
    return rec


def _read(r: int) -> bytes:
    os.set_blocking(r, False)
    out = b""
    try:
        while chunk := os.read(r, 65536):
            out += chunk
    except BlockingIOError:
        pass
    return out


def test_a_short_line_is_written_as_it_is(logs):
    r, _ = logs
    AccessLog(FMT).log(_record())
    line = _read(r)
    assert line.endswith(b' 200 12 "-" "curl/8"\n') and CUT_MARK.encode() not in line


def test_long_atoms_are_cut_to_fit_one_pipe_write_and_short_ones_kept(logs):
    r, _ = logs
    AccessLog(FMT).log(_record(ua=b"A" * 6000, referer=b"R" * 3000))
    line = _read(r)
    assert len(line) <= MAX_LINE and line.endswith(b"\n") and line.count(b"\n") == 1
    text = line.decode()
    # Both long atoms are cut to the same size, each marked; the rest is whole.
    ua = re.search(r'"(A+)\.\.\.\[cut\]"\n$', text)
    referer = re.search(r'"(R+)\.\.\.\[cut\]" ', text)
    assert ua and referer and abs(len(ua.group(1)) - len(referer.group(1))) <= 1
    assert text.startswith("10.0.0.1 - - [") and '"GET /x HTTP/1.1" 200 12 ' in text
    # It uses the room there is.
    assert len(line) > MAX_LINE - 50


def test_a_cut_never_splits_a_utf8_sequence(logs):
    r, _ = logs
    # latin-1 bytes >= 0x80 become two UTF-8 bytes each.
    AccessLog(FMT).log(_record(ua=b"\xe9" * 5000))
    line = _read(r)
    assert len(line) <= MAX_LINE
    line.decode("utf-8")  # no split sequence
    assert line.endswith(b'...[cut]"\n')


def test_a_long_error_record_goes_out_as_whole_lines_per_write(tmp_path):
    """A traceback to a pipe: several writes of whole lines, each at most
    PIPE_BUF; one over-long line is cut."""
    r, w = os.pipe()
    handler = fslog._FDHandler("-", w, "error log")
    handler.setFormatter(fslog._Formatter())
    try:
        lines = [f"  frame {i}: " + "x" * 300 for i in range(40)] + ["E" * 10000]
        assert handler.write_text("\n".join(lines), count=True)
        out = _read(r)
    finally:
        handler.close()
        os.close(r)
        os.close(w)
    got = out.split(b"\n")[:-1]
    assert got[:40] == [line.encode() for line in lines[:40]]
    assert len(got[40]) == MAX_LINE - 1 and got[40].endswith(CUT_MARK.encode())


def test_a_full_pipe_drops_and_counts_without_blocking_or_touching_the_shared_fd(logs):
    r, errlog = logs
    flags_before = fcntl.fcntl(1, fcntl.F_GETFL)
    log = AccessLog(FMT)
    done = threading.Event()

    def flood():
        for _ in range(300):
            log.log(_record(ua=b"A" * 6000))
        done.set()
    t = threading.Thread(target=flood, daemon=True)
    t.start()
    assert done.wait(10), "a log write blocked"
    # The pipe (64 KiB) took 16 lines of 4 KiB; the rest were dropped.
    lines = _read(r).split(b"\n")[:-1]
    assert len(lines) + log_drops()["access"] == 300
    assert log_drops()["access"] >= 200
    assert all(len(line) < MAX_LINE for line in lines)
    # The descriptor shared with whoever started us is still blocking:
    # forkserve wrote through a private open file description of the pipe.
    assert fcntl.fcntl(1, fcntl.F_GETFL) == flags_before
    assert not flags_before & os.O_NONBLOCK
    # Reported once (at most one warning per REPORT_INTERVAL).
    warnings = re.findall(r"\[WARNING\] dropped (\d+) log lines: the access log \(stdout\)",
                          errlog.read_text())
    assert len(warnings) == 1 and 1 <= int(warnings[0]) <= 300


def test_dropped_lines_are_reported_again_after_the_interval(logs, monkeypatch):
    r, errlog = logs
    log = AccessLog(FMT)
    for _ in range(40):
        log.log(_record(ua=b"A" * 6000))
    first = log_drops()["access"]
    # The interval passes; the next drop reports what is still unreported.
    monkeypatch.setattr(fslog._reports, "last", fslog._reports.last - fslog.REPORT_INTERVAL)
    for _ in range(5):
        log.log(_record(ua=b"A" * 6000))
    counts = [int(n) for n in re.findall(r"dropped (\d+) log lines", errlog.read_text())]
    # The first drop is reported at once; the first drop after the interval
    # reports every one since; the 4 after it wait for the next interval.
    assert counts == [1, first] and log_drops()["access"] == first + 5


def test_fair_cap():
    assert fslog._fair_cap([10, 20, 30], 100) == 30          # all fit
    assert fslog._fair_cap([10, 6000, 3000], 1010) == 500    # the two long ones share
    assert fslog._fair_cap([5000], 3) == len(CUT_MARK)       # never below the mark
