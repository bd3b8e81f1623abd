"""Fleet audit on the lab: the reports written before and after hardening, checked host by host against what the
kernel says (/proc, conntrack-tools, iptables) on each lab host."""
import json
import os

import jsonschema
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
SCHEMA = json.load(open(os.path.join(ROOT, "docs", "audit-report.schema.json")))
REPORTS = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "reports")


def _report(phase):
    with open(os.path.join(REPORTS, phase, "conntrack-audit.json")) as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def before():
    return _report("before")


@pytest.fixture(scope="module")
def after():
    return _report("after")


def _host(report, name):
    found = [h for h in report["hosts"] if h["host"] == name]
    assert len(found) == 1, [h["host"] for h in report["hosts"]]
    return found[0]


def _ids(result, severity=None):
    return sorted(f["id"] for f in result["findings"] if severity is None or f["severity"] == severity)


@pytest.mark.parametrize("phase", ["before", "after"])
def test_reports_match_the_schema_and_hold_every_host(phase):
    report = _report(phase)
    jsonschema.Draft202012Validator(SCHEMA).validate(report)
    assert sorted(h["host"] for h in report["hosts"]) == ["audit-clean", "audit-full", "audit-rules"]
    assert report["missing_hosts"] == []
    html = open(os.path.join(REPORTS, phase, "conntrack-audit.html")).read()
    markdown = open(os.path.join(REPORTS, phase, "conntrack-audit.md")).read()
    for name in ("audit-clean", "audit-full", "audit-rules"):
        assert 'data-host="%s"' % name in html
        assert name in markdown


def test_host_facts_in_the_report_are_the_kernel_s(host, after):
    """Static per-host values: kernel release, netns, the global max, the counters source."""
    result = _host(after, host.backend.name)
    assert result["environment"]["kernel_release"] == host.check_output("uname -r")
    assert result["environment"]["netns_inode"] == int(host.check_output("stat -L -c %i /proc/self/ns/net"))
    assert result["environment"]["init_netns"] is False
    assert result["usage"]["max"] == int(host.file("/proc/sys/net/netfilter/nf_conntrack_max").content_string)
    assert result["counters_source"] == "netlink"
    # counters that only rise: the report's value is not above what conntrack-tools sees now, and the loss
    # counters are the same (nothing on these hosts drops)
    now = {}
    for line in host.check_output("conntrack -S").splitlines():
        for field in line.split()[1:]:
            key, value = field.split("=")
            now[key] = now.get(key, 0) + int(value)
    for name in ("drop", "early_drop", "insert_failed", "chaintoolong"):
        assert result["counters"][name] == now[name], name
    for name in ("found", "invalid", "search_restart", "clash_resolve"):
        assert result["counters"][name] <= now[name], name


def test_near_full_host_was_critical_with_its_real_count(before):
    full = _host(before, "audit-full")
    assert full["status"] == "critical"
    assert "NGCA001" in _ids(full, "critical")
    usage = full["usage"]
    assert usage["usage_pct"] >= 90 and usage["level"] == "critical"
    # the load generator sent 92 % of max one-way UDP flows; all of them were in the table when audited
    assert usage["count"] >= usage["max"] * 92 // 100
    udp = [s for s in full["states"] if s["proto"] == "udp"]
    assert udp and udp[0]["count"] >= usage["max"] * 92 // 100
    assert before["summary"]["near_full"] == ["audit-full"]


def test_faulty_rule_set_was_flagged_with_the_right_finding(before):
    rules = _host(before, "audit-rules")
    ngct001 = [f for f in rules["findings"] if f["id"] == "NGCT001"]
    assert ngct001, rules["findings"]
    assert ngct001[0]["severity"] == "critical" and ngct001[0]["original_severity"] == "high"
    assert "--dport 80" in ngct001[0]["rule"] and "NEW" in ngct001[0]["rule"]
    assert ngct001[0]["fix"]
    assert before["summary"]["rule_findings"] == ["audit-rules"]
    assert _host(before, "audit-clean")["status"] == "ok"
    assert before["summary"]["status"] == "critical"


