"""Owners and drift on a namespace host (issue 13): the collection persists a value, another writer (a process that
calls itself kube-proxy, started with kube-proxy's flag) changes it live, and the facts and the audit say so, with
the owner and the fix.

The namespace gets its own /etc/sysctl.d (a bind mount inside `ip netns exec`'s private mount namespace), so the
machine's real sysctl files are never touched.
"""
import os
import subprocess
import sys

from netns_lab import COLLECTIONS_PATH, run_module

if COLLECTIONS_PATH not in sys.path:
    sys.path.insert(0, COLLECTIONS_PATH)
from ansible_collections.nodeguard.conntrack.plugins.plugin_utils import _audit_eval as ev  # noqa: E402

FAKE_KUBE_PROXY = ("import ctypes, time; ctypes.CDLL(None).prctl(15, b'kube-proxy', 0, 0, 0); print('ready', flush=True); "
                   "time.sleep(600)")


def _host_file():
    path = "/etc/sysctl.d/90-nodeguard-conntrack.conf"
    return open(path).read() if os.path.exists(path) else None


def test_drift_reported_with_the_other_writer(lab, tmp_path):
    host_file = _host_file()
    ns = lab.add("owner")
    etc = tmp_path / "sysctl.d"
    etc.mkdir()
    in_ns = ns.argv(["sh", "-c", 'mount --bind "$0" /etc/sysctl.d && exec "$@"', str(etc)])
    tuned = run_module("conntrack_tune", {"knobs": {"tcp_timeout_established": 86400}, "autoload": "never"},
                       prefix=in_ns)
    assert tuned["_rc"] == 0, tuned
    assert (etc / "90-nodeguard-conntrack.conf").read_text().endswith(
        "net.netfilter.nf_conntrack_tcp_timeout_established = 86400\n")
    clean = run_module("conntrack_facts", {"gather_subset": ["owners"]}, prefix=in_ns)["ansible_facts"]["conntrack"]
    assert clean["owners"]["tcp_timeout_established"]["drift"] is False
    assert clean["owners"]["tcp_timeout_established"]["persisted"] == 86400

    # another writer: kube-proxy with its default established timeout rewrites the live value
    proxy = ns.spawn([sys.executable, "-c", FAKE_KUBE_PROXY, "--conntrack-tcp-timeout-established=3600s"],
                     stdout=subprocess.PIPE, text=True)
    assert proxy.stdout.readline().strip() == "ready"
    ns.run(["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_established=3600"])

    facts = run_module("conntrack_facts", {"gather_subset": ["owners", "limits", "environment"]},
                       prefix=in_ns)["ansible_facts"]["conntrack"]
    item = facts["owners"]["tcp_timeout_established"]
    assert item["live"] == 3600 and item["persisted"] == 86400 and item["drift"] is True
    assert item["persisted_by"] == "/etc/sysctl.d/90-nodeguard-conntrack.conf" and item["ours"] is True
    mine = [w for w in item["writers"] if w["kind"] == "kube-proxy" and w["pid"] == proxy.pid]
    assert mine and "--conntrack-tcp-timeout-established=3600s" in mine[0]["detail"]

    result = ev.evaluate({"host": ns.name, "facts": facts}, now=1)
    drift = [f for f in result["findings"] if f["id"] == "NGCA009"]
    assert [f["knob"] for f in drift] == ["tcp_timeout_established"]
    assert "3,600 live but 86,400 persisted" in drift[0]["detail"]
    assert "kube-proxy (pid %d" % proxy.pid in drift[0]["owner"] and "tcpEstablishedTimeout" in drift[0]["fix"]
    # the machine's own sysctl file is as it was: only the namespace's view had the collection's file
    assert _host_file() == host_file
