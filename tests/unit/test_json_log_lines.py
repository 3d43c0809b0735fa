"""JSON lines logs (``log_format = "json"``): every line is one valid JSON
object of at most MAX_LINE bytes, whatever bytes the client sent."""

from __future__ import annotations

import datetime
import json
import os
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forkserve import logging as fslog
from forkserve.logging import (CUT_MARK, MAX_LINE, AccessLog, AccessRecord, JsonFormatter,
                               json_line, rfc3339)

FMT = '%(h)s "%(r)s" %(s)s %({x-request-id}i)s %({Content-Type}o)s %({FS_TEST_ENV}e)s'


@pytest.fixture
def access_lines(tmp_path):
    """The access log to a file, its lines as they were written."""
    path = tmp_path / "access.log"
    fslog.setup_logging(str(tmp_path / "error.log"), "info", str(path), "json")
    try:
        yield lambda: path.read_bytes().splitlines(keepends=True)
    finally:
        for logger in (fslog.error_log, fslog._access_log):
            for h in list(logger.handlers):
                logger.removeHandler(h)
                h.close()


def _record(headers=(), method="GET", path="/x", query="a=1") -> AccessRecord:
    rec = AccessRecord()
    rec.peer, rec.method, rec.path, rec.query = "10.0.0.1", method, path, query
    rec.status, rec.sent = 201, 12
    rec.request_headers = list(headers)
    rec.response_headers = [(b"content-type", b"text/plain")]
    rec.start, rec.end = 100.0, 100.0015
    return rec


def test_an_access_line_has_the_atoms_fields_typed(access_lines, monkeypatch):
    monkeypatch.setenv("FS_TEST_ENV", "staging")
    before = time.time()
    AccessLog(FMT, json=True).log(_record([
        (b"User-Agent", b"curl/8"), (b"X-Request-Id", b"abc"),
        (b"Authorization", b"Basic dXNlcjpwdw==")]))
    [line] = access_lines()
    assert line.endswith(b"\n") and line.isascii()
    obj = json.loads(line)
    when = datetime.datetime.fromisoformat(obj.pop("time"))
    assert when.tzinfo is not None and abs(when.timestamp() - before) < 5
    assert obj == {
        "remote_addr": "10.0.0.1", "user": "user", "method": "GET", "path": "/x",
        "query": "a=1", "protocol": "HTTP/1.1", "status": 201, "bytes": 12,
        "referer": None, "user_agent": "curl/8", "duration_us": 1500, "duration": 0.0015,
        "pid": os.getpid(), "request_headers": {"x-request-id": "abc"},
        "response_headers": {"content-type": "text/plain"},
        "environ": {"FS_TEST_ENV": "staging"},
    }


def test_rfc3339_has_microseconds_and_an_offset():
    text = rfc3339(1764115200.25)
    parsed = datetime.datetime.fromisoformat(text)
    assert parsed.timestamp() == 1764115200.25 and parsed.utcoffset() is not None
    assert text[10] == "T" and text[19:26] == ".250000" and text[26] in "+-"


def test_hostile_bytes_give_valid_json_lines(access_lines):
    """Control bytes, a newline, quotes, backslashes, bytes that are not
    UTF-8 and valid UTF-8: one line, each value as the client sent it
    (invalid bytes as \\xNN), nothing that breaks a JSON reader."""
    ua = b'a\x00\x01\x1b[31m"\\\n\r\xff\xfe\xc3(' + "caf\u00e9 \u2603".encode()
    # The record holds request-line values as latin-1, a character a byte.
    AccessLog(FMT, json=True).log(_record(
        [(b"user-agent", ua), (b"x-request-id", b"\x80\x81")],
        path=b"/p\xc3\xa9\xff".decode("latin-1"), query="q=\x7f"))
    [line] = access_lines()
    assert line.count(b"\n") == 1 and line.isascii()
    obj = json.loads(line)
    assert obj["user_agent"] == 'a\x00\x01\x1b[31m"\\\n\r\\xff\\xfe\\xc3(caf\u00e9 \u2603'
    assert obj["path"] == "/p\u00e9\\xff" and obj["query"] == "q=\x7f"
    assert obj["request_headers"] == {"x-request-id": "\\x80\\x81"}


