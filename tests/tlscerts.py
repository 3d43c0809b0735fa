"""Certificates for the TLS tests, made with the openssl command line.

``make_pki(dir)`` writes, once per directory: a CA (``ca.pem``), two server
certificates it signed for 127.0.0.1 and localhost (``server.pem`` +
``server.key``, ``server2.pem`` + ``server2.key``, told apart by their
serial), a client certificate (``client.pem`` + ``client.key``) for mutual
TLS, a certificate signed by another CA (``rogue.pem`` + ``rogue.key``)
and ``other.key``, a key that matches none of them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"

SERVER_SERIAL = 0x1001
SERVER2_SERIAL = 0x2002


def _run(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=str(cwd), check=True, capture_output=True,
                   timeout=60)


def _key(name: str, cwd: Path) -> None:
    _run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-out", name, cwd=cwd)


def _ca(name: str, cwd: Path) -> None:
    _key(f"{name}.key", cwd)
    _run("req", "-x509", "-new", "-key", f"{name}.key", "-days", "30", "-subj",
         f"/CN=forkserve test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", f"{name}.pem", cwd=cwd)


def _leaf(name: str, ca: str, serial: int, usage: str, cwd: Path) -> None:
    _key(f"{name}.key", cwd)
    _run("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={name}", "-out",
         f"{name}.csr", cwd=cwd)
    (cwd / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        f"extendedKeyUsage={usage}\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
         "-set_serial", str(serial), "-days", "30", "-extfile", f"{name}.ext",
         "-out", f"{name}.pem", cwd=cwd)


def make_pki(directory: Path) -> Path:
    """Write the files listed in the module docstring into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "done").exists():
        return directory
    _ca("ca", directory)
    _ca("rogue-ca", directory)
    _leaf("server", "ca", SERVER_SERIAL, "serverAuth", directory)
    _leaf("server2", "ca", SERVER2_SERIAL, "serverAuth", directory)
    _leaf("client", "ca", 0x3003, "clientAuth", directory)
    _leaf("rogue", "rogue-ca", 0x4004, "clientAuth", directory)
    _key("other.key", directory)
    (directory / "done").write_text("")
    return directory
