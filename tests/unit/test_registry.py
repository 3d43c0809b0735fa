"""The worker registry: one name -> class table, and no import of a worker
kind by the code every worker (or the master) shares."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from forkserve.config import Config, ConfigError
from forkserve.workers import registry
from forkserve.workers.base import Worker

PKG = Path(__file__).parent.parent.parent / "forkserve"


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (function-level too),
    as an absolute dotted name."""
    package = ".".join(path.relative_to(PKG.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


WORKER_KIND_MODULES = {"forkserve.workers.sync", "forkserve.workers.asgi",
                       "forkserve.workers.websocket", "forkserve.workers.gevent_worker"}


def test_base_imports_no_worker_kind():
    assert not _imported_modules(PKG / "workers" / "base.py") & WORKER_KIND_MODULES


def test_the_master_knows_no_worker_internals():
    files = [PKG / "arbiter.py", PKG / "config.py", *sorted((PKG / "master").glob("*.py"))]
    for path in files:
        seen = {m for m in _imported_modules(path) if m.startswith("forkserve.workers.")}
        allowed = {m for m in seen if m.startswith(("forkserve.workers.base",
                                                    "forkserve.workers.registry"))}
        assert seen == allowed, (path.name, seen - allowed)


@pytest.mark.parametrize("name", sorted(registry.KINDS) + sorted(registry.ALIASES))
def test_every_accepted_name_resolves_to_a_worker_class(name):
    cfg = Config()
    cfg.set("worker_class", name, "test")
    kind = cfg.worker_class
    assert kind in registry.KINDS
    cls = registry.worker_class(name)
    assert issubclass(cls, Worker) and cls.kind == kind
    assert registry.worker_kind(name, None) == kind
    assert registry.modules_to_share(kind)[0] == cls.__module__


def test_auto_asks_the_app():
    async def asgi_app(scope, receive, send):
        pass

    def wsgi_app(environ, start_response):
        return []

    assert registry.worker_kind("auto", asgi_app) == "asgi"
    assert registry.worker_kind("auto", wsgi_app) == "sync"


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown worker kind"):
        registry.worker_class("eventlet")
    with pytest.raises(ConfigError, match="gunicorn 27 dropped eventlet too"):
        Config().set("worker_class", "eventlet", "test")
    with pytest.raises(ConfigError, match="did you mean 'gthread'"):
        Config().set("worker_class", "thread", "test")
    with pytest.raises(ConfigError, match="expected auto, sync, asgi or gevent"):
        Config().set("worker_class", "pool", "test")


@pytest.mark.parametrize("name", ["gevent", "gunicorn.workers.ggevent.GeventWorker"])
def test_a_kind_whose_package_is_missing_says_how_to_install_it(monkeypatch, name):
    # None in sys.modules: importlib's "not installed", without importing.
    monkeypatch.setitem(sys.modules, "gevent", None)
    assert registry.missing_extra("sync") is None
    with pytest.raises(ConfigError) as info:
        Config().set("worker_class", name, "test")
    assert str(info.value).startswith("worker_class: the gevent worker needs the gevent "
                                      "package: pip install 'forkserve[gevent]'")


@pytest.mark.parametrize("name", sorted(registry.ALIASES))
def test_every_alias_is_a_worker_class_setting(name):
    cfg = Config()
    cfg.set("worker_class", name, "test")
    assert cfg.worker_class == registry.ALIASES[name]
