"""Loading the application and telling WSGI from ASGI."""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import sys
from typing import Any

__all__ = ["AppLoadError", "WorkerClassMismatch", "load_app", "detect_kind",
           "check_worker_class"]


class AppLoadError(Exception):
    """The app could not be imported or found; the message is one line."""


class WorkerClassMismatch(AppLoadError):
    """The app loads, but cannot run under the worker_class given."""


def _parse_factory_call(expr: str) -> tuple[str, list[Any], dict[str, Any]] | None:
    """Parse ``name(args)`` with literal arguments, as gunicorn allows."""
    try:
        node = ast.parse(expr, mode="eval").body
    except SyntaxError:
        raise AppLoadError(f"cannot parse {expr!r} as a callable name or a call") from None
    if isinstance(node, ast.Name):
        return None
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise AppLoadError(f"{expr!r} must be a name or a call like create_app()")
    try:
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
    except ValueError:
        raise AppLoadError(f"arguments in {expr!r} must be literals") from None
    return node.func.id, args, kwargs


def load_app(spec: str, chdir: str | None = None, pythonpath: list[str] | None = None,
             worker_class: str = "auto") -> Any:
    """Import ``module:callable`` (default ``application`` then ``app``)
    or call ``module:factory(...)``, and return the app object.

    With a ``worker_class`` of ``sync`` or ``asgi``, an app that certainly
    cannot run under it raises WorkerClassMismatch (see :func:`check_worker_class`).
    """
    if chdir:
        os.chdir(chdir)
    for path in reversed(pythonpath or []):
        if path not in sys.path:
            sys.path.insert(0, path)
    # Like gunicorn: the current directory is importable.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())

    module_name, _, attr = spec.partition(":")
    if not module_name or any(not part.isidentifier() for part in module_name.split(".")):
        raise AppLoadError(f"{spec!r} is not module:callable")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if getattr(exc, "name", None) and module_name.startswith(str(exc.name)):
            raise AppLoadError(f"no module named {exc.name!r} (cwd {os.getcwd()}, "
                               f"use --chdir or --pythonpath)") from None
        raise

    if not attr:
        for candidate in ("application", "app"):
            if hasattr(module, candidate):
                attr = candidate
                break
        else:
            raise AppLoadError(f"module {module_name!r} has no 'application' or 'app'; "
                               f"name it with {module_name}:NAME")
    call = _parse_factory_call(attr.strip())
    name = call[0] if call else attr.strip()
    try:
        obj = getattr(module, name)
    except AttributeError:
        raise AppLoadError(f"module {module_name!r} has no attribute {name!r}") from None
    if call:
        obj = obj(*call[1], **call[2])
    if obj is None:
        raise AppLoadError(f"{spec} is None (a factory that returned nothing?)")
    if not callable(obj):
        raise AppLoadError(f"{spec} is not callable")
    check_worker_class(worker_class, obj, spec)
    return obj


def _async_call(app: Any) -> str | None:
    """How ``app`` shows it is an ASGI app, or None: an ``async def``
    function, an object whose ``__call__`` is one (Starlette, FastAPI,
    Django's ASGIHandler), or a ``functools.partial`` of one."""
    if inspect.iscoroutinefunction(app):
        return "an async function"
    call = getattr(type(app), "__call__", None)
    if call is not None and inspect.iscoroutinefunction(call):
        return f"{type(app).__name__}.__call__ is async"
    func = getattr(app, "func", None)
    if func is not None and inspect.iscoroutinefunction(func):
        return "a partial of an async function"
    return None


def _takes(app: Any) -> tuple[inspect.Signature, bool, bool] | None:
    """``app``'s signature, whether it can be called with 2 positional
    arguments (WSGI: environ, start_response) and with 3 (ASGI 3: scope,
    receive, send); None when Python cannot tell (a C callable)."""
    try:
        sig = inspect.signature(app)
    except (TypeError, ValueError):
        return None

    def fits(n: int) -> bool:
        try:
            sig.bind(*range(n))
        except TypeError:
            return False
        return True
    return sig, fits(2), fits(3)


def detect_kind(app: Any) -> str:
    """``"asgi"`` for an ASGI 3 app, else ``"wsgi"``.

    ASGI: a coroutine function, an object whose ``__call__`` is one, or a
    callable that takes the 3 arguments of ASGI but not the 2 of WSGI (an
    async app behind a plain decorator).  Everything else callable is taken
    as WSGI, which is what a WSGI server would do with it anyway.
    """
    if _async_call(app):
        return "asgi"
    takes = _takes(app)
    if takes is not None and takes[2] and not takes[1]:
        return "asgi"
    return "wsgi"


def check_worker_class(worker_class: str, app: Any, spec: str) -> None:
    """Raise WorkerClassMismatch when ``app`` certainly cannot run under
    ``worker_class``: ``sync`` (or ``gevent``) given an async app or one that cannot take
    (environ, start_response); ``asgi`` given one that cannot take (scope,
    receive, send).  Anything Python cannot tell (a C callable, ``*args``)
    is let through, as it would be by a WSGI or ASGI server."""
    if worker_class not in ("sync", "asgi", "gevent"):
        return
    takes = _takes(app)
    params = f"({', '.join(takes[0].parameters)})" if takes else ""
    if worker_class != "asgi":  # sync or gevent: WSGI
        why = _async_call(app)
        what = "an ASGI app"
        if why is None and takes is not None and not takes[1]:
            why = f"it takes {params}, not (environ, start_response)"
            what = "an ASGI app" if takes[2] else "not a WSGI app"
        if why:
            raise WorkerClassMismatch(
                f"worker_class: {worker_class} (WSGI) given, but {spec} is {what} ({why}); "
                f"use -k asgi, or -k auto to detect it")
    elif takes is not None and not takes[2]:
        what = "a WSGI app" if takes[1] and not _async_call(app) else "not an ASGI 3 app"
        raise WorkerClassMismatch(
            f"worker_class: asgi given, but {spec} is {what} (it takes {params}, not "
            f"(scope, receive, send)); use -k sync, or -k auto to detect it")
