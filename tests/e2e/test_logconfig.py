"""Logging configured as in gunicorn: logconfig_dict, logconfig_json,
logconfig (ini), and syslog over UDP and a unix datagram socket.

Real forkserve processes, real requests; the configs target gunicorn's
logger names (``gunicorn.error``, ``gunicorn.access``), as real ones do,
and the test reads the files, and the datagrams, they produce.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


def _dict(tmp_path: Path) -> dict:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "access": {"format": "ACCESS %(name)s %(message)s"},
            "error": {"format": "ERROR-LOG %(name)s %(levelname)s %(message)s"},
        },
        "handlers": {
            "access_file": {"class": "logging.FileHandler", "formatter": "access",
                            "filename": str(tmp_path / "access.log")},
            "error_file": {"class": "logging.FileHandler", "formatter": "error",
                           "filename": str(tmp_path / "app-error.log")},
        },
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_file"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["access_file"],
                                "propagate": False},
        },
        "root": {"level": "WARNING", "handlers": []},
    }


def _start(forkserve, tmp_path: Path, *args: str, kind: str = "sync"):
    app = "wsgi_basic:application" if kind == "sync" else "asgi_basic:app"
    server = forkserve(app, "-k", kind, *args, wait=False)
    error_file = tmp_path / "app-error.log"
    wait_for(lambda: error_file.exists() and "Ready:" in error_file.read_text(), 20,
             what="Ready: in the configured error log")
    return server


def _text(path: Path, needle: str, timeout: float = 10.0) -> str:
    wait_for(lambda: path.exists() and needle in path.read_text(), timeout,
             what=f"{needle!r} in {path.name}")
    return path.read_text()


@pytest.mark.parametrize("kind", ["sync", "asgi"])
def test_logconfig_dict_sends_both_logs_to_files_with_their_formatters(forkserve, tmp_path,
                                                                          kind):
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(f"logconfig_dict = {_dict(tmp_path)!r}\n")
    server = _start(forkserve, tmp_path, "-c", str(conf), kind=kind)
    assert server.get("/?logged-path")[0] == 200
    access = _text(tmp_path / "access.log", "logged-path")
    assert re.search(r'^ACCESS gunicorn\.access 127\.0\.0\.1 - - \[.+\] "GET /\?logged-path '
                     r'HTTP/1\.1" 200 ', access, re.M), access
    errors = _text(tmp_path / "app-error.log", "Booting worker")
    assert "ERROR-LOG gunicorn.error INFO Starting forkserve" in errors
    assert "ACCESS" not in errors and "Starting" not in access
    # forkserve's own error log file (-error-logfile) got nothing: the config rules.
    assert "Starting forkserve" not in server.log
    # USR1 reopens the config's files, as after logrotate moved them away.
    os.rename(tmp_path / "access.log", tmp_path / "access.log.1")
    server.signal(signal.SIGUSR1)
    time.sleep(1.0)
    assert server.get("/?after-rotate")[0] == 200
    assert "after-rotate" in _text(tmp_path / "access.log", "after-rotate")


def test_logconfig_json_and_hup_apply_it_again(forkserve, tmp_path):
    path = tmp_path / "logging.json"
    config = _dict(tmp_path)
    path.write_text(json.dumps(config))
    server = _start(forkserve, tmp_path, "--log-config-json", str(path))
    server.get("/?one")
    _text(tmp_path / "access.log", "?one")
    config["formatters"]["access"]["format"] = "ACCESS-V2 %(message)s"
    path.write_text(json.dumps(config))
    server.signal(signal.SIGHUP)
    _text(tmp_path / "app-error.log", "Reload complete")
    server.get("/?two")
    assert "ACCESS-V2 127.0.0.1" in _text(tmp_path / "access.log", "?two")


def test_logconfig_ini_file(forkserve, tmp_path):
    ini = tmp_path / "logging.ini"
    ini.write_text(textwrap.dedent(f"""\
        [loggers]
        keys=root, gunicorn.error, gunicorn.access

        [handlers]
        keys=error_file, access_file

        [formatters]
        keys=plain

        [logger_root]
        level=WARNING
        handlers=

        [logger_gunicorn.error]
        level=INFO
        handlers=error_file
        propagate=0
        qualname=gunicorn.error

        [logger_gunicorn.access]
        level=INFO
        handlers=access_file
        propagate=0
        qualname=gunicorn.access

        [handler_error_file]
        class=logging.FileHandler
        formatter=plain
        args=('{tmp_path / "app-error.log"}', 'a')

        [handler_access_file]
        class=logging.FileHandler
        formatter=plain
        args=('%(here)s/access.log', 'a')

        [formatter_plain]
        format=INI %(levelname)s %(message)s
        """))
    server = _start(forkserve, tmp_path, "--log-config", str(ini))
    server.get("/?ini")
    assert "INI INFO 127.0.0.1" in _text(tmp_path / "access.log", "?ini")
    assert "INI INFO Starting forkserve" in (tmp_path / "app-error.log").read_text()


def test_an_app_logging_to_gunicorn_error_writes_to_the_error_log(forkserve, tmp_path):
    # The Flask recipe: app.logger takes gunicorn.error's handlers.
    (tmp_path / "flasky.py").write_text(textwrap.dedent("""\
        import logging

        log = logging.getLogger("gunicorn.error")

        def application(environ, start_response):
            log.warning("from the app: %s", environ["PATH_INFO"])
            assert log.handlers, "gunicorn.error has no handlers"
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
        """))
    server = forkserve("flasky:application", cwd=tmp_path)
    assert server.get("/recipe")[0] == 200
    server.wait_log("[WARNING] from the app: /recipe")


@pytest.mark.parametrize("bad, message", [
    ("logconfig_dict = {'version': 1, 'handlers': {'x': {'class': 'no.such.Handler'}}}\n",
     "logconfig_dict: ValueError: Unable to configure handler 'x'"),
    ("logconfig_json = 'missing.json'\n", "logconfig_json: cannot read missing.json"),
    ("logconfig = 'missing.ini'\n", "logconfig: no such file: missing.ini"),
    ("syslog_addr = 'http://x'\n", "syslog_addr: expected udp://HOST:PORT"),
    ("syslog_facility = 'local9'\n", "syslog_facility: expected a syslog facility"),
])
def test_bad_logging_settings_are_refused_in_one_line(tmp_path, bad, message):
    from conftest import run_forkserve

    (tmp_path / "conf.py").write_text(bad)
    proc = run_forkserve("-c", "conf.py", "-b", "127.0.0.1:1", "wsgi_basic:application",
                         cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def _datagrams(sock: socket.socket, until: str, timeout: float = 15.0) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not any(until.encode() in d for d in got):
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            got.append(sock.recv(65536))
        except socket.timeout:
            break
    return got


@pytest.mark.parametrize("kind", ["sync", "asgi"])
def test_syslog_over_udp_rfc3164_with_facility_and_prefix(forkserve, kind):
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    with listener:
        app = "wsgi_basic:application" if kind == "sync" else "asgi_basic:app"
        server = forkserve(app, "-k", kind,
                           "--log-syslog", "--log-syslog-to", f"udp://127.0.0.1:{port}",
                           "--log-syslog-prefix", "shop", "--log-syslog-facility", "local3")
        server.get("/?via-syslog")
        got = _datagrams(listener, "via-syslog")
    local3 = 19 * 8
    starting = [d for d in got if b"Starting forkserve" in d]
    assert starting and starting[0] == (
        f"<{local3 + 6}>forkserve.shop.error: [{server.pid}] Starting forkserve ".encode()
        + starting[0].split(b"Starting forkserve ", 1)[1]), got
    assert starting[0].endswith(b"\x00")
    access = [d for d in got if b"via-syslog" in d]
    assert access and re.match(rb'<158>forkserve\.shop\.access: \[\d+\] 127\.0\.0\.1 - - '
                               rb'\[.+\] "GET /\?via-syslog HTTP/1\.1" 200', access[0]), got
    # The error log file still has everything too.
    assert "Starting forkserve" in server.log


def test_syslog_to_a_unix_datagram_socket_without_the_access_log(forkserve):
    with tempfile.TemporaryDirectory(prefix="fs-syslog-") as d:
        path = os.path.join(d, "log.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(path)
        with listener:
            server = forkserve("wsgi_basic:application", "--log-syslog", "--log-syslog-to",
                               f"unix://{path}#dgram", "--log-syslog-facility", "daemon",
                               "--disable-redirect-access-to-syslog", "--log-level", "debug")
            server.get("/?not-in-syslog")
            server.signal(signal.SIGHUP)  # a line we wait for, after the request
            got = _datagrams(listener, "Reload complete")
    assert any(d.startswith(b"<30>forkserve.wsgi_basic.application.error: [") for d in got), got
    assert any(d.startswith(b"<31>") and b"Spawned worker" in d for d in got), got  # debug
    assert not any(b"not-in-syslog" in d for d in got), got


def test_a_syslog_reader_that_stops_reading_never_blocks_a_worker(forkserve):
    with tempfile.TemporaryDirectory(prefix="fs-syslog-") as d:
        path = os.path.join(d, "log.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(path)
        with listener:  # bound, never read: its queue fills up
            server = forkserve("wsgi_basic:application", "--log-syslog", "--log-syslog-to",
                               f"unix://{path}#dgram")
            pids = server.workers()
            started = time.monotonic()
            for i in range(400):
                assert server.get(f"/?{i}", timeout=5)[0] == 200
            assert time.monotonic() - started < 40
            assert server.workers() == pids
