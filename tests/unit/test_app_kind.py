"""WSGI/ASGI detection, and refusing a worker_class the app cannot run under
(issue 11 item 7): only when Python can tell for certain."""

from __future__ import annotations

import functools

import pytest

from forkserve.app import WorkerClassMismatch, check_worker_class, detect_kind


def wsgi_function(environ, start_response):
    start_response("200 OK", [])
    return [b""]


async def asgi_function(scope, receive, send):
    pass


class AsyncCallable:
    async def __call__(self, scope, receive, send):
        pass


class WSGIMiddleware:
    """Wraps a WSGI app, as Werkzeug's ProxyFix and friends do."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


def decorated_asgi(scope, receive, send):
    """An async app behind a plain (not async) decorator."""
    return asgi_function(scope, receive, send)


def anything(*args, **kwargs):
    return None


def _django_handler(kind: str):
    django = pytest.importorskip("django")
    from django.conf import settings
    if not settings.configured:
        settings.configure(DEBUG=False, ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"],
                           SECRET_KEY="x" * 50, MIDDLEWARE=[], INSTALLED_APPS=[])
        django.setup()
    if kind == "asgi":
        from django.core.handlers.asgi import ASGIHandler
        return ASGIHandler()
    from django.core.handlers.wsgi import WSGIHandler
    return WSGIHandler()


urlpatterns: list = []  # Django's ROOT_URLCONF above


def _starlette():
    starlette = pytest.importorskip("starlette.applications")
    return starlette.Starlette()


def _fastapi():
    return pytest.importorskip("fastapi").FastAPI()


def _flask():
    return pytest.importorskip("flask").Flask("t")


ASGI_APPS = {
    "async def": lambda: asgi_function,
    "async __call__": AsyncCallable,
    "partial of async def": lambda: functools.partial(asgi_function),
    "Django ASGIHandler": lambda: _django_handler("asgi"),
    "Starlette": _starlette,
    "FastAPI": _fastapi,
}
WSGI_APPS = {
    "plain function": lambda: wsgi_function,
    "middleware object": lambda: WSGIMiddleware(wsgi_function),
    "Django WSGIHandler": lambda: _django_handler("wsgi"),
    "Flask": _flask,
}


@pytest.mark.parametrize("name", ASGI_APPS)
def test_asgi_apps_are_asgi_and_refused_by_sync(name):
    app = ASGI_APPS[name]()
    assert detect_kind(app) == "asgi"
    check_worker_class("asgi", app, "m:app")
    check_worker_class("auto", app, "m:app")
    with pytest.raises(WorkerClassMismatch) as info:
        check_worker_class("sync", app, "m:app")
    message = str(info.value)
    assert message.startswith("worker_class: sync") and "m:app is an ASGI app" in message
    assert "\n" not in message


@pytest.mark.parametrize("name", WSGI_APPS)
def test_wsgi_apps_are_wsgi_and_refused_by_asgi(name):
    app = WSGI_APPS[name]()
    assert detect_kind(app) == "wsgi"
    check_worker_class("sync", app, "m:app")
    check_worker_class("auto", app, "m:app")
    with pytest.raises(WorkerClassMismatch) as info:
        check_worker_class("asgi", app, "m:app")
    message = str(info.value)
    assert message.startswith("worker_class: asgi") and "m:app is a WSGI app" in message
    assert "(environ, start_response)" in message and "\n" not in message


def test_a_sync_callable_taking_scope_receive_send_is_asgi():
    assert detect_kind(decorated_asgi) == "asgi"
    check_worker_class("asgi", decorated_asgi, "m:app")
    with pytest.raises(WorkerClassMismatch):
        check_worker_class("sync", decorated_asgi, "m:app")


@pytest.mark.parametrize("app", [anything, print], ids=["*args", "builtin"])
def test_ambiguous_apps_are_never_refused(app):
    # Python cannot tell what these are: let the worker class decide.
    check_worker_class("sync", app, "m:app")
    check_worker_class("asgi", app, "m:app")


def test_a_callable_of_neither_arity_is_refused_by_both():
    def one(scope):
        return None
    with pytest.raises(WorkerClassMismatch, match=r"is not a WSGI app \(it takes \(scope\)"):
        check_worker_class("sync", one, "m:app")
    with pytest.raises(WorkerClassMismatch, match=r"is not an ASGI 3 app \(it takes \(scope\)"):
        check_worker_class("asgi", one, "m:app")
