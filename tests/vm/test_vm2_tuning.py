"""Boot race, persistence across a reboot and hashsize, on Debian 12 (6.1) and Debian 13 (6.12) VMs, over SSH.

In order on the shared VMs: the negative control first (nothing of the collection installed yet), then
conntrack_tuning across a reboot, hashsize, and host-scope sizing under real traffic.
"""
import json
import re
import shutil
import time

from vm_lab import VmLab, timed

KNOB_DIR = "/proc/sys/net/netfilter"
NAIVE_MAX = 262144
PEAK_FLOWS = 40000
TIMEOUTS = {"tcp_timeout_established": 7200, "udp_timeout": 45}


def knob(lab: VmLab, host: str, name: str) -> int:
    return int(lab.out(host, "cat %s/nf_conntrack_%s" % (KNOB_DIR, name)))


def module_loaded(lab: VmLab, host: str) -> bool:
    return lab.ssh(host, "test -d /sys/module/nf_conntrack", check=False).returncode == 0


def rules_everywhere(lab: VmLab, host: str) -> str:
    """Every rule of both iptables backends and nft (empty text when there is none)."""
    out = lab.out(host, "iptables-nft-save; ip6tables-nft-save; iptables-legacy-save; ip6tables-legacy-save; "
                        "nft list ruleset")
    return "\n".join(line for line in out.splitlines() if line.startswith("-A ") or "jump" in line or "ct state" in line)


def test_negative_control_sysctl_file_is_lost_at_boot(fresh_lab: VmLab):
    """What most roles do (ansible.posix.sysctl into sysctl.d) does not survive a reboot on a modular conntrack."""
    lab = fresh_lab
    for host in lab.names:
        persisted = lab.out(host, "grep -rl nf_conntrack /etc/modules-load.d /etc/modprobe.d /etc/sysctl.d || true")
        assert not persisted, "%s: something persisted conntrack settings before the negative control: %s" % (
            host, persisted)
    # the common role: a stateful rule loads the module, then a sysctl task writes the knob and sysctl.d
    plays = [{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": "stateful rule", "ansible.builtin.command":
            "iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT", "changed_when": True},
        {"name": "naive sysctl", "ansible.posix.sysctl": {
            "name": "net.netfilter.nf_conntrack_max", "value": str(NAIVE_MAX),
            "sysctl_file": "/etc/sysctl.d/90-naive-conntrack.conf", "state": "present", "reload": True}},
    ]}]
    lab.playbook(plays, label="negative control: rule + ansible.posix.sysctl")
    for host in lab.names:
        assert knob(lab, host, "max") == NAIVE_MAX
    lab.reboot(label="reboot after the naive sysctl")
    problems = []
    for host in lab.names:
        # the file is there, the module is not: systemd-sysctl had no key to write
        assert re.search(r"nf_conntrack_max\s*=\s*%d" % NAIVE_MAX,
                         lab.out(host, "cat /etc/sysctl.d/90-naive-conntrack.conf"))
        if module_loaded(lab, host):
            problems.append("%s: nf_conntrack loaded at boot without anything asking for it" % host)
            continue
        # the firewall (or anything) loads it later: the kernel default, not the value the role 'persisted'
        lab.ssh(host, "modprobe nf_conntrack")
        if knob(lab, host, "max") == NAIVE_MAX:
            problems.append("%s: the naive value survived (the boot race did not happen)" % host)
        lab.ssh(host, "rm -f /etc/sysctl.d/90-naive-conntrack.conf")
    assert not problems, problems


