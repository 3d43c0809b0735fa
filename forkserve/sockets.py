"""Listening sockets: address parsing, bind/listen, inherited descriptors.

The master creates every listening socket once, before any worker exists;
workers only accept on them.  Sockets can also be inherited: ``fd://N`` in a
bind, systemd socket activation (``LISTEN_FDS``), and the master's own
re-exec on USR2 (``FORKSERVE_FDS``).
"""

from __future__ import annotations

import errno
import os
import re
import socket
import stat
import struct
import time
from dataclasses import dataclass

__all__ = ["Address", "parse_address", "Listener", "bind", "create_listeners",
           "close_listeners", "listen_queue"]

_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True)
class Address:
    """A parsed bind address."""

    kind: str            # "tcp", "unix" or "fd"
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_address(text: str) -> Address:
    """Parse HOST:PORT, [V6]:PORT, HOST (port 8000), unix:PATH or fd://N;
    as gunicorn: an empty host (``:8080``) is every IPv4 interface, and
    ``tcp://`` may come first."""
    if text.startswith("tcp://"):
        text = text[len("tcp://"):]
    if text.startswith("unix:"):
        path = text[5:]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError(f"empty unix socket path in {text!r}")
        return Address("unix", path=path)
    if text.startswith("fd://"):
        num = text[5:]
        if not _PORT.fullmatch(num):
            raise ValueError(f"expected fd://N with a descriptor number, got {text!r}")
        return Address("fd", fd=int(num))
    if text.startswith("/"):
        raise ValueError(f"a unix socket address is written unix:{text}, got {text!r}")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not host:
            raise ValueError(f"unterminated IPv6 address in {text!r}")
        port_text = rest[1:] if rest.startswith(":") else ("8000" if rest == "" else None)
        if port_text is None:
            raise ValueError(f"expected [IPV6]:PORT, got {text!r}")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, "8000"
        if sep and not host:
            host = "0.0.0.0"  # ":8080": gunicorn binds the empty host, all of IPv4
        if ":" in host:
            raise ValueError(f"an IPv6 address is written [ADDR]:PORT, got {text!r}")
    if not _PORT.fullmatch(port_text) or int(port_text) > 65535:
        raise ValueError(f"invalid port in {text!r}")
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"invalid host in {text!r}")
    return Address("tcp", host=host, port=int(port_text))


class Listener:
    """A listening socket and the address it was asked for."""

    def __init__(self, sock: socket.socket, address: Address, owned_path: str = "") -> None:
        self.sock = sock
        self.address = address
        # A unix socket file this process created and must remove on exit.
        self.owned_path = owned_path

    @property
    def family(self) -> int:
        return self.sock.family

    def fileno(self) -> int:
        return self.sock.fileno()

    def __str__(self) -> str:
        if self.sock.family == socket.AF_UNIX:
            return f"unix:{self.sock.getsockname() or self.address.path}"
        host, port = self.sock.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind(addr: Address, backlog: int, reuse_port: bool = False) -> socket.socket:
    """A listening socket on ``addr`` (TCP, or a unix socket whose stale
    file is replaced; OSError EADDRINUSE if a live server has it)."""
    if addr.kind == "unix":
        return _bind_unix(addr, backlog)
    return _bind_tcp(addr, backlog, reuse_port)


