"""Code reload (``reload``): watch the app's files, and have the master roll
the workers as a HUP does when one changes.

The watcher runs in the master, as a daemon thread that only records what
changed and wakes the master's loop (:meth:`Watcher.take` is read there);
the reload itself is the master's HUP path (``master/reload.py``): new
workers boot, the old ones drain once the new ones are ready, and a change
that breaks the import leaves the old workers serving.  gunicorn watches in
each worker and restarts it abruptly; watching once in the master keeps one
reload mechanism and lets a broken edit fail without an outage.

What is watched: the ``.py`` files under the directory the app's top-level
module is found in (found, not imported: without ``preload_app`` the master
never imports the app), under each ``pythonpath`` entry, the files of the
modules the master has imported from elsewhere (with ``preload_app``, the
app's), and ``reload_extra_files`` (globs re-expanded on each scan).
Nothing from the standard library, site-packages, a virtualenv, hidden
directories or forkserve itself.  At most ``MAX_FILES`` files are scanned.

Engines: ``watchfiles`` (inotify on Linux) when it is importable and
``reload_engine`` is ``auto`` or ``inotify``; otherwise a scan of
modification times every ``POLL_INTERVAL`` seconds.  Bursts of writes (an
editor saving in several steps) make one reload: changes are reported once
a scan (or watchfiles' step) sees no more of them.
"""

from __future__ import annotations

import fnmatch
import glob
import importlib.machinery
import logging
import os
import site
import sys
import sysconfig
import threading
import time
from typing import Callable, Iterable

__all__ = ["Watcher", "watch_roots", "watched_files", "MAX_FILES", "POLL_INTERVAL"]

#: The most files a scan looks at; beyond it the rest are not watched (logged).
MAX_FILES = 10000
#: Seconds between two scans of the polling engine.
POLL_INTERVAL = 1.0
#: Seconds without a new change before a burst of changes is reported.
QUIET = 0.3
#: A burst longer than this is reported anyway.
MAX_BURST = 5.0

_SKIP_DIRS = frozenset({"__pycache__", "site-packages", "dist-packages", "node_modules",
                        "build", "dist"})
_GLOB_MAGIC = ("*", "?", "[")


def _excluded_prefixes() -> tuple[str, ...]:
    """Directories whose files are never the app's: the standard library,
    site-packages, forkserve itself."""
    paths = set()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            paths.add(p)
    try:
        paths.update(site.getsitepackages())
    except AttributeError:  # pragma: no cover - old virtualenvs
        pass
    user_site = getattr(site, "USER_SITE", None)
    if user_site:
        paths.add(user_site)
    # Not sys.prefix itself: with a system Python (/usr) the app may well
    # live under it (/usr/src/app).
    paths.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # forkserve/
    return tuple(sorted({os.path.realpath(p) + os.sep for p in paths}))


def _is_glob(entry: str) -> bool:
    return any(c in entry for c in _GLOB_MAGIC)


def watch_roots(app: str | None, pythonpath: Iterable[str]) -> list[str]:
    """The directories whose ``.py`` files are the app's: where its
    top-level module is found (without importing it), and ``pythonpath``."""
    excluded = _excluded_prefixes()
    roots: list[str] = []

    def add(path: str) -> None:
        real = os.path.realpath(path)
        if os.path.isdir(real) and real not in roots \
                and not (real + os.sep).startswith(excluded):
            roots.append(real)

    for path in pythonpath:
        add(path)
    top = (app or "").partition(":")[0].split(".")[0]
    if top:
        search = [os.getcwd(), *sys.path]
        spec = importlib.machinery.PathFinder.find_spec(top, search)
        if spec is not None and spec.origin and spec.has_location:
            where = os.path.dirname(spec.origin)
            # A package: the directory holding it (its siblings are
            # usually the project's other modules).
            add(os.path.dirname(where) if spec.submodule_search_locations else where)
        elif spec is not None and spec.submodule_search_locations:  # a namespace package
            for where in spec.submodule_search_locations:
                add(os.path.dirname(where))
    return roots


def _module_files(excluded: tuple[str, ...]) -> list[str]:
    files = []
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path or not path.endswith(".py"):
            continue
        real = os.path.realpath(path)
        if not real.startswith(excluded):
            files.append(real)
    return files


