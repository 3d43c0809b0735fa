"""The multi-host test bed says why it cannot run (a skip reason), never
passes silently: tests/netbed.py's netns_unavailable()."""

from __future__ import annotations

import subprocess

import netbed


def test_not_root_is_a_reason(monkeypatch):
    monkeypatch.setattr(netbed.shutil, "which", lambda name: "/usr/sbin/ip")
    monkeypatch.setattr(netbed.os, "geteuid", lambda: 1000)
    assert netbed.netns_unavailable() == "network namespaces need root (ip netns add)"


def test_no_iproute2_is_a_reason(monkeypatch):
    monkeypatch.setattr(netbed.shutil, "which", lambda name: None)
    assert "iproute2" in netbed.netns_unavailable()


def test_refused_netns_add_is_a_reason(monkeypatch):
    monkeypatch.setattr(netbed.shutil, "which", lambda name: "/usr/sbin/ip")
    monkeypatch.setattr(netbed.os, "geteuid", lambda: 0)
    calls = []

    def refuse(argv, **kw):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 1, "", "mount --make-shared /run/netns failed: "
                                           "Operation not permitted\n")
    monkeypatch.setattr(netbed.subprocess, "run", refuse)
    reason = netbed.netns_unavailable()
    assert reason.startswith("ip netns add is not permitted here: ")
    assert "Operation not permitted" in reason
    assert calls[0][:3] == ["ip", "netns", "add"]
