"""Unit tests of forkserve.logconfig: syslog addresses, the settings that
reach it, and where records go (in-process; the e2e tests run servers)."""

from __future__ import annotations

import logging
import socket

import pytest

from forkserve.config import Config, ConfigError
from forkserve.logconfig import (CONFIG_DEFAULTS, LogConfigError, configure_logging,
                                 parse_syslog_address)
from forkserve.logging import error_log


@pytest.mark.parametrize("addr, expected", [
    ("udp://localhost:514", (socket.SOCK_DGRAM, ("localhost", 514))),
    ("udp://10.0.0.2", (socket.SOCK_DGRAM, ("10.0.0.2", 514))),
    ("tcp://logs.example:6514", (socket.SOCK_STREAM, ("logs.example", 6514))),
    ("udp://[::1]:5140", (socket.SOCK_DGRAM, ("::1", 5140))),
    ("unix:///dev/log", (None, "/dev/log")),
    ("unix:///dev/log#dgram", (socket.SOCK_DGRAM, "/dev/log")),
    ("unix:///run/x.sock#stream", (socket.SOCK_STREAM, "/run/x.sock")),
])
def test_syslog_addresses_as_gunicorn_writes_them(addr, expected):
    assert parse_syslog_address(addr) == expected


@pytest.mark.parametrize("addr", ["http://x", "udp://", "udp://h:0", "udp://h:99999",
                                  "udp://h:5x", "unix://", "unix:///x#raw", "localhost:514"])
def test_bad_syslog_addresses(addr):
    with pytest.raises(ValueError):
        parse_syslog_address(addr)


def test_logging_settings_validate():
    cfg = Config()
    cfg.set("syslog_facility", "LOCAL3", "test")
    assert cfg.syslog_facility == "local3"
    assert cfg.syslog_addr == "udp://localhost:514"
    for name, bad in (("syslog_facility", "local8"), ("syslog_addr", "udp:/x"),
                      ("logconfig_dict", "{}"), ("reload_engine", "fsevents"),
                      ("reload_extra_files", ["/no/such/file"])):
        with pytest.raises(ConfigError):
            cfg.set(name, bad, "test")
    cfg.set("reload_extra_files", ["templates/**/*.html"], "test")  # a glob may match nothing


@pytest.fixture
def restore_logging():
    yield
    configure_logging(Config())


def test_a_dict_targets_gunicorn_names_and_forkserve_forwards(tmp_path, restore_logging):
    cfg = Config()
    cfg.values["logconfig_dict"] = {
        "root": {"level": "WARNING", "handlers": []},
        "handlers": {"f": {"class": "logging.FileHandler", "filename": str(tmp_path / "e.log"),
                           "formatter": "generic"}},
        "loggers": {"gunicorn.error": {"level": "DEBUG", "handlers": ["f"],
                                       "propagate": False}},
    }
    configure_logging(cfg)
    assert error_log.isEnabledFor(logging.DEBUG)
    error_log.debug("through forkserve's logger")
    logging.getLogger("gunicorn.error").info("through gunicorn's")
    text = (tmp_path / "e.log").read_text()
    assert "[DEBUG] through forkserve's logger" in text and "[INFO] through gunicorn's" in text
    # gunicorn's defaults are laid under the dict, key by key.
    assert CONFIG_DEFAULTS["formatters"]["generic"]["format"].startswith("%(asctime)s")


def test_a_failing_dict_falls_back_to_the_error_log(tmp_path, restore_logging):
    cfg = Config()
    cfg.values["errorlog"] = str(tmp_path / "fallback.log")
    cfg.values["logconfig_dict"] = {"handlers": {"x": {"class": "no.Such"}}}
    with pytest.raises(LogConfigError):
        configure_logging(cfg)
    error_log.error("still logged")
    assert "still logged" in (tmp_path / "fallback.log").read_text()


def test_by_default_gunicorn_error_is_the_error_log(tmp_path, restore_logging):
    cfg = Config()
    cfg.values["errorlog"] = str(tmp_path / "err.log")
    configure_logging(cfg)
    gunicorn_error = logging.getLogger("gunicorn.error")
    assert gunicorn_error.handlers == error_log.handlers
    gunicorn_error.warning("app says")
    assert "[WARNING] app says" in (tmp_path / "err.log").read_text()
