"""Differential tests: a real Django project (tests/apps/frameworks/djangoproj)
on WSGI (forkserve's sync worker vs gunicorn's gthread worker) and on ASGI
(forkserve's ASGI worker vs uvicorn), direct and through nginx, driven by
the same raw client; every difference must be declared in
differential.DECLARED."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys

import pytest

from conftest import ROOT
from differential import Conn, cookie_header, cookies_from, differ, observe, random_cookies
from servers import FRAMEWORKS, differential

pytestmark = pytest.mark.e2e
VIA = pytest.mark.parametrize("via", ["direct", "nginx"])
PROTOCOL = pytest.mark.parametrize("protocol", ["wsgi", "asgi"])
ADMIN_USER, ADMIN_PASSWORD = "admin", "forkserve-admin-pw"  # djangoproj/initdb.py
FORM = [("Content-Type", "application/x-www-form-urlencoded")]
HIDE = [random_cookies("csrftoken", "sessionid")]
_TOKEN = re.compile(rb'(name="csrfmiddlewaretoken" value=")[^"]+')


def _page(body: bytes) -> bytes:
    """A page with its per-request CSRF tokens hidden."""
    return _TOKEN.sub(rb"\1<token>", body)


def _token(body: bytes) -> str:
    match = _TOKEN.search(body)
    assert match, f"no CSRF token in {body[:300]!r}"
    return body[match.end(1):match.end()].decode()


@pytest.fixture(scope="module")
def django_state(tmp_path_factory):
    """A migrated database with an admin user, shared by all servers."""
    state = tmp_path_factory.mktemp("django-state")
    (state / "static").mkdir()  # STATIC_ROOT; whitenoise warns if it is missing
    env = {"FS_FRAMEWORKS_STATE": str(state), "PYTHONPATH": f"{ROOT}:{FRAMEWORKS}",
           "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-m", "djangoproj.initdb"], cwd=FRAMEWORKS, env=env,
                   check=True, timeout=120)
    return state


def _pair(tmp_path_factory, django_state, protocol):
    tmp = tmp_path_factory.mktemp(f"django-{protocol}")
    args = ("--threads", "2") if protocol == "wsgi" else ()
    return differential(tmp, f"djangoproj.{protocol}:application", protocol,
                        env={"FS_FRAMEWORKS_STATE": str(django_state)}, ready_path="/ping/",
                        forkserve_args=args)


@pytest.fixture(scope="module")
def wsgi_pair(tmp_path_factory, django_state):
    with _pair(tmp_path_factory, django_state, "wsgi") as pair:
        yield pair


@pytest.fixture(scope="module")
def asgi_pair(tmp_path_factory, django_state):
    with _pair(tmp_path_factory, django_state, "asgi") as pair:
        yield pair


@pytest.fixture
def pair(request, protocol):
    return request.getfixturevalue(f"{protocol}_pair")


@PROTOCOL
@VIA
def test_admin_login_and_pages(pair, via):
    def scenario(host, port):
        seen, jar = [], {}
        with Conn(host, port) as c:
            seen.append(observe(c.request("GET", "/admin/"), _page, HIDE))
            login = c.request("GET", "/admin/login/?next=/admin/")
            seen.append(observe(login, _page, HIDE))
            cookies_from(login, jar)
            form = (f"csrfmiddlewaretoken={_token(login.body)}&username={ADMIN_USER}"
                    f"&password={ADMIN_PASSWORD}&next=/admin/").encode()
            done = c.request("POST", "/admin/login/?next=/admin/", FORM + [cookie_header(jar)],
                             form)
            seen.append(observe(done, _page, HIDE))
            cookies_from(done, jar)
            index = c.request("GET", "/admin/", [cookie_header(jar)])
            seen.append(observe(index, _page, HIDE))
            seen.append(observe(c.request("GET", "/admin/auth/user/", [cookie_header(jar)]),
                                _page, HIDE))
            out = c.request("POST", "/admin/logout/", FORM + [cookie_header(jar)],
                            f"csrfmiddlewaretoken={_token(index.body)}".encode())
            seen.append(observe(out, _page, HIDE))
        return seen
    ours = differ(pair, via, scenario)
    assert ours[2]["status"] == 302 and b"Site administration" in ours[3]["body"]


@PROTOCOL
@VIA
def test_csrf_protected_form(pair, via):
    def scenario(host, port):
        seen, jar = [], {}
        with Conn(host, port) as c:
            page = c.request("GET", "/form/")
            seen.append(observe(page, _page, HIDE))
            cookies_from(page, jar)
            token = _token(page.body)
            seen.append(observe(c.request("POST", "/form/", FORM, b"name=x"), True, HIDE))
            seen.append(observe(c.request("POST", "/form/", FORM + [cookie_header(jar)],
                                          b"name=x&csrfmiddlewaretoken=" + b"A" * 64), True, HIDE))
            seen.append(observe(c.request("POST", "/form/", FORM + [cookie_header(jar)],
                                          f"name=Zo%C3%A9&csrfmiddlewaretoken={token}".encode()),
                                json.loads, HIDE))
            seen.append(observe(c.request("POST", "/form/", FORM + [
                cookie_header(jar), ("X-CSRFToken", token)], b"name=header"), json.loads, HIDE))
        return seen
    ours = differ(pair, via, scenario)
    assert [o["status"] for o in ours] == [200, 403, 403, 200, 200]
    assert ours[3]["body"]["name"] == "Zoé"


def _multipart(boundary: str, parts: list[tuple[str, str | None, bytes]]) -> bytes:
    out = bytearray()
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + data + b"\r\n"
    return bytes(out + f"--{boundary}--\r\n".encode())


@PROTOCOL
@VIA
def test_multipart_upload(pair, via):
    boundary = "----forkserveDjangoBoundary1234"
    body = _multipart(boundary, [
        ("title", None, "quarterly report".encode()),
        ("report", "rapport-été.bin", random.Random(3).randbytes(1_200_000)),
        ("notes", "notes.txt", b"ten bytes\n"),
        ("empty", "empty.bin", b""),
    ])
    head = [("Content-Type", f"multipart/form-data; boundary={boundary}")]

    def scenario(host, port):
        with Conn(host, port) as c:
            return [observe(c.request("POST", "/upload/", head, body), json.loads),
                    observe(c.request("GET", "/ping/"))]
    ours = differ(pair, via, scenario)
    files = ours[0]["body"]["files"]
    assert files["report"]["size"] == 1_200_000 and files["notes"]["size"] == 10


@PROTOCOL
@VIA
def test_streaming_response(pair, via):
    def scenario(host, port):
        with Conn(host, port) as c:
            return [observe(c.request("GET", "/stream/?n=3000")),
                    observe(c.request("GET", "/astream/?n=3000")),
                    observe(c.request("GET", "/stream/?n=0")),
                    observe(c.request("HEAD", "/stream/?n=10")),
                    observe(c.request("GET", "/ping/"))]
    ours = differ(pair, via, scenario)
    assert ours[0]["body"].count(b"\n") == 3000


@PROTOCOL
@VIA
def test_static_files_from_whitenoise(pair, via):
    path = "/static/admin/css/base.css"

    def scenario(host, port):
        seen = []
        with Conn(host, port) as c:
            full = c.request("GET", path)
            seen.append(observe(full))
            seen.append(observe(c.request("HEAD", path)))
            seen.append(observe(c.request("GET", path, [("Range", "bytes=10-99")])))
            seen.append(observe(c.request("GET", path, [("If-None-Match", full.header("etag"))])))
            seen.append(observe(c.request("GET", "/static/admin/css/missing.css")))
        return seen
    ours = differ(pair, via, scenario)
    assert ours[0]["status"] == 200 and ours[2]["status"] == 206 and ours[3]["status"] == 304