def watched_files(roots: Iterable[str], extra: Iterable[str], limit: int = MAX_FILES
                  ) -> tuple[list[str], bool]:
    """The files to watch now, and whether ``limit`` cut the list."""
    excluded = _excluded_prefixes()
    files: list[str] = []
    seen: set[str] = set()

    def add(path: str) -> bool:
        if path not in seen:
            seen.add(path)
            files.append(path)
        return len(files) < limit

    for entry in extra:
        for path in (sorted(glob.glob(entry, recursive=True)) if _is_glob(entry) else [entry]):
            if not add(os.path.abspath(path)):
                return files, True
    for path in _module_files(excluded):
        if not add(path):
            return files, True
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(
                d for d in dirnames
                if not d.startswith(".") and d not in _SKIP_DIRS
                and not os.path.exists(os.path.join(dirpath, d, "pyvenv.cfg"))
                and not (os.path.realpath(os.path.join(dirpath, d)) + os.sep).startswith(excluded))
            for name in sorted(filenames):
                if name.endswith(".py") and not add(os.path.join(dirpath, name)):
                    return files, True
    return files, False


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class Watcher:
    """Watches the app's files from a daemon thread of the master.

    The thread only appends to :attr:`changed` and calls ``wake`` (which
    writes a byte to the master's wake-up pipe); the master's loop calls
    :meth:`take` and starts the reload.
    """

    def __init__(self, roots: list[str], extra: list[str], engine: str,
                 wake: Callable[[], None], log: logging.Logger) -> None:
        self.roots = roots
        self.extra = list(extra)
        self.wake = wake
        self.log = log
        self.changed: list[str] = []
        self.notes: list[str] = []   # warnings from the thread, logged by take()
        self.engine = self._choose(engine)
        self._thread: threading.Thread | None = None

    def _choose(self, engine: str) -> str:
        if engine == "poll":
            return "poll"
        try:
            import watchfiles  # noqa: F401
        except ImportError:
            if engine == "inotify":
                self.log.warning("reload_engine = 'inotify' needs watchfiles (pip install "
                                 "'forkserve[reload]'); polling every %.0fs instead",
                                 POLL_INTERVAL)
            return "poll"
        return "watchfiles"

    def start(self) -> None:
        """Take the first snapshot and start the thread."""
        files, cut = watched_files(self.roots, self.extra)
        if cut:
            self.log.warning("reload: more than %s files to watch; only the first %s are "
                             "(narrow pythonpath or chdir)", MAX_FILES, MAX_FILES)
        self.log.info("reload: watching %s files (%s) under %s%s", len(files), self.engine,
                      ", ".join(self.roots) or "no directory",
                      f" and {len(self.extra)} reload_extra_files" if self.extra else "")
        run = self._poll if self.engine == "poll" else self._watchfiles
        self._thread = threading.Thread(target=run, args=(files,), name="forkserve-reload",
                                        daemon=True)
        self._thread.start()

    def take(self) -> list[str]:
        """The changed paths reported since the last call (master loop)."""
        while self.notes:
            self.log.warning("reload: %s", self.notes.pop(0))
        if not self.changed:
            return []
        taken, self.changed = self.changed, []
        return sorted(set(taken))

    def _report(self, paths: Iterable[str]) -> None:
        # One C-level extend of a list: atomic against take() in the loop.
        self.changed.extend(list(paths))
        self.wake()

    # -- engines (run in the thread) -------------------------------------

    def _snapshot(self) -> dict[str, tuple[int, int] | None]:
        files, _ = watched_files(self.roots, self.extra)
        return {path: _stamp(path) for path in files}

    def _poll(self, files: list[str]) -> None:
        before = {path: _stamp(path) for path in files}
        burst: set[str] = set()
        burst_start = 0.0
        while True:
            time.sleep(QUIET if burst else POLL_INTERVAL)
            try:
                now = self._snapshot()
            except Exception:  # a directory vanishing mid-walk: try again
                continue
            diff = {p for p in before.keys() | now.keys() if before.get(p) != now.get(p)}
            before = now
            if diff:
                if not burst:
                    burst_start = time.monotonic()
                burst |= diff
                if time.monotonic() - burst_start < MAX_BURST:
                    continue
            if burst:
                self._report(burst)
                burst = set()

    def _watchfiles(self, files: list[str]) -> None:
        import watchfiles

        watched = set(files)
        roots = tuple(r + os.sep for r in self.roots)
        patterns = [os.path.abspath(e) for e in self.extra if _is_glob(e)]
        dirs = set(self.roots)
        for path in files:
            if not path.startswith(roots):
                dirs.add(os.path.dirname(path))
        for pattern in patterns:
            # The fixed part of a glob: where its files can appear.
            fixed = pattern.split(next(c for c in pattern if c in _GLOB_MAGIC))[0]
            dirs.add(os.path.dirname(fixed) or ".")
        dirs = {d for d in dirs if os.path.isdir(d)}
        # A directory inside another watched one is watched through it.
        top = sorted(dirs)
        top = [d for d in top if not any(d != o and d.startswith(o + os.sep) for o in top)]

        def relevant(change: watchfiles.Change, path: str) -> bool:
            if path in watched:
                return True
            if path.endswith(".py"):
                for root in roots:
                    if path.startswith(root):
                        parts = path[len(root):].split(os.sep)[:-1]
                        return not any(p.startswith(".") or p in _SKIP_DIRS for p in parts)
            return any(fnmatch.fnmatch(path, p) for p in patterns)

        try:
            for changes in watchfiles.watch(*top, watch_filter=relevant,
                                            debounce=int(MAX_BURST * 1000),
                                            step=int(QUIET * 1000), raise_interrupt=False,
                                            ignore_permission_denied=True):
                self._report(path for _, path in changes)
        except Exception as exc:  # e.g. the inotify watch limit: poll instead
            self.notes.append(f"watchfiles failed ({type(exc).__name__}: {exc}); polling "
                              f"every {POLL_INTERVAL:.0f}s instead")
            self.engine = "poll"
            self.wake()
            self._poll(files)
