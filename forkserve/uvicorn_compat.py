"""A project's own subclass of uvicorn's ``UvicornWorker`` as ``worker_class``.

Projects tune uvicorn under gunicorn with a subclass that sets
``CONFIG_KWARGS`` (uvicorn's ``Config`` arguments), and name it with ``-k
myproj.workers.MyUvicornWorker``.  forkserve imports the class (as gunicorn
does, in the master), serves the app with its ASGI worker, and applies the
keys that are forkserve settings; keys it cannot honour get one warning
line naming them.  As in uvicorn's worker, ``CONFIG_KWARGS`` wins over the
config file and the command line.

uvicorn's worker module imports gunicorn, which a project that swapped
gunicorn for forkserve may have removed: the class is then read against a
stand-in for that module, since only its ``CONFIG_KWARGS`` are used.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
import types
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .config import Config

__all__ = ["is_class_path", "apply_worker_subclass", "SUPPORTED"]

#: What ``worker_class`` takes, for refusals.
SUPPORTED = ("expected auto, sync, asgi or gevent (or gunicorn's gthread, uvicorn's "
             "UvicornWorker or UvicornH11Worker, or a subclass of those)")

# uvicorn's worker classes and their CONFIG_KWARGS, for the stand-in module.
_UVICORN_DEFAULTS = {
    "UvicornWorker": {"loop": "auto", "http": "auto"},
    "UvicornH11Worker": {"loop": "asyncio", "http": "h11"},
}
_UVICORN_MODULES = ("uvicorn.workers", "uvicorn_worker")

_CLASS_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


def is_class_path(value: str) -> bool:
    """Whether ``value`` reads as a dotted path to a class (module.Class)."""
    return _CLASS_PATH.fullmatch(value) is not None


def _none_is(zero: Any) -> Callable[[Any], Any]:
    return lambda v: zero if v is None else v


def _trust(v: Any) -> Any:
    # proxy_headers=False: uvicorn reads no proxy header; forkserve trusts
    # no peer for them.  True: the forwarded_allow_ips in force decide.
    return None if v else []


def _is(*values: Any) -> Callable[[Any], bool]:
    return lambda v: v in values


# CONFIG_KWARGS key -> (forkserve setting, value converter); setting "" with
# a test: a value that asks for what forkserve does anyway (nothing to set).
_MAPPED: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "lifespan": ("lifespan", lambda v: v),
    "forwarded_allow_ips": ("forwarded_allow_ips", lambda v: v),
    "proxy_headers": ("forwarded_allow_ips", _trust),
    "root_path": ("root_path", lambda v: v),
    "timeout_keep_alive": ("keepalive", lambda v: v),
    "limit_concurrency": ("limit_concurrency", _none_is(0)),
    "limit_max_requests": ("max_requests", _none_is(0)),
    "backlog": ("backlog", lambda v: v),
    "timeout_graceful_shutdown": ("graceful_timeout", _none_is(0)),
    "ws_max_size": ("ws_max_size", lambda v: v),
    "ws_ping_interval": ("ws_ping_interval", _none_is(0)),
    "ws_ping_timeout": ("ws_ping_timeout", _none_is(0)),
}
_SAME: dict[str, Callable[[Any], bool]] = {
    "loop": _is("auto", "uvloop"),                   # the ASGI worker runs on uvloop
    "http": _is("auto", "httptools", "h11"),         # one request reader of its own
    "ws": _is("auto", "websockets", "websockets-sansio", "wsproto"),
    "interface": _is("auto", "asgi3"),
    "access_log": _is(True),                         # forkserve's accesslog decides
    "log_config": _is(None),
    "server_header": _is(True, False),
    "date_header": _is(True),
}


def apply_worker_subclass(cfg: Config, cwd: str | None = None) -> None:
    """If ``worker_class`` is a dotted path to a class, import it: a
    subclass of uvicorn's worker becomes the ``asgi`` kind with its
    ``CONFIG_KWARGS`` applied; anything else is a ConfigError."""
    from .config import ConfigError

    path = cfg.values["worker_class"]
    source = cfg.sources["worker_class"]
    cls = _import_class(path, source, cfg, cwd)
    if not _is_uvicorn_worker(cls):
        raise ConfigError("worker_class", f"{path!r} is not a worker forkserve runs: {SUPPORTED}",
                          source)
    kwargs = getattr(cls, "CONFIG_KWARGS", None) or {}
    if not isinstance(kwargs, dict):
        raise ConfigError("worker_class", f"{path}.CONFIG_KWARGS is not a dict", source)
    cfg.values["worker_class"] = "asgi"
    cfg.sources["worker_class"] = f"{source}, as {path}"
    where = f"{path}.CONFIG_KWARGS"
    unhonoured = []
    # proxy_headers=False last: it turns off what forwarded_allow_ips allows.
    for key, value in sorted(kwargs.items(), key=lambda kv: kv[0] == "proxy_headers"):
        if key in _MAPPED:
            setting, convert = _MAPPED[key]
            converted = convert(value)
            if converted is not None:
                cfg.set(setting, converted, where)
        elif not (key in _SAME and _SAME[key](value)):
            unhonoured.append(f"{key}={value!r}")
    if unhonoured:
        cfg.note(f"CONFIG_KWARGS {path}", logging.WARNING,
                 f"{where}: forkserve cannot honour {', '.join(unhonoured)}; serving with its "
                 f"ASGI worker and the other keys ({source})")


def _is_uvicorn_worker(cls: Any) -> bool:
    return isinstance(cls, type) and any(
        base.__name__ in _UVICORN_DEFAULTS
        and base.__module__.split(".")[0] in ("uvicorn", "uvicorn_worker")
        for base in cls.__mro__)


def _import_class(path: str, source: str, cfg: Config, cwd: str | None) -> Any:
    from .config import ConfigError

    module_name, _, name = path.rpartition(".")
    # Found as gunicorn finds it: from the directory it runs in, chdir and
    # pythonpath.
    extra = [p for p in (*cfg.pythonpath, cfg.chdir, cwd or os.getcwd()) if p]
    added = [p for p in extra if p not in sys.path]
    sys.path[:0] = added
    try:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if missing.split(".")[0] != "gunicorn":
                raise
            # uvicorn's worker module needs gunicorn: read the class against
            # a stand-in of that module instead.
            module = _import_with_stand_in(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing.split(".")[0] in ("uvicorn", "uvicorn_worker"):
            why = (f"it needs {missing.split('.')[0]}, which is not installed: pip install "
                   f"uvicorn (forkserve reads the class's CONFIG_KWARGS), or use -k asgi")
        else:
            why = f"no module named {missing!r}; {SUPPORTED}"
        raise ConfigError("worker_class", f"cannot import {path!r}: {why}", source) from None
    except Exception as exc:
        raise ConfigError("worker_class", f"importing {path!r} raised {type(exc).__name__}: "
                          f"{exc}", source) from None
    finally:
        for p in added:
            if p in sys.path:
                sys.path.remove(p)
    cls = getattr(module, name, None)
    if cls is None:
        raise ConfigError("worker_class", f"{module_name!r} has no {name!r}; {SUPPORTED}", source)
    return cls


def _import_with_stand_in(module_name: str) -> types.ModuleType:
    """Import ``module_name`` with uvicorn's worker modules replaced by
    stand-ins holding classes of the same names and CONFIG_KWARGS."""
    saved = {m: sys.modules.get(m) for m in (*_UVICORN_MODULES, module_name)}
    for stand_in in _UVICORN_MODULES:
        module = types.ModuleType(stand_in)
        for cls_name, defaults in _UVICORN_DEFAULTS.items():
            setattr(module, cls_name, type(cls_name, (), {"CONFIG_KWARGS": dict(defaults),
                                                         "__module__": stand_in}))
        sys.modules[stand_in] = module
    sys.modules.pop(module_name, None)
    try:
        return importlib.import_module(module_name)
    finally:
        # The stand-ins, and the module built on them, go: nothing else may
        # take them for the real ones.
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
