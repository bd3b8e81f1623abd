"""Fixtures for the vm tier: QEMU VMs with Debian 12 (kernel 6.1) and Debian 13 (kernel 6.12), as root.

``fresh_lab`` is one VM per kernel booted from a new copy-on-write overlay (nf_conntrack not loaded, nothing of
the collection installed), shared by the whole run to fit the tier's time budget under TCG emulation, and
destroyed at the end (VMs ended by PID, overlays removed). The modules run in file order and each leaves the
machines in a state the next expects: test_vm1 (nothing loaded: absent, blacklisted, iptables-legacy; nothing
persisted), test_vm2 (boot race, tuning, hashsize, sizing: reboots), test_vm3 (firewall persistence, rollback).
"""
import os
import shutil
import subprocess

import pytest

from vm_lab import NOTES, SUITES, TIMINGS, VmLab


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        raise pytest.UsageError("the vm tier must run as root (it creates a network namespace and tap devices)")
    for tool in ("qemu-system-x86_64", "qemu-img", "debootstrap", "ssh", "ssh-keygen", "ip"):
        if shutil.which(tool) is None:
            raise pytest.UsageError("the vm tier needs %r on PATH (run `make bootstrap`)" % tool)


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.section("vm tier: seconds per step (TCG unless the KVM probe passed)")
        for label, seconds in TIMINGS:
            terminalreporter.write_line("%7.1f  %s" % (seconds, label))
    if NOTES:
        terminalreporter.section("vm tier: observations")
        for text in NOTES:
            terminalreporter.write_line(text)


def _root_links():
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines())


def _netns():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


@pytest.fixture(scope="session", autouse=True)
def root_namespace_left_alone():
    """No interface of the VM labs ever appears in the root namespace, and their namespaces are gone at the end."""
    before = _root_links()
    yield
    ours = "ngct-vm-ngvm%d" % (os.getpid() % 10000)
    leaked = [n for n in _netns() if n.startswith(ours)]
    new_links = [n for n in _root_links() if n not in before and (n.startswith("tap") or n.startswith("br"))]
    assert not leaked and not new_links, "left behind: namespaces %s, root links %s" % (leaked, new_links)


@pytest.fixture(scope="session")
def fresh_lab():
    prefix = "ngvm%d" % (os.getpid() % 10000)
    lab = VmLab(prefix, SUITES)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


@pytest.fixture(params=SUITES)
def suite(request):
    return request.param
