"""A gunicorn config whose hooks record what they see of their arguments
(server, worker, req, resp, cfg): each hook appends one JSON line to
$PROBE_OUT.  tests/e2e/test_hook_objects.py runs it under forkserve and
under gunicorn and compares the two records."""

import json
import os

bind = "127.0.0.1:" + os.environ["PROBE_PORT"]
workers = 1
worker_class = "sync"
timeout = 40
max_requests = 1000
proc_name = "probe"
_OUT = os.environ["PROBE_OUT"]


def _kind(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return type(v).__name__
    if isinstance(v, (list, tuple)):
        return type(v).__name__ + "[" + ",".join(sorted({_kind(x) for x in v})) + "]"
    if isinstance(v, dict):
        return "dict"
    return "object"


def _plain(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return None


def _probe(obj, names):
    out = {}
    for name in names:
        try:
            v = getattr(obj, name)
        except Exception as exc:
            out[name] = ["MISSING " + type(exc).__name__, None]
            continue
        out[name] = [_kind(v), _plain(v)]
    return out


def _record(hook, **parts):
    with open(_OUT, "a") as f:
        f.write(json.dumps({"hook": hook, **parts}) + "\n")


SERVER = ("address", "pid", "num_workers", "timeout", "reexec_pid", "master_name",
          "proc_name", "LISTENERS", "WORKERS", "cfg", "log", "app")
WORKER = ("pid", "ppid", "age", "alive", "booted", "aborted", "nr", "max_requests",
          "timeout", "cfg", "log", "tmp", "app", "sockets")
REQ = ("method", "uri", "path", "query", "fragment", "version", "headers", "scheme",
       "peer_addr", "remote_addr")
RESP = ("status", "status_code", "headers", "sent", "headers_sent", "response_length")
CFG = ("workers", "bind", "timeout", "worker_class_str", "address", "max_requests",
       "keepalive", "proc_name", "worker_tmp_dir", "reload")


def _listener(server):
    try:
        lst = server.LISTENERS[0]
        return [str(lst), type(lst.sock).__name__, list(lst.getsockname()),
                list(lst.sock.getsockname())]
    except Exception as exc:
        return type(exc).__name__


def _server(server):
    return {
        "server": _probe(server, SERVER),
        "cfg": _probe(server.cfg, CFG),
        "setting": server.cfg.settings["workers"].value,
        "log": [callable(getattr(server.log, m, None))
                for m in ("debug", "info", "warning", "error", "exception", "critical")],
        "listener": _listener(server),
        "workers_dict": sorted({type(k).__name__ for k in server.WORKERS}),
        "app_cfg": server.app.cfg is server.cfg,
        "pid_is_master": server.pid == os.getpid(),
    }


def _worker(worker):
    return {
        "worker": _probe(worker, WORKER),
        "wlog": [callable(getattr(worker.log, m, None))
                for m in ("debug", "info", "warning", "error", "exception", "critical")],
        "tmp": [callable(getattr(worker.tmp, m, None)) for m in ("notify", "fileno", "close")],
        "cfg_timeout": worker.cfg.timeout,
    }


def on_starting(server):
    _record("on_starting", **_server_early(server))


def _server_early(server):
    # No listener yet in on_starting (gunicorn binds after it).
    return {"server": _probe(server, ("pid", "num_workers", "timeout", "proc_name",
                                      "master_name", "cfg", "log", "app")),
            "cfg": _probe(server.cfg, CFG)}


def when_ready(server):
    _record("when_ready", **_server(server))


def pre_fork(server, worker):
    _record("pre_fork", **_server(server), **_worker(worker))


def post_fork(server, worker):
    worker.probe_mark = "set in post_fork"
    _record("post_fork", **_server(server), **_worker(worker),
            mine=worker.pid == os.getpid())


def post_worker_init(worker):
    _record("post_worker_init", **_worker(worker),
            kept=getattr(worker, "probe_mark", None))


def pre_request(worker, req):
    _record("pre_request", **_worker(worker), req=_probe(req, REQ))


def post_request(worker, req, environ, resp):
    _record("post_request", **_worker(worker), req=_probe(req, REQ),
            resp=_probe(resp, RESP), environ=type(environ).__name__)


def worker_exit(server, worker):
    _record("worker_exit", **_server(server), **_worker(worker))


def child_exit(server, worker):
    _record("child_exit", **_server(server), **_worker(worker))


def on_exit(server):
    _record("on_exit", **_server_early(server))
