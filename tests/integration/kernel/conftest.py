"""Fixtures for the kernel-integration tier: real namespaces on the test machine, as root."""
import os
import shutil

import pytest

from netns_lab import NetnsLab, host_knobs_guard


def pytest_collection_modifyitems(config, items):
    # This tier proves behaviour against the real kernel; running it without root would only
    # skip everything and look green, so refuse loudly instead.
    if os.geteuid() != 0:
        raise pytest.UsageError("the kernel-integration tier must run as root (it creates network namespaces)")
    for tool in ("ip", "iptables", "conntrack"):
        if shutil.which(tool) is None:
            raise pytest.UsageError("the kernel-integration tier needs %r on PATH (run `make bootstrap`)" % tool)


@pytest.fixture
def lab():
    """A NetnsLab whose namespaces, veths and processes are removed after the test, pass or fail."""
    netns_lab = NetnsLab()
    try:
        yield netns_lab
    finally:
        netns_lab.close()


@pytest.fixture
def host_knobs():
    """Hold the host-knob lock and restore every net.netfilter knob (and hashsize) afterwards."""
    with host_knobs_guard() as snapshot:
        yield snapshot
