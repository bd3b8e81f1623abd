"""Visibility of native nftables tables: conntrack_facts lists every nf_tables table with its owner and whether the
iptables view covers it, and the audit playbook runs nftables_audit where native tables exist, so their mistakes
are in the fleet report (a host with native rules never gets a clean bill from iptables-save alone)."""
import json
import os

import jsonschema

from netns_lab import REPO_ROOT, namespace_inventory, run_collection_playbook
from nft_lab import load_file, nft_reference


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


SCHEMA = json.load(open(os.path.join(REPO_ROOT, "docs", "audit-report.schema.json")))


def test_facts_list_every_table_by_owner(lab):
    ref = nft_reference()
    ns = lab.add("nfv")  # an iptables-nft rule: ip filter INPUT
    load_file(ns, os.path.join(ref, "firewalld-public.nft"))
    load_file(ns, os.path.join(ref, "docker-29-nftables-published-port.nft"))
    result = ns.run_module("conntrack_facts", {"gather_subset": ["environment"]})
    assert result["_rc"] == 0, result
    env = result["ansible_facts"]["conntrack"]["environment"]
    tables = [(t["family"], t["name"], t["owner"], t["iptables_view"]) for t in env["nft_tables"]]
    assert ("ip", "filter", "iptables-nft", True) in tables, tables
    assert ("inet", "firewalld", "firewalld", False) in tables, tables
    assert ("ip", "docker-bridges", "docker", False) in tables, tables
    assert env["nft_native_tables"] == 2 and env["nft_tables_reason"] is None
    firewalld = [t for t in env["nft_tables"] if t["name"] == "firewalld"][0]
    assert {"name": "filter_INPUT", "type": "filter", "hook": "input", "priority": 10, "policy": "accept"} in \
        firewalld["base_chains"]


def test_audit_playbook_reports_native_nft_findings_and_tables(lab, tmp_path):
    ref = nft_reference()
    native = lab.add("nfn")
    plain = lab.add("nfi")
    load_file(native, os.path.join(ref, "mistake-no-established-accept.nft"))
    inventory = namespace_inventory(tmp_path, [native, plain])
    run = run_collection_playbook("audit", inventory, {
        "conntrack_audit_report_dir": str(tmp_path / "report"), "conntrack_audit_state_dir": str(tmp_path / "state"),
        "conntrack_audit_memory_mb": 8192, "conntrack_audit_cpus": 2, "conntrack_audit_entry_stats": False})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    with open(str(tmp_path / "report" / "conntrack-audit.json")) as handle:
        report = json.load(handle)
    jsonschema.Draft202012Validator(SCHEMA).validate(report)
    hosts = dict((h["host"], h) for h in report["hosts"])
    nat = hosts[native.name]
    assert nat["status"] == "critical", nat["findings"]
    assert [(f["id"], f["source"], f.get("rule")) for f in nat["findings"] if f["source"] == "nftables"] == [
        ("NGNF001", "nftables", "udp dport 53 accept")]
    assert nat["firewall"]["nftables_audited"] is True
    # 'nftables.conf' when this machine's /etc/nftables.conf declares a table inet filter (Debian's does)
    owner = "nftables.conf" if "table inet filter" in (_read("/etc/nftables.conf") or "") else "unknown"
    assert {"family": "inet", "name": "filter", "owner": owner, "iptables_view": False, "rules": 4} in \
        nat["environment"]["nft_tables"]
    clean = hosts[plain.name]
    assert clean["firewall"]["nftables_audited"] is False
    assert [t["owner"] for t in clean["environment"]["nft_tables"]] == ["iptables-nft"]
    assert not [f for f in clean["findings"] if f["id"] in ("NGCA007",) or f["source"] == "nftables"]
    markdown = (tmp_path / "report" / "conntrack-audit.md").read_text()
    assert "inet filter (%s, native, not in the iptables view)" % owner in markdown