@given(st.binary(max_size=9000), st.binary(max_size=3000))
def test_any_header_bytes_give_one_bounded_valid_line(ua, referer):
    rec = _record([(b"user-agent", ua), (b"referer", referer), (b"x-request-id", ua[:100])])
    line = json_line(AccessLog(FMT, json=True).fields(rec, 0.0))
    assert len(line) <= MAX_LINE - 1 and line.isascii() and "\n" not in line
    obj = json.loads(line)
    assert obj["status"] == 201 and obj["bytes"] == 12
    assert obj.get("truncated") is (True if "truncated" in obj else None)


def test_a_too_long_object_is_cut_fairly_and_marked(access_lines):
    AccessLog(FMT, json=True).log(_record([(b"user-agent", b"A" * 6000),
                                           (b"referer", b"\x01" * 3000),
                                           (b"x-request-id", b"short")]))
    [line] = access_lines()
    assert MAX_LINE - 60 < len(line) <= MAX_LINE
    obj = json.loads(line)
    assert obj["truncated"] is True
    assert obj["user_agent"].endswith(CUT_MARK) and obj["referer"].endswith(CUT_MARK)
    # The escaped referer and the plain user agent take about the same room.
    ua_size = len(json.dumps(obj["user_agent"]))
    referer_size = len(json.dumps(obj["referer"]))
    assert abs(ua_size - referer_size) <= 8
    assert obj["request_headers"] == {"x-request-id": "short"}
    assert (obj["status"], obj["method"], obj["path"]) == (201, "GET", "/x")


def test_nothing_fits_still_gives_valid_json():
    obj = {"k" * 5000: "v", "status": 200}
    line = json_line(obj)
    assert json.loads(line) == {"status": 200, "truncated": True}
    assert json.loads(json_line({"k" * 5000: 1})) == {"truncated": True}


def test_error_log_records_as_json(tmp_path):
    path = tmp_path / "error.log"
    fslog.setup_logging(str(path), "info", None, "json")
    try:
        fslog.error_log.info("Booting worker with pid %s", 42)
        try:
            raise ValueError("bad \x00 \"thing\"")
        except ValueError:
            fslog.error_log.exception("it failed: %s", "\xff")
        fslog.error_log.warning("x" * 10000)
    finally:
        for h in list(fslog.error_log.handlers):
            fslog.error_log.removeHandler(h)
            h.close()
    lines = path.read_bytes().splitlines()
    assert len(lines) == 3 and all(len(line) < MAX_LINE for line in lines)
    info, error, warning = map(json.loads, lines)
    assert {k: info[k] for k in ("level", "pid", "logger", "message")} == {
        "level": "info", "pid": os.getpid(), "logger": "forkserve.error",
        "message": "Booting worker with pid 42"}
    datetime.datetime.fromisoformat(info["time"])
    assert error["level"] == "error" and error["message"] == "it failed: \xff"
    assert error["exception"].startswith("Traceback") and 'bad \x00 "thing"' in error["exception"]
    assert warning["truncated"] is True and warning["message"].endswith(CUT_MARK)


def test_the_formatter_serves_a_logging_dict_config_handler(tmp_path):
    """JSON is a formatter: a handler configured by logging.config (as
    logconfig_dict does) can use it, for the access records too."""
    import logging.config

    logging.config.dictConfig({
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"json": {"()": "forkserve.logging.JsonFormatter"}},
        "handlers": {"file": {"class": "logging.FileHandler", "formatter": "json",
                              "filename": str(tmp_path / "app.log")}},
        "loggers": {"app.test": {"handlers": ["file"], "level": "INFO", "propagate": False}},
    })
    logger = logging.getLogger("app.test")
    logger.info("hello %s", "there")
    access = AccessLog(FMT, json=True)
    fields = access.fields(_record(), time.time())
    logger.info("%s", fslog._JsonMessage(fields), extra={"access": fields})
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    first, second = map(json.loads, (tmp_path / "app.log").read_text().splitlines())
    assert first["message"] == "hello there" and first["logger"] == "app.test"
    assert second["status"] == 201 and second["path"] == "/x"
    assert "message" not in second
    # A plain "%(message)s" handler gets the same JSON line.
    assert json.loads(str(fslog._JsonMessage(fields))) == second


def test_the_setting_is_text_or_json():
    from forkserve.config import Config, ConfigError

    cfg = Config()
    assert cfg.log_format == "text"
    cfg.set("log_format", "json", "test")
    assert cfg.log_format == "json"
    with pytest.raises(ConfigError, match="log_format: expected one of text, json"):
        cfg.set("log_format", "xml", "test")
