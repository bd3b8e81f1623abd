"""conntrack absent or blacklisted, and iptables-legacy chosen with update-alternatives, on Debian 12 and 13 VMs.

They run first on the fresh VMs (nothing has loaded nf_conntrack yet) and persist nothing: the blacklist is
removed and iptables-nft selected again at the end.
"""
import json

from vm_lab import VmLab

BLACKLIST = "/etc/modprobe.d/ngvm-blacklist-conntrack.conf"
OWNED_FILES = ("/etc/sysctl.d/90-nodeguard-conntrack.conf", "/etc/modules-load.d/nodeguard-conntrack.conf",
               "/etc/udev/rules.d/90-nodeguard-conntrack.rules", "/etc/modprobe.d/nodeguard-conntrack.conf")


def module_loaded(lab: VmLab, host: str) -> bool:
    return lab.ssh(host, "test -d /sys/module/nf_conntrack", check=False).returncode == 0


def audit(lab: VmLab, tmp_path, **extra):
    variables = dict({"conntrack_audit_report_dir": str(tmp_path / "report"),
                      "conntrack_audit_state_dir": str(tmp_path / "state"),
                      "conntrack_audit_events": True, "conntrack_audit_firewall": False}, **extra)
    run = lab.playbook("nodeguard.conntrack.audit", extra_vars=variables, label="audit (conntrack absent)")
    with open(str(tmp_path / "report" / "conntrack-audit.json")) as handle:
        return run, {h["host"]: h for h in json.load(handle)["hosts"]}


def check_absent_facts_and_audit(lab: VmLab, tmp_path, why: str, blocked_by=None):
    problems = []
    facts = lab.module("nodeguard.conntrack.conntrack_facts", {"gather_subset": ["all"]})
    for host, res in facts.items():
        if res.get("failed"):
            problems.append("%s (%s): conntrack_facts failed: %s" % (host, why, res.get("msg")))
            continue
        ct = res["ansible_facts"]["conntrack"]
        # 'loadable': on disk, not loaded; module_config says whether anything blocks the load
        if ct["available"] is not False or ct["environment"]["conntrack"] not in ("absent", "loadable"):
            problems.append("%s (%s): facts available=%r conntrack=%r" % (
                host, why, ct["available"], ct["environment"]["conntrack"]))
        config = ct["environment"]["module_config"]
        if blocked_by is None and (config["blocked"] or config["blacklisted"] or config["load_at_boot"]):
            problems.append("%s (%s): facts module_config %r on a fresh install" % (host, why, config))
        if blocked_by is not None and (blocked_by not in (config["blocked"] or "")
                                       or config["blacklisted"] != [blocked_by]):
            problems.append("%s (%s): facts module_config %r, want it blocked and blacklisted by %s"
                            % (host, why, config, blocked_by))
        if not any("absent" in note for note in ct["notes"]):
            problems.append("%s (%s): no note about conntrack being absent: %r" % (host, why, ct["notes"]))
    _run, report = audit(lab, tmp_path)
    for host in lab.names:
        rep = report[host]
        ids = {f["id"] for f in rep["findings"]}
        if rep["available"] is not False or "NGCA005" not in ids or rep["status"] != "warning":
            problems.append("%s (%s): audit available=%r status=%r findings=%s" % (
                host, why, rep["available"], rep["status"], rep["findings"]))
        if module_loaded(lab, host):
            problems.append("%s (%s): facts or audit loaded nf_conntrack" % (host, why))
    return problems


def test_conntrack_not_loaded_facts_and_audit(fresh_lab: VmLab, tmp_path):
    """A fresh distribution install: the module is on disk but not loaded; reading must not load it."""
    lab = fresh_lab
    for host in lab.names:
        assert not module_loaded(lab, host)
    problems = check_absent_facts_and_audit(lab, tmp_path, "not loaded")
    assert not problems, "\n".join(problems)