def _bind_tcp(addr: Address, backlog: int, reuse_port: bool) -> socket.socket:
    infos = socket.getaddrinfo(addr.host, addr.port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    last_error: OSError | None = None
    for family, type_, proto, _, sockaddr in infos:
        sock = socket.socket(family, type_, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
            sock.listen(backlog)
            return sock
        except OSError as exc:
            sock.close()
            last_error = exc
    assert last_error is not None
    raise last_error


def _bind_unix(addr: Address, backlog: int) -> socket.socket:
    path = addr.path
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        # Remove a stale socket only if nobody answers on it; a live one
        # belongs to another server and binding over it would steal it.
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.setblocking(False)  # a live server with a full queue: EAGAIN, not a wait
        try:
            probe.connect(path)
        except BlockingIOError:
            raise OSError(errno.EADDRINUSE, f"{path} is in use by another server") from None
        except OSError:
            os.unlink(path)
        else:
            raise OSError(errno.EADDRINUSE, f"{path} is in use by another server")
        finally:
            probe.close()
    _make_parents(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The file bind() creates gets 0777 & ~umask.  x bits mean nothing on a
    # socket (connecting takes w), so leave them out: umask 007 gives 0660,
    # as the comment in conf/prod.py promises.  The master is still single-
    # threaded here, so changing the process umask for the call is safe.
    umask = os.umask(0o777)
    os.umask(umask | 0o111)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(umask)
    return sock


def _make_parents(path: str) -> None:
    """Create the missing directories above a unix socket, mode 0755 whatever
    the umask (as systemd's RuntimeDirectory= does under /run): whoever may
    connect is decided by the socket file's own mode and owner, and a proxy
    running as another user must be able to reach it."""
    parent = os.path.dirname(os.path.abspath(path))
    missing = []
    while not os.path.isdir(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o755)
        except FileExistsError:
            if os.path.isdir(directory):
                continue  # made meanwhile by someone else: theirs to set up
            raise
        os.chmod(directory, 0o755)  # mkdir's mode went through the umask


def socket_from_fd(fd: int) -> socket.socket:
    """Wrap an inherited listening descriptor, whatever its family."""
    sock = socket.socket(fileno=fd)
    if sock.type != socket.SOCK_STREAM:
        raise OSError(errno.EINVAL, f"fd {fd} is not a stream socket")
    sock.set_inheritable(False)
    return sock


def _address_of(sock: socket.socket) -> Address:
    if sock.family == socket.AF_UNIX:
        name = sock.getsockname()
        return Address("unix", path=name if isinstance(name, str) else "")
    host, port = sock.getsockname()[:2]
    return Address("tcp", host=host, port=port)


def inherited_fds(env: os._Environ[str] | dict[str, str] | None = None) -> list[int]:
    """Listening descriptors handed over by systemd or by a USR2 re-exec."""
    env = os.environ if env is None else env
    fds = env.get("FORKSERVE_FDS")
    if fds:
        return [int(fd) for fd in fds.split(",") if fd.isdigit()]
    if env.get("LISTEN_PID") == str(os.getpid()):
        count = env.get("LISTEN_FDS", "")
        if count.isdigit():
            return list(range(3, 3 + int(count)))
    return []


def create_listeners(binds: list[str], backlog: int, reuse_port: bool = False,
                     inherited: list[int] | None = None, retries: int = 5) -> list[Listener]:
    """Bind every address (or adopt inherited descriptors) and listen.

    Inherited sockets replace the configured binds entirely, as gunicorn does
    for systemd activation: the unit file owns the addresses then.
    """
    if inherited:
        return [Listener(s, _address_of(s)) for s in map(socket_from_fd, inherited)]
    listeners = []
    try:
        for text in binds:
            addr = parse_address(text)
            if addr.kind == "fd":
                sock = socket_from_fd(addr.fd)
                listeners.append(Listener(sock, addr))
                continue
            for attempt in range(retries):
                try:
                    sock = bind(addr, backlog, reuse_port)
                    owned = addr.path if addr.kind == "unix" else ""
                    listeners.append(Listener(sock, addr, owned_path=owned))
                    break
                except OSError as exc:
                    # A previous server may be just letting go of the port.
                    if exc.errno != errno.EADDRINUSE or attempt == retries - 1:
                        raise OSError(exc.errno, f"cannot bind {text}: {exc.strerror}") from None
                    time.sleep(0.5)
    except BaseException:
        close_listeners(listeners, unlink=True)
        raise
    return listeners


def close_listeners(listeners: list[Listener], unlink: bool = True) -> None:
    """Close listening sockets; remove unix socket files this process made."""
    for lst in listeners:
        try:
            lst.sock.close()
        except OSError:
            pass
        if unlink and lst.owned_path:
            try:
                os.unlink(lst.owned_path)
            except OSError:
                pass


# struct tcp_info (linux/tcp.h): 8 bytes of u8 fields, then u32 rto, ato,
# snd_mss, rcv_mss, unacked, sacked.  On a listening socket the kernel puts
# the accept queue's length in tcpi_unacked and its limit in tcpi_sacked.
_TCP_INFO_QUEUE = struct.Struct("=8x4xIIIII")


def listen_queue(sock: socket.socket) -> tuple[int, int] | None:
    """(connections waiting to be accepted, the queue's limit) of a
    listening TCP socket on Linux; None where the kernel does not say."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except OSError:
        return None
    if len(raw) < _TCP_INFO_QUEUE.size:
        return None
    _, _, _, unacked, sacked = _TCP_INFO_QUEUE.unpack_from(raw)
    return unacked, sacked
