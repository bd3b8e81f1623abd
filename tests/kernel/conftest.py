"""Fixtures for the kernel-integration tier: real namespaces on the test machine, as root."""
import fcntl
import os
import re
import shutil
import sys

import pytest

# tests/shared_reference.py: where ../shared/reference is
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from netns_lab import HOST_KNOB_LOCK, NetnsLab, host_knobs_guard, read_netfilter_knobs, run


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


def _root_netns_state():
    """What this tier promises never to leave changed in the machine's own (root) namespace."""
    state = {"knobs": read_netfilter_knobs()}
    for path in ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"):
        with open(path) as handle:
            state[path] = handle.read().strip()
    for tool in ("iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save", "ip6tables-legacy-save"):
        if shutil.which(tool):
            text = run([tool], check=False).stdout
            # drop comments and packet/byte counters, which move with normal traffic
            state[tool] = [re.sub(r"\[\d+:\d+\]", "", line) for line in text.splitlines() if not line.startswith("#")]
    state["nft"] = run(["nft", "list", "ruleset"], check=False).stdout
    state["netns"] = sorted(line.split()[0] for line in run(["ip", "netns", "list"], check=False).stdout.splitlines()
                            if line.strip())
    return state


@pytest.fixture(scope="session", autouse=True)
def root_netns_left_unchanged():
    """Fail the run if the tier left the root namespace's firewall, forwarding, netfilter knobs or the
    set of namespaces changed. Taken under the host-knob lock so a concurrent run's temporary values
    (restored by its own guard) are never mistaken for a leak."""
    os.makedirs(os.path.dirname(HOST_KNOB_LOCK), exist_ok=True)
    with open(HOST_KNOB_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        before = _root_netns_state()
        fcntl.flock(lock, fcntl.LOCK_UN)
    yield
    with open(HOST_KNOB_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        after = _root_netns_state()
        fcntl.flock(lock, fcntl.LOCK_UN)
    # namespaces made by this run's NetnsLab carry this process id (others may be another run's)
    ours = "ngct%d-" % (os.getpid() % 100000)
    existed = before.pop("netns")
    leaked = [n for n in after.pop("netns") if n.startswith(ours) and n not in existed]
    changed = sorted(key for key in before if before[key] != after.get(key))
    assert not leaked and not changed, "root namespace left changed: %s; leaked namespaces: %s" % (changed, leaked)
