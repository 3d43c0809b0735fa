"""The objects server hooks receive, with gunicorn's attribute names.

Config files written for gunicorn reach into the hook arguments:
``server.address``, ``server.LISTENERS``, ``server.WORKERS``,
``worker.log``, ``worker.tmp``, ``req.peer_addr``...  forkserve's own
classes keep their own names; the views here add gunicorn's on top, so the
hooks of real configs run, and cost nothing unless a hook is set:

- :class:`ServerView`: the ``server`` argument, one per master (attributes
  a hook sets on it stay for the next hook); anything it does not define
  is the arbiter's.
- :class:`MasterWorkerView`: the ``worker`` of ``pre_fork`` and
  ``child_exit`` (and the values of ``server.WORKERS``), what the master
  knows of a worker; in the worker process, hooks get the worker itself,
  whose class takes gunicorn's extra names from :class:`GunicornWorkerNames`.
- :class:`ListenerView`: a listening socket as gunicorn shows it.
- :func:`cfg_attribute`: gunicorn's ``cfg`` names that are not settings
  (``cfg.settings``, ``cfg.worker_class_str``, ``cfg.address``...).

The request and response of ``pre_request``/``post_request`` are
:class:`forkserve.http.connection.RequestView` and ``Exchange``.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .arbiter import Arbiter
    from .config import Config
    from .master.pool import WorkerRecord
    from .sockets import Address, Listener

__all__ = ["ServerView", "MasterWorkerView", "ListenerView", "WorkerTmp",
           "GunicornWorkerNames", "cfg_attribute", "gunicorn_address"]


def gunicorn_address(addr: Address) -> Any:
    """A bind address as gunicorn's ``cfg.address`` holds it: ``(host,
    port)`` for TCP, the path for a unix socket, the descriptor for fd://."""
    if addr.kind == "unix":
        return addr.path
    if addr.kind == "fd":
        return addr.fd
    return (addr.host, addr.port)


class ListenerView:
    """A listening socket with gunicorn's face: ``str()`` is
    ``http://127.0.0.1:8000`` (``unix:/path``), ``.sock`` the socket, and
    socket methods (``getsockname``, ``fileno``) reach the socket."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.sock = listener.sock
        self.cfg_addr = gunicorn_address(listener.address)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)

    def __str__(self) -> str:
        try:
            text = str(self.listener)
        except OSError:  # closed (a draining worker): the address asked for
            text = str(self.listener.address)
        return text if text.startswith("unix:") else f"http://{text}"

    def get_backlog(self) -> int:
        return -1  # gunicorn: unknown


class WorkerTmp:
    """gunicorn's per-worker heartbeat file, which forkserve does not have
    (the heartbeat is in shared memory): its methods do nothing harmful, so
    hooks that touch ``worker.tmp`` still run."""

    def notify(self) -> None:
        """The worker's own heartbeat already runs."""

    def last_update(self) -> float:
        import time
        return time.monotonic()

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        """Nothing to close."""


_TMP = WorkerTmp()


class GunicornWorkerNames:
    """gunicorn's worker attributes that forkserve's Worker does not use
    itself; a mixin of :class:`forkserve.workers.base.Worker`."""

    booted = False    # True once post_worker_init has run
    aborted = False   # True once the master's SIGABRT (timeout) arrived
    tmp = _TMP

    @property
    def sockets(self) -> list[ListenerView]:
        return [ListenerView(lst) for lst in self.listeners]  # type: ignore[attr-defined]

    @property
    def timeout(self) -> float:
        # gunicorn's worker.timeout is how often it notifies: half the setting.
        return self.cfg.timeout / 2.0  # type: ignore[attr-defined]

    @property
    def wsgi(self) -> Any:
        """The application callable (``worker.app`` is it too here; in
        gunicorn that is its Application object)."""
        return self.app  # type: ignore[attr-defined]


class MasterWorkerView:
    """The ``worker`` argument of master-side hooks (``pre_fork``,
    ``child_exit``, ``server.WORKERS``): what the master knows of one
    worker, with gunicorn's names.  Attributes a hook sets stay on it."""

    def __init__(self, rec: WorkerRecord, server: ServerView) -> None:
        self._rec = rec
        self._server = server

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_rec"], name)

    @property
    def pid(self) -> int | str:
        return self._rec.pid or "[booting]"  # before fork, as gunicorn says

    @property
    def ppid(self) -> int:
        return self._server.pid

    @property
    def alive(self) -> bool:
        return not self._rec.stopping

    def _beat(self) -> tuple[Any, ...] | None:
        try:
            return self._rec.heartbeat.read()
        except (ValueError, OSError):  # reaped: its heartbeat is closed
            return None

    @property
    def booted(self) -> bool:
        from .heartbeat import WorkerState
        beat = self._beat()
        return beat is not None and beat[0] is not WorkerState.BOOTING

    @property
    def aborted(self) -> bool:
        return self._rec.aborted_at is not None

    @property
    def nr(self) -> int:
        beat = self._beat()
        return 0 if beat is None else beat[2]

    @property
    def max_requests(self) -> int:
        return self.cfg.max_requests or sys.maxsize

    @property
    def cfg(self) -> Config:
        return self._server.cfg

    @property
    def log(self) -> Any:
        return self._server.log

    @property
    def app(self) -> Any:
        return self._server.app

    @property
    def timeout(self) -> float:
        return self.cfg.timeout / 2.0

    @property
    def sockets(self) -> list[ListenerView]:
        return self._server.LISTENERS

    tmp = _TMP

    def __str__(self) -> str:
        return f"<Worker {self.pid}>"