def test_tuning_in_force_at_boot_before_any_rule(fresh_lab: VmLab):
    lab = fresh_lab
    # (after the negative control the module is loaded live but nothing of it is persisted: the reboot
    # below starts from a machine where only the collection's files can load it)
    run = lab.playbook([{"hosts": "all", "gather_facts": False,
                         "roles": [{"role": "nodeguard.conntrack.conntrack_tuning"}]}],
                       extra_vars={"conntrack_tuning_peak_flows": PEAK_FLOWS, "conntrack_tuning_timeouts": TIMEOUTS},
                       label="conntrack_tuning (first run)")
    planned = {h: r["msg"]["settings"] for h, r in run.task("Show the planned values and why").items()}
    again = lab.playbook([{"hosts": "all", "gather_facts": False,
                           "roles": [{"role": "nodeguard.conntrack.conntrack_tuning"}]}],
                         extra_vars={"conntrack_tuning_peak_flows": PEAK_FLOWS, "conntrack_tuning_timeouts": TIMEOUTS},
                         label="conntrack_tuning (second run)")
    assert all(s.get("changed", 0) == 0 for s in again.stats.values()), again.summary()
    lab.reboot(label="reboot after conntrack_tuning")
    problems = []
    for host in lab.names:
        want = planned[host]
        assert want["max"] > 0 and want["buckets"] > 0, want
        if not module_loaded(lab, host):
            problems.append("%s: nf_conntrack not loaded after the reboot" % host)
            continue
        rules = rules_everywhere(lab, host)
        assert rules == "", "%s: a firewall rule exists at boot, the proof needs none:\n%s" % (host, rules)
        # loaded by systemd-modules-load from the collection's modules-load.d file, not by a rule
        # (early-boot lines carry no unit field: match the process, not -u)
        journal = lab.out(host, "journalctl -b -o short-monotonic --no-pager | grep -F 'systemd-modules-load[' || true")
        if "Inserted module 'nf_conntrack'" not in journal:
            problems.append("%s: systemd-modules-load did not load nf_conntrack: %s" % (host, journal))
        assert "nf_conntrack" in lab.out(host, "cat /etc/modules-load.d/nodeguard-conntrack.conf")
        for name in ("max", "buckets"):
            got = knob(lab, host, name)
            if got != want[name]:
                problems.append("%s: %s is %d after the reboot, planned %d" % (host, name, got, want[name]))
        for name, value in TIMEOUTS.items():
            got = knob(lab, host, name)
            if got != value:
                problems.append("%s: %s is %d after the reboot, wanted %d" % (host, name, got, value))
    facts = lab.module("nodeguard.conntrack.conntrack_facts", {"gather_subset": ["limits", "timeouts", "environment"]})
    for host, res in facts.items():
        ct = res["ansible_facts"]["conntrack"]
        env = ct["environment"]
        if env["conntrack"] != "module" or not ct["available"]:
            problems.append("%s: facts say conntrack=%r available=%r" % (host, env["conntrack"], ct["available"]))
        if ct["limits"]["max"] != planned[host]["max"] or ct["limits"]["buckets"] != planned[host]["buckets"]:
            problems.append("%s: facts limits %r, planned %r" % (host, ct["limits"], planned[host]))
        if ct["timeouts"]["tcp_timeout_established"] != TIMEOUTS["tcp_timeout_established"]:
            problems.append("%s: facts timeouts %r" % (host, ct["timeouts"]))
        # the facts name what loads it at boot: the collection's own modules-load.d file, and nothing else
        config = env["module_config"]
        if config["load_at_boot"] != [{"path": "/etc/modules-load.d/nodeguard-conntrack.conf", "owned": True}]:
            problems.append("%s: facts module_config.load_at_boot %r" % (host, config["load_at_boot"]))
        hashsize = config["options"].get("hashsize") or {}
        if hashsize.get("value") != str(planned[host]["buckets"]) or not hashsize.get("owned") or config["blocked"]:
            problems.append("%s: facts module_config %r" % (host, config))
    assert not problems, "\n".join(problems)


def test_hashsize_module_parameter_after_reboot_and_live(fresh_lab: VmLab):
    """buckets through modprobe.d (hashsize=) at boot, then a live change in the initial namespace."""
    lab = fresh_lab
    problems = []
    for host in lab.names:
        buckets = knob(lab, host, "buckets")
        modprobe = lab.out(host, "cat /etc/modprobe.d/nodeguard-conntrack.conf")
        match = re.search(r"^options nf_conntrack hashsize=(\d+)$", modprobe, re.M)
        assert match, "%s: no hashsize option in modprobe.d:\n%s" % (host, modprobe)
        param = int(lab.out(host, "cat /sys/module/nf_conntrack/parameters/hashsize"))
        if not int(match.group(1)) == param == buckets:
            problems.append("%s: modprobe.d hashsize=%s, parameter %d, buckets %d after the reboot"
                            % (host, match.group(1), param, buckets))
    # live change: a larger declared peak gives more buckets, written in the initial namespace now
    run = lab.playbook([{"hosts": "all", "gather_facts": False,
                         "roles": [{"role": "nodeguard.conntrack.conntrack_tuning"}]}],
                       extra_vars={"conntrack_tuning_peak_flows": PEAK_FLOWS * 2, "conntrack_tuning_timeouts": TIMEOUTS},
                       label="conntrack_tuning live buckets change")
    planned = {h: r["msg"]["settings"] for h, r in run.task("Show the planned values and why").items()}
    facts = lab.module("nodeguard.conntrack.conntrack_facts", {"gather_subset": ["limits", "environment"]})
    for host in lab.names:
        want = planned[host]["buckets"]
        buckets = knob(lab, host, "buckets")
        param = int(lab.out(host, "cat /sys/module/nf_conntrack/parameters/hashsize"))
        modprobe = lab.out(host, "cat /etc/modprobe.d/nodeguard-conntrack.conf")
        limits = facts[host]["ansible_facts"]["conntrack"]["limits"]
        if not buckets == param == want:
            problems.append("%s: live buckets %d, hashsize %d, planned %d" % (host, buckets, param, want))
        if "hashsize=%d" % want not in modprobe:
            problems.append("%s: modprobe.d not updated to %d: %s" % (host, want, modprobe))
        if limits["buckets"] != want or limits["hashsize"] != want:
            problems.append("%s: facts limits %r, want buckets = hashsize = %d" % (host, limits, want))
        # both: the live value (limits) and the one the next module load takes (modprobe.d, as the facts read it)
        option = facts[host]["ansible_facts"]["conntrack"]["environment"]["module_config"]["options"].get("hashsize")
        if option != {"value": str(want), "path": "/etc/modprobe.d/nodeguard-conntrack.conf", "owned": True}:
            problems.append("%s: facts module_config.options.hashsize %r, want %d" % (host, option, want))
    assert not problems, "\n".join(problems)


