"""Fixtures for the vm tier: QEMU VMs with Debian 12 (kernel 6.1) and Debian 13 (kernel 6.12), as root.

Each test module that needs fresh machines takes ``fresh_lab``: one VM per kernel booted from a new
copy-on-write overlay (nf_conntrack not loaded, nothing of the collection installed), shared by the
tests of that module in their order, and destroyed afterwards (VMs ended by PID, overlays removed).
"""
import os
import shutil

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


@pytest.fixture(scope="module")
def fresh_lab(request):
    prefix = "ngvm%d-%s" % (os.getpid() % 10000, request.module.__name__.split("_")[1])
    lab = VmLab(prefix, SUITES)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


@pytest.fixture(params=SUITES)
def suite(request):
    return request.param
