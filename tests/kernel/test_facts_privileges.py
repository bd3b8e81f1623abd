"""conntrack_facts where the kernel limits what a process may do: no CAP_NET_ADMIN (procfs fallback), a child
netns (host-scope knobs read-only) and the init netns (writable; only read here, never written)."""
import json
import os
import shlex
import subprocess
import sys
import tempfile

from netns_lab import C_ENV, COLLECTIONS_PATH, MODULES_DIR

HOST_SCOPE = ("max", "buckets", "expect_max")


def run_module_argv(prefix, args=None):
    """Run the module with an argv prefix (ip netns exec ..., capsh ...); return its JSON result."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": dict(args or {})}, handle)
        path = handle.name
    try:
        module_path = os.path.join(MODULES_DIR, "conntrack_facts.py")
        command = "exec %s %s %s" % (shlex.quote(sys.executable), shlex.quote(module_path), shlex.quote(path))
        proc = subprocess.run(list(prefix) + ["sh", "-c", command], capture_output=True, text=True,
                              env=dict(C_ENV, PYTHONPATH=COLLECTIONS_PATH), timeout=120, check=False)
    finally:
        os.unlink(path)
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


def proc_stat_sums(ns):
    text = ns.run(["cat", "/proc/net/stat/nf_conntrack"]).stdout.splitlines()
    header = text[0].split()
    rename = {"clashres": "clash_resolve", "chainlength": "chaintoolong", "icmp_error": "error"}
    totals = {}
    for line in text[1:]:
        for name, field in zip(header, line.split()):
            name = rename.get(name, name)
            if name != "entries":
                totals[name] = totals.get(name, 0) + int(field, 16)
    return totals


def test_without_cap_net_admin_counters_come_from_procfs(lab):
    ns = lab.add("nocap")
    ns.run(["iptables", "-w", "-A", "INPUT", "-m", "conntrack", "--ctstate", "NEW", "-j", "ACCEPT"])
    for index in range(3):
        ns.run(["conntrack", "-I", "-p", "udp", "-s", "10.9.0.%d" % (index + 1), "-d", "10.9.1.1",
                "--sport", "1000", "--dport", "53", "-t", "600"])
    # the capability really is gone: conntrack-tools itself is refused over netlink
    refused = ns.run(["capsh", "--drop=cap_net_admin", "--", "-c", "conntrack -C"], check=False)
    assert refused.returncode != 0

    drop_cap = ns.argv(["capsh", "--drop=cap_net_admin", "--", "-c", 'exec "$@"', "capsh"])
    result = run_module_argv(drop_cap, {"gather_subset": ["counters"]})
    assert not result.get("failed"), result
    facts = result["ansible_facts"]["conntrack"]
    assert facts["counters_source"] == "procfs"
    assert any("CAP_NET_ADMIN" in note for note in facts["notes"]), facts["notes"]
    # ansible-core 2.19 returns structured warnings; the text is inside
    assert "CAP_NET_ADMIN" in json.dumps(result.get("warnings")), result
    oracle = proc_stat_sums(ns)
    for name, value in facts["counters"].items():
        assert value == oracle[name], name
    assert facts["counters"]["insert"] == 3
    # and with the capability the same numbers come over netlink
    privileged = ns.run_module("conntrack_facts", {"gather_subset": ["counters"]})["ansible_facts"]["conntrack"]
    assert privileged["counters_source"] == "netlink"
    assert privileged["counters"] == facts["counters"]


def test_child_netns_reports_host_scope_knobs_readonly(lab):
    ns = lab.add("child")
    result = ns.run_module("conntrack_facts", {"gather_subset": ["environment"]})
    env = result["ansible_facts"]["conntrack"]["environment"]
    assert env["init_netns"] is False
    assert env["conntrack"] in ("builtin", "module")
    assert env["kernel_release"] == os.uname().release
    assert env["netns_inode"] == int(ns.run(["readlink", "/proc/self/ns/net"]).stdout.strip()[5:-1])
    for knob in HOST_SCOPE + ("count", "hashsize"):
        assert knob in env["readonly_knobs"], knob
    assert "udp_timeout" in env["writable_knobs"] and "tcp_be_liberal" in env["writable_knobs"]
    # the report matches what the kernel does: writing max is refused, a per-netns timeout is accepted
    current_max = ns.run(["cat", "/proc/sys/net/netfilter/nf_conntrack_max"]).stdout.strip()
    denied = ns.run(["sh", "-c", "echo %s > /proc/sys/net/netfilter/nf_conntrack_max" % current_max],
                    check=False)
    assert denied.returncode != 0
    ns.run(["sh", "-c", "echo 31 > /proc/sys/net/netfilter/nf_conntrack_udp_timeout"])
    assert ns.run(["cat", "/proc/sys/net/netfilter/nf_conntrack_udp_timeout"]).stdout.strip() == "31"


def test_init_netns_reports_host_scope_knobs_writable():
    # read-only in the root netns: the module only reads, and this test writes nothing
    result = run_module_argv([], {"gather_subset": ["environment", "limits"]})
    facts = result["ansible_facts"]["conntrack"]
    env = facts["environment"]
    assert env["init_netns"] is True, env
    for knob in HOST_SCOPE + ("hashsize",):
        assert knob in env["writable_knobs"], knob
        path = ("/sys/module/nf_conntrack/parameters/hashsize" if knob == "hashsize"
                else "/proc/sys/net/netfilter/nf_conntrack_" + knob)
        assert os.access(path, os.W_OK)
    assert "count" in env["readonly_knobs"]
    with open("/proc/sys/net/netfilter/nf_conntrack_max") as handle:
        assert facts["limits"]["max"] == int(handle.read())
    assert env["netns_inode"] == os.stat("/proc/self/ns/net").st_ino


def test_bad_options_fail_naming_the_option(lab):
    ns = lab.add("bad", conntrack_rule=False)
    for args, field in (({"gather_subset": ["counters", "everything"]}, "gather_subset"),
                        ({"events_window": 0}, "events_window"),
                        ({"events_max_records": -5}, "events_max_records")):
        result = ns.run_module("conntrack_facts", args)
        assert result.get("failed") is True, result
        assert result["msg"].startswith(field), result["msg"]
        assert "Traceback" not in json.dumps(result)
        assert "ansible_facts" not in result