# Real traffic inside each VM over its loopback: HOLD established TCP connections (ASSURED entries, which the
# kernel cannot evict early) plus a CHURN of new connections that complete and close (TIME_WAIT entries). When
# the table is full, the SYN of a new connection finds nothing to evict: the kernel drops it, counts `drop` and
# logs "table full, dropping packet". The churn pauses while /run/ngvm-churn-paused exists.
LOAD = r"""
import os, resource, socket, sys, threading, time
hold = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
def server(port, keep):
    srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port)); srv.listen(4096)
    kept = []
    def loop():
        while True:
            conn, _ = srv.accept()
            if keep:
                kept.append(conn)
            else:
                conn.close()
    threading.Thread(target=loop, daemon=True).start()
server(9101, True)
server(9102, False)
clients = []
for _ in range(hold):
    c = socket.socket(); c.settimeout(5)
    try:
        c.connect(("127.0.0.1", 9101)); clients.append(c)
    except OSError:
        c.close()
print("held", len(clients), flush=True)
while True:
    if os.path.exists("/run/ngvm-churn-paused"):
        time.sleep(0.2); continue
    c = socket.socket(); c.settimeout(0.5)
    try:
        c.connect(("127.0.0.1", 9102))
    except OSError:
        pass
    c.close()
    time.sleep(0.01)
"""
UNDERSIZED_MAX = 1024


def conntrack_stat(lab: VmLab, host: str, counter: str) -> int:
    """A counter summed over CPUs, read with conntrack -S (conntrack-tools as the oracle)."""
    total = 0
    for line in lab.out(host, "conntrack -S").splitlines():
        for field in line.split():
            key, _sep, value = field.partition("=")
            if key == counter:
                total += int(value)
    return total


