"""Loading the application and telling WSGI from ASGI."""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import sys
from typing import Any

__all__ = ["AppLoadError", "load_app", "detect_kind"]


class AppLoadError(Exception):
    """The app could not be imported or found; the message is one line."""


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


def load_app(spec: str, chdir: str | None = None, pythonpath: list[str] | None = None) -> Any:
    """Import ``module:callable`` (default ``application`` then ``app``)
    or call ``module:factory(...)``, and return the app object."""
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
    return obj


def detect_kind(app: Any) -> str:
    """``"asgi"`` for an ASGI 3 app, else ``"wsgi"``.

    ASGI: a coroutine function, or an object whose ``__call__`` is one
    (Starlette, FastAPI, Django's ASGIHandler).  Everything else callable is
    taken as WSGI, which is what a WSGI server would do with it anyway.
    """
    if inspect.iscoroutinefunction(app):
        return "asgi"
    call = getattr(type(app), "__call__", None)
    if call is not None and inspect.iscoroutinefunction(call):
        return "asgi"
    # functools.partial and similar wrappers
    func = getattr(app, "func", None)
    if func is not None and inspect.iscoroutinefunction(func):
        return "asgi"
    return "wsgi"
