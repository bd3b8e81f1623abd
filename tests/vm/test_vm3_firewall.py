"""Firewall persistence across a real reboot, rollback over real SSH and the lockout guard, on Debian 12 and 13 VMs.

The tests of this module share one fresh VM per kernel and run in order: persistence (one reboot with
Docker-like foreign chains recreated at boot and a netfilter-persistent snapshot taken before the baseline),
then rollback, then the lockout guard.
"""
import json
import time

from vm_lab import BOOT_TIMEOUT, VmLab, note, timed

# Docker recreates its chains at every start; this unit does the same at boot (After=network-online.target)
FAKE_DOCKER_UNIT = """[Unit]
Description=Docker-like foreign chains (vm tier)
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'iptables -N DOCKER; iptables -N DOCKER-USER; iptables -A DOCKER-USER -j RETURN; \\
  iptables -I FORWARD -j DOCKER-USER; iptables -t nat -N DOCKER; \\
  iptables -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER'

[Install]
WantedBy=multi-user.target
"""
FOREIGN_RULE = "-A INPUT -s 198.51.100.7/32 -p tcp -m tcp --dport 8080 -j DROP"
PERSISTED = "/etc/nodeguard/conntrack/rules.v4 /etc/nodeguard/conntrack/rules.v6 /etc/nodeguard/conntrack/firewall.json"
FIREWALL = [{"hosts": "all", "gather_facts": False, "roles": [{"role": "nodeguard.conntrack.conntrack_firewall"}]}]


def save(lab: VmLab, host: str, table: str = "filter") -> str:
    return lab.out(host, "iptables-save -t %s | grep -v '^#' | sed -E 's/\\[[0-9]+:[0-9]+\\]//'" % table)


def jumps(rules: str) -> int:
    """Baseline jumps from INPUT (the rule carries a comment before its -j)."""
    return len([line for line in rules.splitlines() if line.startswith("-A INPUT ") and line.endswith("-j NG-CT-INPUT")])


def owned(lab: VmLab, host: str) -> str:
    return "\n".join(line for line in save(lab, host).splitlines() if "NG-CT-" in line)


def test_baseline_back_once_after_reboot_with_foreign_chains_and_netfilter_persistent(fresh_lab: VmLab):
    lab = fresh_lab
    for host in lab.names:
        # a foreign rule of the admin, saved by netfilter-persistent BEFORE the baseline exists: a full-table
        # restore at boot after the collection's loader would wipe the baseline
        lab.ssh(host, "cat > /etc/systemd/system/fake-docker.service && systemctl enable --quiet fake-docker.service",
                input_text=FAKE_DOCKER_UNIT)
        lab.ssh(host, "echo 'iptables-persistent iptables-persistent/autosave_v4 boolean false' | debconf-set-selections; "
                      "echo 'iptables-persistent iptables-persistent/autosave_v6 boolean false' | debconf-set-selections; "
                      "DEBIAN_FRONTEND=noninteractive dpkg -i /opt/nodeguard/debs/*.deb >/dev/null", timeout=300)
        lab.ssh(host, "iptables %s && netfilter-persistent save >/dev/null 2>&1" % FOREIGN_RULE)
        lab.ssh(host, "systemctl start fake-docker.service")
    lab.playbook(FIREWALL, label="conntrack_firewall (persist, loader unit)")
    before = {h: owned(lab, h) for h in lab.names}
    for host in lab.names:
        assert jumps(save(lab, host)) == 1
        assert lab.out(host, "systemctl is-enabled nodeguard-conntrack-firewall.service") == "enabled"
    lab.reboot(label="reboot with loader unit + netfilter-persistent + Docker-like chains")
    problems = []
    for host in lab.names:
        rules = save(lab, host)
        nat = save(lab, host, "nat")
        if jumps(rules) != 1:
            problems.append("%s: %d baseline jumps in INPUT after the reboot:\n%s" % (host, jumps(rules), rules))
        if owned(lab, host) != before[host]:
            problems.append("%s: owned rules differ after the reboot:\nbefore:\n%s\nafter:\n%s"
                            % (host, before[host], owned(lab, host)))
        for foreign in (FOREIGN_RULE, "-A FORWARD -j DOCKER-USER", "-A DOCKER-USER -j RETURN"):
            if rules.count(foreign) != 1:
                problems.append("%s: foreign rule %r present %d times:\n%s" % (host, foreign, rules.count(foreign), rules))
        if "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER" not in nat:
            problems.append("%s: Docker-like nat chain lost:\n%s" % (host, nat))
        order = lab.out(host, "systemctl show -p ActiveEnterTimestampMonotonic --value "
                              "netfilter-persistent.service nodeguard-conntrack-firewall.service")
        note("%s: netfilter-persistent / loader became active at (monotonic us) %s" % (host, order.split()))
    again = lab.playbook(FIREWALL, label="conntrack_firewall re-apply after the reboot")
    if any(s.get("changed", 0) for s in again.stats.values()):
        problems.append("re-apply after the reboot changed something:\n%s" % again.summary())
    assert not problems, "\n".join(problems)


