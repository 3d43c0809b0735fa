"""gunicorn's names on the objects server hooks receive
(forkserve/hookobjects.py); the end-to-end comparison with gunicorn is
tests/e2e/test_hook_objects.py."""

from __future__ import annotations

import socket
import sys

import pytest

from forkserve.arbiter import Arbiter
from forkserve.config import Config
from forkserve.heartbeat import Heartbeat
from forkserve.hookobjects import ListenerView, MasterWorkerView, ServerView
from forkserve.master.pool import WorkerRecord
from forkserve.sockets import Listener, parse_address


@pytest.fixture
def arbiter():
    cfg = Config()
    cfg.set("bind", ["127.0.0.1:0"], "test")
    cfg.set("workers", 3, "test")
    arb = Arbiter(cfg)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    arb.listeners = [Listener(sock, parse_address("127.0.0.1:0"))]
    yield arb
    sock.close()


def test_server_has_gunicorns_names(arbiter):
    server = arbiter.hook_server
    port = arbiter.listeners[0].sock.getsockname()[1]
    assert server.address == [("127.0.0.1", 0)]
    assert [str(lst) for lst in server.LISTENERS] == [f"http://127.0.0.1:{port}"]
    assert server.LISTENERS[0].getsockname() == ("127.0.0.1", port)
    assert server.LISTENERS[0].sock is arbiter.listeners[0].sock
    assert server.WORKERS == {} and server.pid == arbiter.pid
    assert server.cfg is arbiter.cfg and server.app.cfg is arbiter.cfg
    assert server.timeout == 30.0 and server.reexec_pid == 0
    assert server.master_name == "Master" and server.proc_name == "forkserve"
    assert server.worker_class == "auto"  # no app in the master to detect it from
    for level in ("debug", "info", "warning", "error", "exception", "critical"):
        assert callable(getattr(server.log, level))


def test_a_hook_sets_num_workers_as_in_gunicorn(arbiter):
    seen = []
    arbiter.cfg.set_hook("nworkers_changed", lambda s, new, old: seen.append((new, old)),
                         "test")
    server = arbiter.hook_server
    server.num_workers = 5
    assert arbiter.num_workers == 5 and server.num_workers == 5
    assert seen == [(5, 3)]
    # What a hook keeps on the server stays for the next hook.
    server.started_at = 123
    assert arbiter.hook_server.started_at == 123


def test_master_side_worker_is_one_object_per_worker(arbiter):
    rec = WorkerRecord(pid=0, age=1, generation=1, heartbeat=Heartbeat(), spawned_at=0.0)
    try:
        view = arbiter.hook_server.worker(rec)
        assert isinstance(view, MasterWorkerView)
        assert view.pid == "[booting]"  # before the fork, as gunicorn says
        rec.pid = 4242
        arbiter.pool.workers[4242] = rec
        assert arbiter.hook_server.WORKERS[4242] is view
        assert view.pid == 4242 and view.ppid == arbiter.pid and view.age == 1
        assert view.alive and not view.booted and not view.aborted and view.nr == 0
        assert view.max_requests == sys.maxsize and view.cfg is arbiter.cfg
        assert view.tmp.fileno() == -1 and view.tmp.notify() is None
        rec.heartbeat.close()  # reaped: what it knew stays readable
        assert view.nr == 0 and not view.booted
    finally:
        arbiter.pool.workers.clear()


def test_unix_listener_reads_as_gunicorn_prints_it(tmp_path):
    path = str(tmp_path / "s.sock")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    with sock:
        view = ListenerView(Listener(sock, parse_address(f"unix:{path}")))
        assert str(view) == f"unix:{path}" and view.cfg_addr == path
    # Closed (a worker that drained): the address it was asked for.
    assert str(view) == f"unix:{path}"


def test_cfg_has_gunicorns_derived_names():
    cfg = Config()
    cfg.set("bind", ["127.0.0.1:8001", "unix:/tmp/x.sock"], "test")
    cfg.set("raw_env", ["A=1", "B=x=y"], "test")
    cfg.set("worker_tmp_dir", "/dev/shm", "test")
    assert cfg.address == [("127.0.0.1", 8001), "/tmp/x.sock"]
    assert cfg.worker_class_str == "auto" and cfg.env == {"A": "1", "B": "x=y"}
    assert cfg.settings["workers"].value == 1 and cfg.settings["bind"].get() == cfg.bind
    # gunicorn's names for forkserve settings, and settings forkserve does
    # not implement: the value given, else gunicorn's default.
    assert cfg.asgi_lifespan == "auto" and cfg.settings["websocket_max_message_size"].value
    assert cfg.worker_tmp_dir == "/dev/shm" and cfg.reload is False and cfg.is_ssl is False
    with pytest.raises(AttributeError):
        cfg.no_such_thing  # noqa: B018


def test_a_hook_sets_a_setting_as_in_gunicorn():
    cfg = Config()
    cfg.set("max_requests", 500)  # gunicorn: server.cfg.set(name, value)
    assert cfg.max_requests == 500 and cfg.sources["max_requests"] == "a server hook"
