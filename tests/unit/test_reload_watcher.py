"""Which files --reload watches (forkserve.master.watcher), without a server."""

from __future__ import annotations

import sys

from forkserve.master.watcher import watch_roots, watched_files


def _tree(root, paths):
    for rel in paths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")


def test_the_app_directory_without_venvs_caches_or_hidden_dirs(tmp_path, monkeypatch):
    _tree(tmp_path, ["proj/myapp/__init__.py", "proj/myapp/wsgi.py", "proj/myapp/views.py",
                     "proj/myapp/__pycache__/views.cpython-311.py", "proj/.git/hook.py",
                     "proj/venv/pyvenv.cfg", "proj/venv/lib/dep.py",
                     "proj/node_modules/x.py", "proj/notes.txt", "proj/manage.py"])
    monkeypatch.chdir(tmp_path / "proj")
    roots = watch_roots("myapp.wsgi:application", [])
    assert roots == [str((tmp_path / "proj").resolve())]
    files, cut = watched_files(roots, [])
    names = sorted(p.split("proj/", 1)[1] for p in files if "proj/" in p)
    assert names == ["manage.py", "myapp/__init__.py", "myapp/views.py", "myapp/wsgi.py"]
    assert not cut


def test_extra_files_globs_and_the_bound(tmp_path):
    _tree(tmp_path, ["templates/a.html", "templates/sub/b.html", "config.toml",
                     *(f"src/m{i}.py" for i in range(30))])
    files, cut = watched_files([str(tmp_path / "src")],
                               [str(tmp_path / "config.toml"),
                                str(tmp_path / "templates" / "**" / "*.html")], limit=10)
    assert files[:3] == [str(tmp_path / "config.toml"), str(tmp_path / "templates/a.html"),
                         str(tmp_path / "templates/sub/b.html")]
    assert len(files) == 10 and cut


def test_the_standard_library_and_site_packages_are_not_roots(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert watch_roots("json:loads", []) == []      # stdlib
    assert watch_roots("pytest:main", []) == []     # site-packages
    assert all("site-packages" not in f and not f.startswith(sys.base_prefix + "/lib/")
               for f in watched_files([], [])[0])