def wait_for(predicate, timeout, interval=2.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def audit(lab: VmLab, tmp_path, label: str, **extra):
    variables = dict({"conntrack_audit_report_dir": str(tmp_path / "report"),
                      "conntrack_audit_state_dir": str(tmp_path / "state"),
                      "conntrack_audit_events": True, "conntrack_audit_firewall": False,
                      "conntrack_audit_peak_flows": PEAK_FLOWS}, **extra)
    lab.playbook("nodeguard.conntrack.audit", extra_vars=variables, label=label)
    with open(str(tmp_path / "report" / "conntrack-audit.json")) as handle:
        return {h["host"]: h for h in json.load(handle)["hosts"]}


def test_undersized_host_table_full_audit_harden_fixes_it(fresh_lab: VmLab, tmp_path):
    """Host-scope sizing end to end: a full table drops and logs; audit sees it; harden raises max; ok again."""
    lab = fresh_lab
    problems = []
    for host in lab.names:
        # a stateful rule makes conntrack track (the module alone registers no hooks); then the undersized max
        # SSH (Ansible and these checks) is left untracked, so a full table cannot refuse the test's own sessions
        lab.ssh(host, "iptables -t raw -A PREROUTING -p tcp --dport 22 -j CT --notrack && "
                      "iptables -t raw -A OUTPUT -p tcp --sport 22 -j CT --notrack")
        lab.ssh(host, "iptables -A INPUT -m conntrack --ctstate INVALID -j DROP && "
                      "sysctl -qw net.netfilter.nf_conntrack_max=%d && rm -f /run/ngvm-churn-paused && "
                      "cat > /root/ngvm-load.py" % UNDERSIZED_MAX, timeout=60, input_text=LOAD)
        lab.ssh(host, "systemd-run --unit=ngvm-load --collect /usr/bin/python3 /root/ngvm-load.py %d"
                % int(UNDERSIZED_MAX * 0.95))
    start = time.monotonic()
    for host in lab.names:
        full = wait_for(lambda: knob(lab, host, "count") >= UNDERSIZED_MAX * 0.9, 300)
        assert full, "%s: table never reached 90 %% of %d (count %d)" % (host, UNDERSIZED_MAX, knob(lab, host, "count"))
        assert wait_for(lambda: conntrack_stat(lab, host, "drop") > 0, 120), "%s: no drop with a full table" % host
        assert wait_for(lambda: "table full, dropping packet" in lab.out(host, "dmesg"), 60), \
            "%s: no 'table full' kernel message" % host
    timed("fill the table past 90 % and see drops + kernel message (both VMs)", time.monotonic() - start)
    first = audit(lab, tmp_path, "audit #1 (table full, baseline)")
    drops = {h: conntrack_stat(lab, h, "drop") for h in lab.names}
    for host in lab.names:
        assert wait_for(lambda: conntrack_stat(lab, host, "drop") > drops[host], 120), "%s: drops stopped" % host
    second = audit(lab, tmp_path, "audit #2 (table full, deltas)")
    for host in lab.names:
        for label, report in (("first", first), ("second", second)):
            rep = report[host]
            ids = {f["id"] for f in rep["findings"]}
            if rep["status"] != "critical" or not {"NGCA001", "NGCA003", "NGCA006"} <= ids:
                problems.append("%s: %s audit status %s findings %s" % (host, label, rep["status"], sorted(ids)))
        rep = second[host]
        if "drop" not in rep["rising"] or rep["usage"]["max"] != UNDERSIZED_MAX or rep["counters"]["drop"] <= 0:
            problems.append("%s: second audit rising %s usage %s counters %s"
                            % (host, rep["rising"], rep["usage"], rep["counters"]))
    assert not problems, "\n".join(problems)

    # harden (tuning with the declared peak; the rule set is not this proof's subject) under the same steady hold;
    # the churn pauses only while harden runs, so its health gate sees the change itself
    for host in lab.names:
        lab.ssh(host, "touch /run/ngvm-churn-paused")
    run = lab.playbook("nodeguard.conntrack.harden", label="harden (tuning, declared peak)", extra_vars={
        "conntrack_tuning_peak_flows": PEAK_FLOWS, "conntrack_harden_firewall": False,
        "conntrack_harden_settle_seconds": 3})
    planned = {h: r["msg"]["settings"] for h, r in run.task("Show the planned values and why").items()}
    fixed_at = time.time()
    for host in lab.names:
        lab.ssh(host, "rm -f /run/ngvm-churn-paused")
        got = knob(lab, host, "max")
        if got != planned[host]["max"] or got <= UNDERSIZED_MAX:
            problems.append("%s: max %d after harden, planned %d" % (host, got, planned[host]["max"]))
    # the same load again for a while: the drop counter stays where it is (conntrack -S as the oracle)
    drops = {h: conntrack_stat(lab, h, "drop") for h in lab.names}
    shutil.rmtree(str(tmp_path / "state"))
    third = audit(lab, tmp_path, "audit #3 (after harden, baseline)",
                  conntrack_audit_events_window=int(time.time() - fixed_at) + 1)
    time.sleep(20)
    fourth = audit(lab, tmp_path, "audit #4 (after harden, deltas)",
                   conntrack_audit_events_window=int(time.time() - fixed_at) + 1)
    for host in lab.names:
        after = conntrack_stat(lab, host, "drop")
        if after != drops[host]:
            problems.append("%s: drop rose from %d to %d under the same load after harden" % (host, drops[host], after))
        for label, report in (("third", third), ("fourth", fourth)):
            rep = report[host]
            if rep["status"] != "ok":
                problems.append("%s: %s audit after harden: %s %s" % (host, label, rep["status"], rep["findings"]))
        if fourth[host]["rising"]:
            problems.append("%s: counters still rising after harden: %s" % (host, fourth[host]["rising"]))
        lab.ssh(host, "systemctl stop ngvm-load", check=False)
    assert not problems, "\n".join(problems)
