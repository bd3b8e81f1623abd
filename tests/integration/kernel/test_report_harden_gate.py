"""The harden playbook's health gate stops a rollout for real: two namespace hosts in two batches, the first one's
table kept full by live traffic so its early_drop counter rises during its change; the gate fails that host and
max_fail_percentage 0 ends the play before the second batch is touched.

The hosts are network namespaces driven by ansible-playbook with the local connection and
`ip netns exec <ns> python3` as the interpreter; tuning (which writes /etc/sysctl.d, shared with the machine) and
the firewall's persistence are off, so nothing outside the namespaces changes.
"""
import json
import os
import shutil
import subprocess
import sys
import time

from netns_lab import COLLECTIONS_PATH, REPO_ROOT

LIMIT = 2048
PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
CHURN = r"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
port = 1
print("ready", flush=True)
while True:
    # a new one-way flow every 2 ms; once the table is full each one evicts an unassured entry (early_drop)
    try:
        s.sendto(b"x", ("127.0.0.99", port))
    except OSError:
        pass  # EPERM: netfilter dropped it (table full)
    port = port % 60000 + 1
    time.sleep(0.002)
"""


def _inventory(tmp_path, hosts):
    inv = {"all": {"vars": {"ansible_connection": "local"}, "hosts": {}}}
    for ns in hosts:
        # the interpreter is a wrapper that enters the namespace (a path, not a command line)
        wrapper = tmp_path / ("python-%s" % ns.name)
        wrapper.write_text('#!/bin/sh\nexec ip netns exec %s /usr/bin/python3 "$@"\n' % ns.name)
        wrapper.chmod(0o755)
        inv["all"]["hosts"][ns.name] = {"ansible_python_interpreter": str(wrapper)}
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(inv))
    return str(path)


def _harden(inventory, extra):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH, ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="false")
    argv = [PLAYBOOK, "-i", inventory, "nodeguard.conntrack.harden", "-e", json.dumps(dict({
        "conntrack_harden_batch": 1, "conntrack_harden_tuning": False, "conntrack_harden_settle_seconds": 3,
        "conntrack_firewall_persist": False, "conntrack_firewall_enable_unit": False,
        "conntrack_firewall_allow_ssh": False, "conntrack_firewall_families": ["ipv4"]}, **extra))]
    return subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)


def _losses(ns):
    """drop + early_drop summed over CPUs, from conntrack -S."""
    total = 0
    for line in ns.run(["conntrack", "-S"]).stdout.splitlines():
        for field in line.split():
            key, dummy, value = field.partition("=")
            if key in ("drop", "early_drop"):
                total += int(value)
    return total


def _has_baseline(ns):
    return ns.run(["iptables", "-w", "-S", "INPUT"]).stdout.count("-j NG-CT-INPUT") == 1


def test_gate_stops_the_rollout_when_counters_rise(lab, host_knobs, tmp_path):
    first = lab.add("gate1")
    second = lab.add("gate2")
    with open("/proc/sys/net/netfilter/nf_conntrack_max", "w") as handle:
        handle.write(str(LIMIT))
    first.run(["sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=600"])
    churn = first.spawn([shutil.which("python3"), "-c", CHURN], stdout=subprocess.PIPE, text=True)
    assert churn.stdout.readline().strip() == "ready"
    deadline = time.time() + 60
    while int(first.run(["cat", "/proc/sys/net/netfilter/nf_conntrack_count"]).stdout) < LIMIT and time.time() < deadline:
        time.sleep(0.5)
    count = int(first.run(["cat", "/proc/sys/net/netfilter/nf_conntrack_count"]).stdout)
    assert count >= LIMIT * 0.95, count
    # precondition: the full table really loses flows while the churn runs (conntrack-tools as the oracle)
    losses = [_losses(first)]
    time.sleep(2)
    losses.append(_losses(first))
    assert losses[1] > losses[0], losses
    inventory = _inventory(tmp_path, [first, second])
    result = _harden(inventory, {"conntrack_harden_gate_counters": ["drop", "insert_failed", "early_drop"]})
    out = result.stdout
    assert result.returncode != 0, out[-3000:]
    assert "early_drop" in out and "rollout stopped before the next batch" in out, out[-3000:]
    # the first batch was changed (its gate ran after the change), the second batch never started
    assert _has_baseline(first)
    assert not _has_baseline(second), out[-3000:]
    assert "PLAY [Harden conntrack in batches]" in out and out.count("TASK [Read the counters before the change]") == 1


def test_gate_passes_and_rollout_completes_without_drops(lab, tmp_path):
    hosts = [lab.add("ok1"), lab.add("ok2")]
    inventory = _inventory(tmp_path, hosts)
    result = _harden(inventory, {})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert result.stdout.count("TASK [Read the counters before the change]") == 2  # two batches
    assert all(_has_baseline(ns) for ns in hosts)
    again = _harden(inventory, {})
    assert again.returncode == 0
    recap = [line for line in again.stdout.splitlines() if "changed=" in line]
    assert recap and all("changed=0" in line for line in recap), recap
