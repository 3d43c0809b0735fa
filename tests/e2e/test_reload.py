"""``reload``: an edit of the app's files rolls the workers as a HUP does.

Real forkserve processes serve an app written into the test's directory;
the test edits it and watches the answers, the worker PIDs and the log.
Both engines are exercised: watchfiles (inotify) and the polling fallback,
chosen by ``reload_engine = poll`` or by hiding watchfiles from the server.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from conftest import APPS, ROOT, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

WSGI = """\
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [{answer!r}]
"""

ASGI = """\
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({{"type": "lifespan.startup.complete"}})
            else:
                await send({{"type": "lifespan.shutdown.complete"}})
                return
    await send({{"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]}})
    await send({{"type": "http.response.body", "body": {answer!r}}})
"""

KINDS = {"sync": (WSGI, "reload_app:application"), "asgi": (ASGI, "reload_app:app")}
# Within this many seconds of an edit the new code answers (the machine is loaded).
TAKES_EFFECT = 15.0


def _write(path: Path, text: str) -> None:
    # Write a new file and rename it over the old one, as many editors do.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _serve(forkserve, tmp_path: Path, kind: str, *args: str, answer: bytes = b"v1",
           env: dict[str, str] | None = None):
    template, app = KINDS[kind]
    _write(tmp_path / "reload_app.py", template.format(answer=answer))
    server = forkserve(app, "--reload", "-k", kind, *args, cwd=tmp_path, env=env)
    assert server.get()[2] == answer
    return server


def _answers(server, want: bytes, timeout: float = TAKES_EFFECT) -> None:
    wait_for(lambda: server.get()[2] == want, timeout, interval=0.2,
             what=f"the answer {want!r}")


class Hammer:
    """Requests in a loop on fresh connections, counting the failures."""

    def __init__(self, server) -> None:
        self.server = server
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status = self.server.get(timeout=10)[0]
                if status == 200:
                    self.ok += 1
                else:
                    self.failed.append(f"status {status}")
            except Exception as exc:  # noqa: BLE001 - every failure counts
                self.failed.append(repr(exc))

    def __enter__(self) -> "Hammer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(15)


@pytest.mark.parametrize("engine", ["auto", "poll"])
@pytest.mark.parametrize("kind", ["sync", "asgi"])
def test_an_edit_rolls_the_workers_without_a_failed_request(forkserve, tmp_path, kind, engine):
    server = _serve(forkserve, tmp_path, kind, "-w", "2", "--reload-engine", engine)
    server.wait_log("reload: watching")
    assert ("(poll)" if engine == "poll" else "(watchfiles)") in server.log
    before = set(server.wait_workers(2))
    with Hammer(server) as hammer:
        time.sleep(0.3)
        _write(tmp_path / "reload_app.py", KINDS[kind][0].format(answer=b"v2"))
        _answers(server, b"v2")
        time.sleep(0.3)
    assert hammer.failed == [], hammer.failed[:5]
    assert hammer.ok > 0
    server.wait_log("Reload complete")
    after = set(server.wait_workers(2, exclude=before))
    assert not before & after
    assert "reload_app.py changed" in server.log


def test_a_burst_of_writes_makes_one_reload(forkserve, tmp_path):
    server = _serve(forkserve, tmp_path, "sync", "--reload-engine", "poll")
    server.wait_log("reload: watching")
    for i in range(5):  # an editor saving in several steps
        _write(tmp_path / "reload_app.py", WSGI.format(answer=b"v%d" % (i + 2)))
        time.sleep(0.05)
    _answers(server, b"v6")
    time.sleep(2.5)  # two more scans: nothing else to report
    assert server.log.count("Reloading:") == 1, server.log


@pytest.mark.parametrize("engine", ["auto", "poll"])
def test_reload_extra_files_trigger_a_reload(forkserve, tmp_path, engine):
    (tmp_path / "templates").mkdir()
    template = tmp_path / "templates" / "page.html"
    template.write_text("<p>one</p>")
    settings = tmp_path / "settings.toml"
    settings.write_text("a = 1\n")
    server = _serve(forkserve, tmp_path, "sync", "--reload-engine", engine,
                    "--reload-extra-file", str(settings),
                    "--reload-extra-file", str(tmp_path / "templates" / "*.html"))
    server.wait_log("reload: watching")
    first = set(server.wait_workers(1))
    settings.write_text("a = 2\n")
    server.wait_log("settings.toml changed", timeout=TAKES_EFFECT)
    second = set(server.wait_workers(1, exclude=first, timeout=TAKES_EFFECT))
    _write(template, "<p>two</p>")
    server.wait_log("page.html changed", timeout=TAKES_EFFECT)
    server.wait_workers(1, exclude=first | second, timeout=TAKES_EFFECT)
    assert server.get()[0] == 200


@pytest.mark.parametrize("kind", ["sync", "asgi"])
def test_a_broken_edit_keeps_the_old_workers_and_a_fix_recovers(forkserve, tmp_path, kind):
    server = _serve(forkserve, tmp_path, kind)
    server.wait_log("reload: watching")
    before = set(server.wait_workers(1))
    broken = KINDS[kind][0].format(answer=b"v2").replace("def ", "def (", 1)
    _write(tmp_path / "reload_app.py", broken)
    server.wait_log("Reload failed (a new worker failed to boot); the old workers keep serving",
                    timeout=TAKES_EFFECT)
    assert "SyntaxError" in server.log
    assert server.get()[2] == b"v1"
    assert set(server.wait_workers(1)) == before
    _write(tmp_path / "reload_app.py", KINDS[kind][0].format(answer=b"v3"))
    _answers(server, b"v3")
    server.wait_workers(1, exclude=before)


def test_with_preload_the_master_reimports_the_edited_app(forkserve, tmp_path):
    server = _serve(forkserve, tmp_path, "sync", "--preload", "--reload-engine", "poll")
    server.wait_log("reload: watching")
    _write(tmp_path / "reload_app.py", WSGI.format(answer=b"v2"))
    _answers(server, b"v2")
    _write(tmp_path / "reload_app.py", WSGI.format(answer=b"v3").replace("def ", "def (", 1))
    server.wait_log("Reload failed, the app did not load", timeout=TAKES_EFFECT)
    assert server.get()[2] == b"v2"


def test_without_watchfiles_the_inotify_engine_polls(forkserve, tmp_path):
    hide = tmp_path / "hide"
    (hide / "watchfiles").mkdir(parents=True)
    (hide / "watchfiles" / "__init__.py").write_text(
        "raise ImportError('hidden by the test')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(hide), str(ROOT), str(APPS)])}
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    server = _serve(forkserve, app_dir, "sync", "--reload-engine", "inotify", env=env)
    server.wait_log("reload: watching")
    assert "(poll)" in server.log
    assert "reload_engine = 'inotify' needs watchfiles" in server.log
    _write(app_dir / "reload_app.py", WSGI.format(answer=b"v2"))
    _answers(server, b"v2")
