"""Unix socket files: the mode the umask promises, and a missing parent
directory made the way a proxy can reach the socket through it."""

import os
import stat

import pytest

from forkserve.sockets import close_listeners, create_listeners


@pytest.fixture
def umask():
    """Set the process umask for a test; restore it afterwards."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


@pytest.mark.parametrize("mask, mode", [(0o007, 0o660), (0o000, 0o666), (0o077, 0o600),
                                        (0o027, 0o640)],
                         ids=["umask-007", "umask-000", "umask-077", "umask-027"])
def test_socket_file_mode_is_rw_bits_of_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    path = tmp_path / "fs.sock"
    listeners = create_listeners([f"unix:{path}"], 16)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == mode
        # The umask the process had is back.
        assert os.umask(mask) == mask
    finally:
        close_listeners(listeners)
    assert not path.exists()


def test_missing_parent_directories_are_made_0755(tmp_path, umask):
    umask(0o077)
    (tmp_path / "run").mkdir(mode=0o700)
    path = tmp_path / "run" / "forkserve" / "deeper" / "fs.sock"
    listeners = create_listeners([f"unix:{path}"], 16)
    try:
        for made in (tmp_path / "run" / "forkserve", path.parent):
            assert stat.S_IMODE(os.stat(made).st_mode) == 0o755
        # A directory that was there already is left as it was.
        assert stat.S_IMODE(os.stat(tmp_path / "run").st_mode) == 0o700
        assert stat.S_ISSOCK(os.stat(path).st_mode)
    finally:
        close_listeners(listeners)


def test_a_file_in_the_way_of_the_directory_is_an_error(tmp_path):
    (tmp_path / "run").write_text("not a directory")
    with pytest.raises(OSError, match="cannot bind"):
        create_listeners([f"unix:{tmp_path}/run/fs.sock"], 16)
