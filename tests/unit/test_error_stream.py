"""forkserve.http.wsgi.ErrorStream: wsgi.errors as error-log records."""

from __future__ import annotations

import logging

import pytest

from forkserve.http.wsgi import ErrorStream


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def stream():
    log = logging.getLogger("forkserve.test.errors")
    log.propagate = False
    handler = _Records()
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    yield ErrorStream(log), handler.messages
    log.removeHandler(handler)


def test_whole_lines_go_out_at_once_partial_ones_wait(stream):
    errors, messages = stream
    assert errors.write("one\ntwo\nthr") == len("one\ntwo\nthr")
    assert messages == ["one\ntwo"]
    errors.write("ee\n")
    assert messages == ["one\ntwo", "three"]
    errors.write("tail")
    errors.flush()
    errors.flush()
    assert messages == ["one\ntwo", "three", "tail"]


def test_print_and_writelines(stream):
    errors, messages = stream
    print("a", "b", file=errors)
    errors.writelines(["c\n", "d"])
    errors.flush()
    assert messages == ["a b", "c", "d"]


def test_a_line_without_end_is_bounded(stream):
    errors, messages = stream
    for _ in range(5):
        errors.write("x" * 5000)
    assert messages and all(len(m) <= 5000 * 5 for m in messages)
    assert len(errors._pending) < ErrorStream._PENDING_MAX


def test_bytes_are_refused_as_on_a_text_stream(stream):
    errors, _ = stream
    with pytest.raises(TypeError):
        errors.write(b"bytes")  # type: ignore[arg-type]
