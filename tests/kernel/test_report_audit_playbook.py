"""nodeguard.conntrack.audit end to end on namespace hosts (ansible-playbook, local connection, an interpreter that
enters the namespace): check mode writes nothing but still gates; a real run writes the reports, the state and the
textfiles; a later run sees the counters that rose in between.

One host's table is kept full by live traffic against a lowered nf_conntrack_max (host knob, restored by the
host_knobs fixture), so its usage is critical and its early_drop counter rises between runs; the other is clean.
"""
import json
import os

import jsonschema

from netns_lab import REPO_ROOT, conntrack_losses, keep_table_full, namespace_inventory, run_collection_playbook, \
    wait_losses_rise

LIMIT = 2048
SCHEMA = json.load(open(os.path.join(REPO_ROOT, "docs", "audit-report.schema.json")))


def _inventory(tmp_path, hosts):
    return namespace_inventory(tmp_path, hosts, dict(
        (ns.name, {"conntrack_audit_textfile_dir": str(tmp_path / "textfile" / ns.name)}) for ns in hosts))


def _audit(inventory, tmp_path, check=False, **extra):
    variables = dict({"conntrack_audit_report_dir": str(tmp_path / "report"),
                      "conntrack_audit_state_dir": str(tmp_path / "state"),
                      "conntrack_audit_memory_mb": 8192, "conntrack_audit_cpus": 2}, **extra)
    return run_collection_playbook("audit", inventory, variables, check=check)


def _report(tmp_path):
    with open(str(tmp_path / "report" / "conntrack-audit.json")) as handle:
        report = json.load(handle)
    jsonschema.Draft202012Validator(SCHEMA).validate(report)
    return dict((h["host"], h) for h in report["hosts"]), report


def test_audit_playbook_check_mode_gate_state_and_deltas(lab, host_knobs, tmp_path):
    full = lab.add("afull")
    clean = lab.add("aclean")
    with open("/proc/sys/net/netfilter/nf_conntrack_max", "w") as handle:
        handle.write(str(LIMIT))
    keep_table_full(full, LIMIT)
    inventory = _inventory(tmp_path, [full, clean])

    # check mode: the evaluation and the gate run, nothing is written anywhere
    checked = _audit(inventory, tmp_path, check=True, conntrack_audit_fail_on="critical")
    assert checked.returncode != 0, checked.stdout[-3000:]
    assert "conntrack audit critical on %s: NGCA001" % full.name in checked.stdout
    recap = dict((line.split()[0], line) for line in checked.stdout.splitlines() if "failed=" in line)
    assert "failed=0" in recap[clean.name] and "failed=1" in recap[full.name], recap
    for path in ("report", "state", "textfile"):
        assert not (tmp_path / path).exists(), path

    # a real run: reports, state per host, textfiles; the first run is a baseline
    first = _audit(inventory, tmp_path)
    after_first = conntrack_losses(full)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    hosts, report = _report(tmp_path)
    assert hosts[full.name]["status"] == "critical" and hosts[full.name]["usage"]["max"] == LIMIT
    assert hosts[full.name]["usage"]["count"] >= LIMIT * 0.95
    assert hosts[clean.name]["status"] == "ok"
    assert all(h["deltas"]["baseline"] for h in hosts.values())
    assert report["summary"]["near_full"] == [full.name]
    assert sorted(os.listdir(str(tmp_path / "state"))) == sorted([full.name + ".json", clean.name + ".json"])
    assert sorted(os.listdir(str(tmp_path / "report"))) == ["conntrack-audit.html", "conntrack-audit.json",
                                                            "conntrack-audit.md"]
    prom = (tmp_path / "textfile" / full.name / "nodeguard_conntrack.prom").read_text()
    assert "nodeguard_conntrack_audit_status 2" in prom

    # the full table keeps evicting entries: wait until conntrack -S shows drop/early_drop past what they were
    # when the first audit had finished, so the next audit must see them rise
    wait_losses_rise(full, after_first)
    second = _audit(inventory, tmp_path)
    assert second.returncode == 0, second.stdout[-3000:]
    hosts, report = _report(tmp_path)
    deltas = hosts[full.name]["deltas"]
    assert deltas["baseline"] is False and deltas["reset"] is False
    assert deltas["counters"]["early_drop"]["delta"] > 0
    assert "early_drop" in hosts[full.name]["rising"]
    rose = [f for f in hosts[full.name]["findings"] if f["id"] == "NGCA002"]
    # when eviction finds nothing to evict, the packet is dropped too: drop may rise with early_drop
    assert sorted(f["counter"] for f in rose) == sorted(
        name for name in ("drop", "insert_failed", "early_drop", "chaintoolong") if deltas["counters"][name]["delta"])
    assert all(f["severity"] == ("critical" if f["counter"] == "drop" else "warning") for f in rose)
    assert hosts[clean.name]["rising"] == [] and hosts[clean.name]["deltas"]["baseline"] is False
    assert report["summary"]["dropping"] == [full.name]
    prom = (tmp_path / "textfile" / full.name / "nodeguard_conntrack.prom").read_text()
    assert 'nodeguard_conntrack_audit_counter_rising{counter="early_drop"} 1' in prom