def test_conntrack_blacklisted(fresh_lab: VmLab, tmp_path):
    """modprobe.d refuses nf_conntrack: facts/audit report it absent; tuning fails clearly, changing nothing."""
    lab = fresh_lab
    for host in lab.names:
        lab.ssh(host, "printf 'blacklist nf_conntrack\\ninstall nf_conntrack /bin/false\\n' > %s" % BLACKLIST)
        refused = lab.ssh(host, "modprobe nf_conntrack", check=False)
        assert refused.returncode != 0, "%s: the blacklist did not stop modprobe" % host
    problems = check_absent_facts_and_audit(lab, tmp_path, "blacklisted", blocked_by=BLACKLIST)
    run = lab.playbook([{"hosts": "all", "gather_facts": False,
                         "roles": [{"role": "nodeguard.conntrack.conntrack_tuning"}]}],
                       extra_vars={"conntrack_tuning_peak_flows": 40000}, expect_rc=2,
                       label="conntrack_tuning on a blacklisted conntrack (fails)")
    results = run.task("Apply and persist the conntrack knobs")
    for host in lab.names:
        res = results[host]
        if not res.get("failed") or "could not load nf_conntrack: the load is blocked (%s" % BLACKLIST not in res.get("msg", ""):
            problems.append("%s: tuning on a blacklisted conntrack: %r" % (host, res.get("msg")))
        present = lab.out(host, "ls %s 2>/dev/null || true" % " ".join(OWNED_FILES))
        if present:
            problems.append("%s: files written although tuning failed: %s" % (host, present))
        lab.ssh(host, "rm -f %s" % BLACKLIST)
    assert not problems, "\n".join(problems)


def test_iptables_legacy_backend(fresh_lab: VmLab):
    """update-alternatives selects iptables-legacy: detected, the baseline lands in legacy, split brain found."""
    lab = fresh_lab
    problems = []
    for host in lab.names:
        lab.ssh(host, "update-alternatives --quiet --set iptables /usr/sbin/iptables-legacy && "
                      "update-alternatives --quiet --set ip6tables /usr/sbin/ip6tables-legacy")
    facts = lab.module("nodeguard.conntrack.conntrack_facts", {"gather_subset": ["environment"]})
    for host, res in facts.items():
        backend = res["ansible_facts"]["conntrack"]["environment"]["iptables_backend"]
        if backend != "legacy":
            problems.append("%s: backend %r with iptables-legacy selected" % (host, backend))
    lab.playbook([{"hosts": "all", "gather_facts": False,
                   "roles": [{"role": "nodeguard.conntrack.conntrack_firewall"}]}],
                 extra_vars={"conntrack_firewall_persist": False, "conntrack_firewall_enable_unit": False},
                 label="conntrack_firewall on iptables-legacy")
    for host in lab.names:
        legacy = lab.out(host, "iptables-legacy-save; ip6tables-legacy-save")
        nft = lab.out(host, "iptables-nft-save; ip6tables-nft-save")
        jumps = [line for line in legacy.splitlines() if line.startswith("-A INPUT ") and line.endswith("-j NG-CT-INPUT")]
        if len(jumps) != 2:
            problems.append("%s: baseline jump not in the legacy tables (both families):\n%s" % (host, legacy))
        if "NG-CT-" in nft:
            problems.append("%s: baseline written to the nft backend too:\n%s" % (host, nft))
    # rules in both backends: another tool writes through iptables-nft
    for host in lab.names:
        lab.ssh(host, "iptables-nft -A INPUT -s 192.0.2.1 -j DROP")
    audited = lab.module("nodeguard.conntrack.iptables_audit", {})
    for host, res in audited.items():
        ids = {f.get("id") for f in res.get("findings", [])}
        if res.get("failed") or "NGCT005" not in ids:
            problems.append("%s: iptables_audit with rules in both backends: %s" % (host, json.dumps(res)[:1500]))
    for host in lab.names:
        # back to the distribution default; the live rules are gone at the next reboot (nothing persisted)
        lab.ssh(host, "update-alternatives --quiet --auto iptables && update-alternatives --quiet --auto ip6tables")
    assert not problems, "\n".join(problems)