def test_rollback_over_real_ssh(fresh_lab: VmLab):
    """Rules that cut SSH, guard off, rollback timer on: the confirm step fails, the timer restores the rules."""
    lab = fresh_lab
    before = {h: owned(lab, h) for h in lab.names}
    files = {h: lab.out(h, "sha256sum %s" % PERSISTED) for h in lab.names}
    timeout = 60
    start = time.monotonic()
    # no SSH connection sharing, so every check after the apply needs a NEW connection through the new rules
    common = ("-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "
              "-o ControlMaster=no -o ControlPath=none -o ServerAliveInterval=5 -o ServerAliveCountMax=4")
    run = lab.playbook(FIREWALL, expect_rc=None, label="conntrack_firewall cutting SSH (rollback %d s)" % timeout,
                       extra_vars={"conntrack_firewall_allow_ssh": False, "conntrack_firewall_lockout_guard": False,
                                   "conntrack_firewall_input_final_action": "drop",
                                   "conntrack_firewall_rollback_timeout": timeout,
                                   "conntrack_firewall_confirm_timeout": 20, "ansible_ssh_common_args": common})
    assert run.proc.returncode != 0, "the confirm step passed although SSH was cut:\n%s" % run.summary()
    applied = run.task("Apply the baseline (with a rollback timer when conntrack_firewall_rollback_timeout > 0)")
    problems = []
    for host in lab.names:
        # everything Ansible kept of the apply (an exception, the module's stdout/stderr) when it did not apply
        assert applied[host].get("changed") and applied[host].get("rollback_token"), (
            "%s: the apply did not start a rollback timer:\n%s\nstderr:\n%s" % (
                host, json.dumps(applied[host], indent=1, default=str)[-6000:], run.proc.stderr[-3000:]))
        note("rollback: %s: the play stopped at %r" % (host, run.failed_task(host)))
    deadline = start + timeout + BOOT_TIMEOUT / 2
    back = {}
    while len(back) < len(lab.names) and time.monotonic() < deadline:
        for host in lab.names:
            if host not in back and lab.ssh(host, "true", check=False, timeout=30).returncode == 0:
                back[host] = time.monotonic() - start
        time.sleep(2)
    for host in lab.names:
        if host not in back:
            problems.append("%s: SSH did not answer again within %d s\n%s" % (
                host, deadline - start, lab.console_tail(host)))
            continue
        timed("rollback: %s answers SSH again after the cut (timer %d s)" % (host, timeout), back[host])
        if owned(lab, host) != before[host]:
            problems.append("%s: rules not restored:\n%s" % (host, owned(lab, host)))
        if lab.out(host, "sha256sum %s" % PERSISTED) != files[host]:
            problems.append("%s: persisted files changed by an unconfirmed apply" % host)
    assert not problems, "\n".join(problems)


def guard_play(policies, allow_ssh):
    return [{"hosts": "all", "gather_facts": False, "tasks": [
        {"name": "baseline", "ansible.builtin.include_role": {"name": "nodeguard.conntrack.conntrack_firewall"},
         "vars": {"conntrack_firewall_allow_ssh": allow_ssh, "conntrack_firewall_policies": policies,
                  "conntrack_firewall_input_final_action": "drop" if not allow_ssh else "return",
                  # if the guard lets it through, the timer brings the old rules back
                  "conntrack_firewall_rollback_timeout": 60, "conntrack_firewall_confirm_timeout": 15}}]}]


def check_refused(lab: VmLab, policies, allow_ssh, label):
    before = {h: save(lab, h) for h in lab.names}
    common = ("-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "
              "-o ControlMaster=no -o ControlPath=none -o ServerAliveInterval=5 -o ServerAliveCountMax=4")
    run = lab.playbook(guard_play(policies, allow_ssh), expect_rc=None, label=label,
                       extra_vars={"ansible_ssh_common_args": common})
    results = run.task("Apply the baseline (with a rollback timer when conntrack_firewall_rollback_timeout > 0)")
    problems = []
    for host in lab.names:
        res = results.get(host, {})
        if not (res.get("failed") and "lockout guard" in res.get("msg", "")):
            problems.append("%s: %s not refused: %s" % (host, label, res.get("msg") or res.get("changed")))
            # wait for the rollback before anything else talks to the host
            deadline = time.monotonic() + 60 + BOOT_TIMEOUT / 2
            while time.monotonic() < deadline and lab.ssh(host, "true", check=False, timeout=30).returncode != 0:
                time.sleep(2)
        elif save(lab, host) != before[host]:
            problems.append("%s: rules changed although the guard refused" % host)
    return problems


def test_lockout_guard_refuses_input_lockouts(fresh_lab: VmLab):
    lab = fresh_lab
    problems = check_refused(lab, {}, False, "no SSH accept, final action drop")
    problems += check_refused(lab, {"input": "DROP"}, False, "INPUT policy DROP, no SSH accept")
    assert not problems, "\n".join(problems)


def test_lockout_guard_refuses_output_drop(fresh_lab: VmLab):
    lab = fresh_lab
    problems = check_refused(lab, {"output": "DROP"}, True, "OUTPUT policy DROP")
    assert not problems, "\n".join(problems)
