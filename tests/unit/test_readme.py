"""The README's settings table is generated from the settings table."""

import re
from pathlib import Path

from forkserve.config import gunicorn_markdown, settings_markdown

README = Path(__file__).parent.parent.parent / "README.md"


def test_readme_settings_table_is_current():
    text = README.read_text()
    m = re.search(r"<!-- settings:begin[^>]*-->\n(.*?)<!-- settings:end -->", text, re.S)
    assert m, "README has no settings block"
    assert m.group(1) == settings_markdown(), (
        "README settings table is stale; regenerate it with "
        "python -m forkserve.config and paste it between the settings markers")


def test_readme_gunicorn_table_is_current():
    text = README.read_text()
    m = re.search(r"<!-- gunicorn:begin[^>]*-->\n(.*?)<!-- gunicorn:end -->", text, re.S)
    assert m, "README has no table of gunicorn's settings"
    assert m.group(1) == gunicorn_markdown(), (
        "README's table of gunicorn settings is stale; regenerate it with "
        "python -m forkserve.config --readme README.md")


def test_readme_quickstart_has_the_two_commands():
    text = README.read_text()
    quick = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^(pip install .*)$", quick, re.M)
    assert len(commands) == 2
    assert "forkserve" in commands[0] and "examples." in commands[0]
    assert "[test]" in commands[1] and "pytest" in commands[1]
