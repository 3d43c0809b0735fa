"""Config file whose hooks write a line each to $FS_HOOK_LOG."""

import os

workers = 2
_LOG = os.environ["FS_HOOK_LOG"]


def _mark(name):
    with open(_LOG, "a") as f:
        f.write(f"{name} {os.getpid()}\n")


def on_starting(server):
    _mark("on_starting")


def when_ready(server):
    _mark("when_ready")


def pre_fork(server, worker):
    _mark("pre_fork")


def post_fork(server, worker):
    _mark("post_fork")


def post_worker_init(worker):
    _mark("post_worker_init")


def pre_request(worker, req):
    _mark("pre_request")


def post_request(worker, req, environ, resp):
    _mark("post_request")


def child_exit(server, worker):
    _mark("child_exit")


def worker_exit(server, worker):
    _mark("worker_exit")


def nworkers_changed(server, new_value, old_value):
    _mark(f"nworkers_changed {old_value}->{new_value}")


def on_reload(server):
    _mark("on_reload")


def on_exit(server):
    _mark("on_exit")
