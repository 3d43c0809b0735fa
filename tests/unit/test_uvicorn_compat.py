"""A project's own UvicornWorker subclass as worker_class
(forkserve/uvicorn_compat.py); served side by side with gunicorn in
tests/e2e/test_gunicorn_compat.py (own-uvicorn-worker-subclass)."""

from __future__ import annotations

import itertools
import logging
import sys
import textwrap

import pytest

from forkserve.cli import build_config
from forkserve.config import ConfigError

pytest.importorskip("uvicorn")

_names = itertools.count()


def _worker_module(tmp_path, body: str, header: str = "from uvicorn.workers import UvicornWorker\n"):
    """Write a module with a worker class; its dotted path."""
    name = f"fs_test_workers_{next(_names)}"
    (tmp_path / f"{name}.py").write_text(header + textwrap.dedent(body))
    return name


def _build(tmp_path, path, *argv):
    return build_config(["-k", path, *argv, "app:app"], {}, cwd=str(tmp_path))


def _warnings(cfg):
    return [line for level, line in cfg.notes.values() if level >= logging.WARNING]


def test_config_kwargs_become_settings(tmp_path):
    mod = _worker_module(tmp_path, """
        class MyWorker(UvicornWorker):
            CONFIG_KWARGS = {"loop": "uvloop", "http": "httptools", "lifespan": "off",
                             "proxy_headers": True, "forwarded_allow_ips": "10.0.0.0/8",
                             "root_path": "/api", "timeout_keep_alive": 10,
                             "limit_concurrency": 100, "limit_max_requests": 5000,
                             "ws_max_size": 65536, "ws_ping_interval": None,
                             "timeout_graceful_shutdown": 7, "backlog": 512}
        """)
    # CONFIG_KWARGS win over the command line, as in uvicorn's worker.
    cfg = _build(tmp_path, f"{mod}.MyWorker", "--keep-alive", "3")
    assert cfg.worker_class == "asgi"
    assert (cfg.lifespan, cfg.forwarded_allow_ips, cfg.root_path) == ("off", ["10.0.0.0/8"], "/api")
    assert (cfg.keepalive, cfg.limit_concurrency, cfg.max_requests) == (10.0, 100, 5000)
    assert (cfg.ws_max_size, cfg.ws_ping_interval, cfg.graceful_timeout, cfg.backlog) == \
        (65536, 0.0, 7.0, 512)
    assert cfg.sources["keepalive"] == f"{mod}.MyWorker.CONFIG_KWARGS"
    assert _warnings(cfg) == []


def test_keys_it_cannot_honour_are_named_once(tmp_path):
    mod = _worker_module(tmp_path, """
        class MyWorker(UvicornWorker):
            CONFIG_KWARGS = {"loop": "asyncio", "http": "h11", "proxy_headers": False,
                             "forwarded_allow_ips": "*", "headers": [("x-a", "1")]}
        """)
    cfg = _build(tmp_path, f"{mod}.MyWorker")
    # proxy_headers=False: no peer's proxy headers are trusted, whatever the order.
    assert cfg.forwarded_allow_ips == []
    (line,) = _warnings(cfg)
    assert line.startswith(f"{mod}.MyWorker.CONFIG_KWARGS: forkserve cannot honour "
                           f"loop='asyncio', headers=[('x-a', '1')];")


def test_uvicorns_h11_worker_defaults_need_no_warning(tmp_path):
    mod = _worker_module(tmp_path, """
        class MyWorker(UvicornH11Worker):
            CONFIG_KWARGS = {**UvicornH11Worker.CONFIG_KWARGS, "loop": "auto"}
        """, header="from uvicorn.workers import UvicornH11Worker\n")
    cfg = _build(tmp_path, f"{mod}.MyWorker")
    assert cfg.worker_class == "asgi" and _warnings(cfg) == []


def test_read_without_gunicorn_installed(tmp_path, monkeypatch):
    # uvicorn's worker module imports gunicorn; a project that swapped
    # gunicorn for forkserve may have removed it.
    for name in [m for m in sys.modules if m.split(".")[0] == "gunicorn"] + ["gunicorn"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "uvicorn.workers", raising=False)
    mod = _worker_module(tmp_path, """
        class MyWorker(UvicornWorker):
            CONFIG_KWARGS = {"root_path": "/x"}
        """)
    cfg = _build(tmp_path, f"{mod}.MyWorker")
    assert cfg.worker_class == "asgi" and cfg.root_path == "/x"
    assert "uvicorn.workers" not in sys.modules  # the stand-in is gone again
    assert mod not in sys.modules


def test_without_uvicorn_says_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    monkeypatch.delitem(sys.modules, "uvicorn.workers", raising=False)
    mod = _worker_module(tmp_path, "class MyWorker(UvicornWorker):\n    pass\n")
    with pytest.raises(ConfigError) as info:
        _build(tmp_path, f"{mod}.MyWorker")
    assert str(info.value) == (
        f"worker_class: cannot import '{mod}.MyWorker': it needs uvicorn, which is not "
        f"installed: pip install uvicorn (forkserve reads the class's CONFIG_KWARGS), or use "
        f"-k asgi (command line)")


@pytest.mark.parametrize("path, needle", [
    ("collections.OrderedDict", "'collections.OrderedDict' is not a worker forkserve runs: "
                                "expected auto, sync, asgi or gevent"),
    ("os.no_such_class", "'os' has no 'no_such_class'; expected auto, sync, asgi or gevent"),
    ("no_such_pkg.Worker", "cannot import 'no_such_pkg.Worker': no module named "
                           "'no_such_pkg'; expected auto, sync, asgi or gevent"),
])
def test_other_classes_are_refused_with_what_is_supported(tmp_path, path, needle):
    with pytest.raises(ConfigError) as info:
        _build(tmp_path, path)
    assert needle in str(info.value) and "\n" not in str(info.value)
