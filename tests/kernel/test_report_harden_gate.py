"""The harden playbook's health gate stops a rollout for real: two namespace hosts in two batches, the first one's
table kept full by live traffic so its early_drop counter rises during its change; the gate fails that host and
max_fail_percentage 0 ends the play before the second batch is touched.

The hosts are network namespaces driven by ansible-playbook with the local connection and
`ip netns exec <ns> python3` as the interpreter; tuning (which writes /etc/sysctl.d, shared with the machine) and
the firewall's persistence are off, so nothing outside the namespaces changes.
"""
from netns_lab import (conntrack_count, conntrack_losses, keep_table_full, namespace_inventory,
                       run_collection_playbook, wait_losses_rise)

LIMIT = 2048


def _harden(inventory, extra):
    return run_collection_playbook("harden", inventory, dict({
        "conntrack_harden_batch": 1, "conntrack_harden_tuning": False, "conntrack_harden_settle_seconds": 3,
        "conntrack_firewall_persist": False, "conntrack_firewall_enable_unit": False,
        "conntrack_firewall_allow_ssh": False, "conntrack_firewall_families": ["ipv4"]}, **extra))


def _has_baseline(ns):
    return ns.run(["iptables", "-w", "-S", "INPUT"]).stdout.count("-j NG-CT-INPUT") == 1


def test_gate_stops_the_rollout_when_counters_rise(lab, host_knobs, tmp_path):
    first = lab.add("gate1")
    second = lab.add("gate2")
    with open("/proc/sys/net/netfilter/nf_conntrack_max", "w") as handle:
        handle.write(str(LIMIT))
    keep_table_full(first, LIMIT)
    assert conntrack_count(first) >= LIMIT * 0.95
    # precondition: the full table really loses flows while the churn runs (conntrack-tools as the oracle)
    wait_losses_rise(first, conntrack_losses(first))
    inventory = namespace_inventory(tmp_path, [first, second])
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
    inventory = namespace_inventory(tmp_path, hosts)
    result = _harden(inventory, {})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert result.stdout.count("TASK [Read the counters before the change]") == 2  # two batches
    assert all(_has_baseline(ns) for ns in hosts)
    again = _harden(inventory, {})
    assert again.returncode == 0
    recap = [line for line in again.stdout.splitlines() if "changed=" in line]
    assert recap and all("changed=0" in line for line in recap), recap