def test_first_audit_is_a_baseline_second_compares(before, after):
    for name in ("audit-clean", "audit-full", "audit-rules"):
        assert _host(before, name)["deltas"]["baseline"] is True
        deltas = _host(after, name)["deltas"]
        assert deltas["baseline"] is False and deltas["reset"] is False
        assert deltas["elapsed_seconds"] > 0


def test_re_audit_after_harden_and_flush_is_clean(after):
    for result in after["hosts"]:
        assert result["status"] == "ok", (result["host"], result["findings"])
        assert [f for f in result["findings"] if f["severity"] != "info"] == []
        assert result["sizing"]["verdict"] == "sufficient"
    assert after["summary"]["status"] == "ok"
    # the retired backend's entries are gone from the full host
    assert _host(after, "audit-full")["usage"]["count"] < 1000


def test_baseline_jump_is_first_and_other_rules_stay(host):
    """harden put the baseline's jump first on every host and removed nobody's rules (the faulty host keeps its
    port 80 rule, now behind the baseline's RELATED,ESTABLISHED accept)."""
    rules = host.check_output("iptables -S INPUT").splitlines()
    assert rules[1] == '-A INPUT -m comment --comment "nodeguard.conntrack baseline" -j NG-CT-INPUT', rules
    assert any("--dport 80" in r for r in rules) == (host.backend.name == "audit-rules"), rules
    chain = host.check_output("iptables -S NG-CT-INPUT")
    assert "--ctstate RELATED,ESTABLISHED -j ACCEPT" in chain


def test_textfile_for_node_exporter(host, after):
    prom = host.file("/var/lib/prometheus/node-exporter/nodeguard_conntrack.prom")
    assert prom.exists and prom.mode == 0o644
    text = prom.content_string
    assert "nodeguard_conntrack_audit_status 0" in text
    result = _host(after, host.backend.name)
    assert "nodeguard_conntrack_stat_clash_resolve_total %d" % result["counters"]["clash_resolve"] in text
    assert 'nodeguard_conntrack_nat_entries{type="dnat"} %d' % result["nat"]["dnat"] in text


def test_diagnose_bundle_of_the_clean_host(host):
    """diagnose ran for audit-clean only: one directory and one tar.gz, with what the host's kernel says."""
    import glob
    import tarfile
    runs = glob.glob(os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "diagnose", "*"))
    assert len(runs) == 1, runs
    bundle = os.path.join(runs[0], host.backend.name)
    if host.backend.name != "audit-clean":
        assert not os.path.exists(bundle)
        return
    names = sorted(os.listdir(bundle))
    assert names == ["counters.json", "entries_by_state.json", "facts.json", "iptables_counters.txt",
                     "kernel_conntrack_messages.txt", "nat_mappings.json", "top_destinations.json", "top_sources.json"]
    with tarfile.open(bundle + ".tar.gz") as tar:
        assert sorted(m.name for m in tar.getmembers() if m.isfile()) == ["audit-clean/" + n for n in names]
    top = json.load(open(os.path.join(bundle, "top_destinations.json")))["groups"]
    held = [g for g in top if g["key"] == {"proto": "tcp", "orig_dst": "127.0.0.1", "orig_dport": 8080}]
    # the five connections prepare holds open, as conntrack-tools counts them
    oracle = host.check_output("conntrack -L -p tcp --dport 8080 2>/dev/null | wc -l")
    assert held and held[0]["count"] == int(oracle) == 5
    nat = json.load(open(os.path.join(bundle, "nat_mappings.json")))
    assert nat["address"] == "127.0.0.1" and nat["to_address"]["total_matched"] >= 5
    rules = open(os.path.join(bundle, "iptables_counters.txt")).read()
    assert "### iptables-nft-save -c" in rules and "-j NG-CT-INPUT" in rules and "[" in rules
    counters = json.load(open(os.path.join(bundle, "counters.json")))
    assert counters["counters_source"] == "netlink" and len(counters["counters_per_cpu"]) >= 1
    kernel = open(os.path.join(bundle, "kernel_conntrack_messages.txt")).read()
    assert kernel.strip(), "the bundle says what it found, or why the kernel log was not readable"
