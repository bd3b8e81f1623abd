"""conntrack_facts on a lab host equals what the host shows directly (/proc, /sys, conntrack-tools)."""
import json

import pytest

FACTS = "/root/conntrack_facts.json"
RENAME = {"clashres": "clash_resolve", "chainlength": "chaintoolong", "icmp_error": "error"}


@pytest.fixture
def facts(host):
    # the podman connection is root in the container already (no sudo in the image)
    return json.loads(host.file(FACTS).content_string)


def read_int(host, path):
    return int(host.file(path).content_string.strip())


def test_available_and_default_subsets(facts):
    assert facts["available"] is True
    assert facts["gather_subset"] == ["counters", "environment", "limits", "owners", "settings", "timeouts"]
    assert "events" not in facts


def test_limits_match_proc(host, facts):
    for knob in ("max", "count", "buckets", "expect_max"):
        assert facts["limits"][knob] == read_int(host, "/proc/sys/net/netfilter/nf_conntrack_" + knob), knob
    # the prepare step created 120 UDP entries that live 900 s
    assert facts["limits"]["count"] >= 120
    assert facts["limits"]["count"] == int(host.run("conntrack -C").stdout)


def test_timeouts_and_settings_match_proc(host, facts):
    names = host.run("ls /proc/sys/net/netfilter").stdout.split()
    timeouts = sorted(n[len("nf_conntrack_"):] for n in names if n.startswith("nf_conntrack_") and "timeout" in n)
    assert sorted(facts["timeouts"]) == timeouts
    for short, value in list(facts["timeouts"].items()) + list(facts["settings"].items()):
        assert value == read_int(host, "/proc/sys/net/netfilter/nf_conntrack_" + short), short
    assert facts["timeouts"]["udp_timeout"] == 900


def test_counters_match_proc_and_conntrack_tools(host, facts):
    # the container has CAP_NET_ADMIN in its own netns: ctnetlink answers
    assert facts["counters_source"] == "netlink"
    lines = host.file("/proc/net/stat/nf_conntrack").content_string.splitlines()
    header = [RENAME.get(name, name) for name in lines[0].split()]
    totals = {}
    for line in lines[1:]:
        for name, field in zip(header, line.split()):
            totals[name] = totals.get(name, 0) + int(field, 16)
    for name, value in facts["counters"].items():
        assert value == totals[name], name
    stats = {}
    for line in host.run("conntrack -S").stdout.splitlines():
        for pair in line.split()[1:]:
            key, value = pair.split("=")
            stats[key] = stats.get(key, 0) + int(value)
    assert stats == facts["counters"]
    assert len(facts["counters_per_cpu"]) == len(lines) - 1


def test_lab_host_is_a_non_init_netns_with_readonly_host_knobs(host, facts):
    env = facts["environment"]
    assert env["init_netns"] is False
    assert env["container"] == "podman"
    for knob in ("max", "buckets", "expect_max", "count"):
        assert knob in env["readonly_knobs"], knob
        assert knob not in env["writable_knobs"]
    # /proc/sys is unmasked in the lab: per-netns timeouts are writable, and really are
    assert "udp_timeout" in env["writable_knobs"]
    assert host.run("sh -c 'echo 900 > /proc/sys/net/netfilter/nf_conntrack_udp_timeout'").rc == 0
    assert host.run("sh -c 'cat /proc/sys/net/netfilter/nf_conntrack_max > "
                    "/proc/sys/net/netfilter/nf_conntrack_max'").rc != 0
    assert env["kernel_release"] == host.run("uname -r").stdout.strip()
    assert env["netns_inode"] == int(host.run("stat -L -c %i /proc/self/ns/net").stdout)


def test_iptables_backend_matches_iptables_V(host, facts):
    version = host.run("iptables -V").stdout
    expected = "nft" if "nf_tables" in version else "legacy"
    assert facts["environment"]["iptables_backend"] == expected


def test_events_report_whether_kmsg_is_readable(host):
    events = json.loads(host.file("/root/conntrack_events.json").content_string)
    readable = host.run("python3 -c \"import os; os.close(os.open('/dev/kmsg', os.O_RDONLY | os.O_NONBLOCK))\"").rc == 0
    assert events["readable"] is readable
    if readable:
        assert events["records_read"] > 0 and events["table_full"] >= 0
    else:
        assert events["reason"].startswith("cannot read /dev/kmsg")