class AppView:
    """gunicorn's ``server.app`` (its Application object): ``cfg``, and
    ``callable``/``wsgi()`` for the app once the master has it (preload)."""

    def __init__(self, arbiter: Arbiter) -> None:
        self._arbiter = arbiter

    @property
    def cfg(self) -> Config:
        return self._arbiter.cfg

    @property
    def callable(self) -> Any:
        return self._arbiter.app

    def wsgi(self) -> Any:
        return self._arbiter.app

    @property
    def app_uri(self) -> str | None:
        return self._arbiter.cfg.wsgi_app


class ServerView:
    """The ``server`` argument of every hook that gets one: the arbiter,
    with gunicorn's names added (see the module docstring)."""

    master_name = "Master"

    def __init__(self, arbiter: Arbiter) -> None:
        self.__dict__["_arbiter"] = arbiter
        self.__dict__["app"] = AppView(arbiter)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_arbiter"], name)

    @property
    def cfg(self) -> Config:
        return self._arbiter.cfg

    @property
    def address(self) -> list[Any]:
        if self._arbiter.listeners:
            return [gunicorn_address(lst.address) for lst in self._arbiter.listeners]
        from .sockets import parse_address
        return [gunicorn_address(parse_address(b)) for b in self._arbiter.cfg.bind]

    @property
    def LISTENERS(self) -> list[ListenerView]:  # noqa: N802 - gunicorn's name
        return [ListenerView(lst) for lst in self._arbiter.listeners]

    @property
    def WORKERS(self) -> dict[int, MasterWorkerView]:  # noqa: N802 - gunicorn's name
        return {pid: self.worker(rec) for pid, rec in self._arbiter.workers.items()}

    def worker(self, rec: WorkerRecord) -> MasterWorkerView:
        """The one view of ``rec``, so what a hook sets on it stays."""
        view = getattr(rec, "_hook_view", None)
        if view is None:
            view = MasterWorkerView(rec, self)
            rec._hook_view = view  # type: ignore[attr-defined]
        return view

    @property
    def timeout(self) -> float:
        return self._arbiter.cfg.timeout

    @property
    def num_workers(self) -> int:
        return self._arbiter.num_workers

    @num_workers.setter
    def num_workers(self, value: int) -> None:
        # As in gunicorn: a hook may resize the pool; the loop follows.
        old = self._arbiter.num_workers
        self._arbiter.num_workers = value
        self._arbiter.cfg.nworkers_changed(self, value, old)

    @property
    def worker_class(self) -> Any:
        from .workers.registry import AUTO, worker_class
        setting = self._arbiter.cfg.worker_class
        if setting == AUTO:
            if self._arbiter.app is None:
                return setting
            from .workers.registry import worker_kind
            setting = worker_kind(setting, self._arbiter.app)
        return worker_class(setting)

    @property
    def reexec_pid(self) -> int:
        return self._arbiter.reexec.pid

    @property
    def master_pid(self) -> int:
        return self._arbiter.parent_master

    @property
    def pidfile(self) -> str | None:
        return self._arbiter.pidfile_path

    def __setattr__(self, name: str, value: Any) -> None:
        prop = getattr(type(self), name, None)
        if isinstance(prop, property) and prop.fset is not None:
            prop.fset(self, value)
        else:
            self.__dict__[name] = value

    def __str__(self) -> str:
        return f"<Arbiter {self._arbiter.pid}>"


class _SettingView:
    """One of gunicorn's ``cfg.settings`` values: ``.name``, ``.value``,
    ``.get()``."""

    __slots__ = ("name", "value")

    def __init__(self, name: str, value: Any) -> None:
        self.name = name
        self.value = value

    def get(self) -> Any:
        return self.value

    def __repr__(self) -> str:
        return f"<setting {self.name}={self.value!r}>"


def cfg_attribute(cfg: Config, name: str) -> Any:
    """gunicorn's ``cfg.NAME`` for a name that is not one of forkserve's
    settings or hooks: its derived properties, and the value of a gunicorn
    setting forkserve does not implement (as given, else gunicorn's
    default).  AttributeError for anything else."""
    from .config import ALIASES
    from .gunicorn_compat import FOREIGN

    if name in ALIASES:
        return cfg.values[ALIASES[name]]
    if name in FOREIGN:
        given = cfg.foreign.get(name)
        return given[0] if given else FOREIGN[name].quiet[0]
    derived = _DERIVED.get(name)
    if derived is None:
        raise AttributeError(name)
    return derived(cfg)


def _settings(cfg: Config) -> dict[str, _SettingView]:
    from .config import ALIASES
    from .gunicorn_compat import FOREIGN

    out = {name: _SettingView(name, value) for name, value in cfg.values.items()}
    for alias, target in ALIASES.items():
        out[alias] = _SettingView(alias, cfg.values[target])
    for name in FOREIGN:
        if not FOREIGN[name].hook:
            out[name] = _SettingView(name, cfg_attribute(cfg, name))
    return out


def _address(cfg: Config) -> list[Any]:
    from .sockets import parse_address
    return [gunicorn_address(parse_address(b)) for b in cfg.bind]


def _env(cfg: Config) -> dict[str, str]:
    return dict(item.split("=", 1) for item in cfg.raw_env)


_DERIVED: dict[str, Any] = {
    "settings": _settings,
    "worker_class_str": lambda cfg: cfg.values["worker_class"],
    "address": _address,
    "uid": lambda cfg: os.geteuid(),
    "gid": lambda cfg: os.getegid(),
    "is_ssl": lambda cfg: bool(cfg.values.get("certfile")),
    "env": _env,
    "sendfile": lambda cfg: True,
    "ssl_options": lambda cfg: {},
}
