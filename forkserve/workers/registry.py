"""Worker kinds by name: the one table the master and the config consult.

Each kind names its class by dotted path and is imported only when it is
used, so that nothing here (nor ``config.py``, which takes its accepted
names from this table) pulls in a worker module, and no worker module needs
to know about any other.  A class says itself which further modules the
master should import before forking (``Worker.shared_modules``); the master
knows no worker internals.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from ..app import detect_kind

if TYPE_CHECKING:
    from .base import Worker

__all__ = ["KINDS", "ALIASES", "EXTRAS", "worker_kind", "worker_class", "missing_extra",
           "modules_to_share", "packages_to_keep"]

#: Worker kind -> "module:Class".
KINDS: dict[str, str] = {
    "sync": "forkserve.workers.sync:SyncWorker",
    "asgi": "forkserve.workers.asgi:ASGIWorker",
    "gevent": "forkserve.workers.gevent_worker:GeventWorker",
}

#: gunicorn's and uvicorn's names for what these kinds do, also accepted
#: for ``worker_class``.
ALIASES: dict[str, str] = {
    "gthread": "sync",
    "gunicorn.workers.sync.SyncWorker": "sync",
    "gunicorn.workers.gthread.ThreadWorker": "sync",
    "gunicorn.workers.gasgi.ASGIWorker": "asgi",
    "egg:gunicorn#sync": "sync",
    "egg:gunicorn#gthread": "sync",
    "uvicorn.workers.UvicornWorker": "asgi",
    "uvicorn.workers.UvicornH11Worker": "asgi",
    "uvicorn_worker.UvicornWorker": "asgi",
    "uvicorn_worker.UvicornH11Worker": "asgi",
    "gunicorn.workers.ggevent.GeventWorker": "gevent",
    "egg:gunicorn#gevent": "gevent",
    # gunicorn's gevent.pywsgi-based variants: the same model for the app.
    "gevent_wsgi": "gevent",
    "gevent_pywsgi": "gevent",
    "gunicorn.workers.ggevent.GeventPyWSGIWorker": "gevent",
}

#: Kinds that need an optional package: kind -> (module, how to install it).
EXTRAS: dict[str, tuple[str, str]] = {
    "gevent": ("gevent", "pip install 'forkserve[gevent]'"),
}

#: The setting that picks the kind from the app at fork time.
AUTO = "auto"


def worker_kind(setting: str, app: Any) -> str:
    """The worker kind for the ``worker_class`` setting: ``"auto"`` asks the
    app (ASGI, else sync); an alias gives the kind it stands for."""
    if setting == AUTO:
        return "asgi" if detect_kind(app) == "asgi" else "sync"
    return ALIASES.get(setting, setting)


def missing_extra(kind: str) -> str | None:
    """Why ``kind`` (or an alias) cannot run here, if its optional package is
    not installed (found without importing it); else None."""
    extra = EXTRAS.get(ALIASES.get(kind, kind))
    if extra is None or importlib.util.find_spec(extra[0]) is not None:
        return None
    return f"the {kind} worker needs the {extra[0]} package: {extra[1]}"


def worker_class(kind: str) -> type[Worker]:
    """The class of a worker kind (or alias), imported on first use."""
    path = KINDS.get(ALIASES.get(kind, kind))
    if path is None:
        raise ValueError(f"unknown worker kind {kind!r}; one of {', '.join(KINDS)}")
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def packages_to_keep(kind: str) -> tuple[str, ...]:
    """Top-level packages a preloaded app's reload keeps for ``kind``
    (``Worker.reload_keeps``)."""
    return worker_class(kind).reload_keeps


def modules_to_share(kind: str) -> tuple[str, ...]:
    """What the master imports before forking workers of ``kind``: the
    class's own module (importing the class does that) and the modules the
    class names in ``shared_modules``."""
    cls = worker_class(kind)
    return (cls.__module__, *cls.shared_modules)
