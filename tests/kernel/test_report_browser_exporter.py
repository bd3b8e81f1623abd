"""The fleet report from real hosts, read the way its users read it: the HTML page in headless Chromium (DOM and a
screenshot) and the per-host textfile scraped by Debian's prometheus-node-exporter.

Three namespace hosts carry real traffic: one with its table filled past the critical threshold of a lowered
nf_conntrack_max (host knob, restored by the host_knobs fixture), one with the classic rule mistake (NEW accepted,
no ESTABLISHED,RELATED accept, then a drop), one clean. Their facts, rule audit and entry statistics come from the
collection's modules run inside each namespace; evaluation and rendering are the filters' code.
"""
import os
import re
import shutil
import subprocess

import sys

import pytest

from netns_lab import COLLECTIONS_PATH, http_get

if COLLECTIONS_PATH not in sys.path:
    sys.path.insert(0, COLLECTIONS_PATH)

from ansible_collections.nodeguard.conntrack.plugins.plugin_utils import _audit_eval as ev  # noqa: E402
from ansible_collections.nodeguard.conntrack.plugins.plugin_utils import _report_render as rr  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
ARTIFACTS = os.path.join(os.path.dirname(__file__), "..", "output", "report")
LIMIT = 4096

FILL = r"""
import socket, sys
n = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for port in range(1, n + 1):
    s.sendto(b"x", ("127.0.0.99", port))
"""
HOLD = r"""
import socket, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 8080)); srv.listen(16)
clients = [socket.create_connection(("127.0.0.1", 8080), timeout=5) for _ in range(4)]
peers = [srv.accept()[0] for _ in clients]
print("ready", flush=True)
time.sleep(300)
"""


def _collect(ns):
    facts = ns.run_module("conntrack_facts")
    assert facts["_rc"] == 0, facts
    rules = ns.run_module("iptables_audit", {"families": ["ipv4"]})
    assert rules["_rc"] == 0, rules
    states = ns.run_module("conntrack_info", {"group_by": ["proto", "state"], "top": 0, "limit": 0})
    dnat = ns.run_module("conntrack_info", {"status": ["dnat"], "limit": 0})
    snat = ns.run_module("conntrack_info", {"status": ["snat"], "limit": 0})
    return {"host": ns.name, "facts": facts["ansible_facts"]["conntrack"], "firewall": rules,
            "states": states["groups"], "nat": {"dnat": dnat["total_matched"], "snat": snat["total_matched"]}}


@pytest.fixture(scope="module")
def _tools():
    for tool in (CHROMIUM, NODE_EXPORTER):
        if not os.access(tool, os.X_OK):
            raise AssertionError("%s is missing: run `make bootstrap`" % tool)


@pytest.fixture
def fleet(lab, host_knobs, _tools):
    full = lab.add("full")
    rules = lab.add("rules", conntrack_rule=False)
    clean = lab.add("clean")
    # a lowered global max makes "near full" cheap and real; every netns is checked against it
    with open("/proc/sys/net/netfilter/nf_conntrack_max", "w") as handle:
        handle.write(str(LIMIT))
    full.run(["sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=600"])
    proc = full.python(FILL.replace("sys.argv[1]", str(int(LIMIT * 0.93))))
    assert proc.returncode == 0, proc.stderr
    rules.run(["iptables", "-w", "-A", "INPUT", "-p", "tcp", "--dport", "80", "-m", "conntrack", "--ctstate", "NEW",
               "-j", "ACCEPT"])
    rules.run(["iptables", "-w", "-A", "INPUT", "-j", "DROP"])
    hold = clean.spawn([shutil.which("python3"), "-c", HOLD], stdout=subprocess.PIPE, text=True)
    assert hold.stdout.readline().strip() == "ready"
    results = []
    for ns in (full, rules, clean):
        data = _collect(ns)
        results.append(ev.evaluate(data, {"sizing": {"peak_flows": 3000, "memory_mb": 16384, "cpus": 2}}
                                   if ns is full else None))
    report = ev.fleet(results, missing=["unreachable-host"])
    return {"report": report, "names": {"full": full.name, "rules": rules.name, "clean": clean.name}}


def test_report_evaluates_the_real_hosts(fleet):
    report, names = fleet["report"], fleet["names"]
    by_host = dict((h["host"], h) for h in report["hosts"])
    full = by_host[names["full"]]
    assert full["usage"]["max"] == LIMIT and full["usage"]["count"] >= int(LIMIT * 0.93)
    assert full["status"] == "critical" and "NGCA001" in [f["id"] for f in full["findings"]]
    assert full["sizing"]["verdict"] == "below_headroom"  # 3000 <= 4096 < 3000 x 1.5
    rules = by_host[names["rules"]]
    assert [f["id"] for f in rules["findings"] if f["severity"] == "critical"] == ["NGCT001"]
    clean = by_host[names["clean"]]
    assert clean["status"] == "ok"
    assert {"proto": "tcp", "state": "ESTABLISHED", "count": 4} in clean["states"]


def _chromium(args, profile):
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--user-data-dir=%s" % profile]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=120, check=False)


def test_html_report_in_headless_chromium(fleet, tmp_path):
    report = fleet["report"]
    page = tmp_path / "conntrack-audit.html"
    page.write_text(rr.render_html(report), encoding="utf-8")
    url = "file://%s" % page
    dom = _chromium(["--dump-dom", url], str(tmp_path / "profile-dom"))
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    # every host section, every finding, the missing host and one chart per host section and overview row
    for host in report["hosts"]:
        section = re.search(r'<section class="host status-%s" id="host-\d+" data-host="%s"' % (
            host["status"], re.escape(host["host"])), html)
        assert section, host["host"]
        for finding in host["findings"]:
            assert re.search(r'data-id="%s" data-severity="%s"' % (finding["id"], finding["severity"]), html)
    assert 'data-host="unreachable-host"' in html
    assert html.count('<svg class="usage-chart"') == 2 * len(report["hosts"])
    assert "NGCT001" in html and "--dport 80" in html
    shot = tmp_path / "report.png"
    result = _chromium(["--screenshot=%s" % shot, "--window-size=1280,2200", "--hide-scrollbars", url],
                       str(tmp_path / "profile-shot"))
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000
    os.makedirs(ARTIFACTS, exist_ok=True)
    shutil.copy(str(shot), os.path.join(ARTIFACTS, "report.png"))
    shutil.copy(str(page), os.path.join(ARTIFACTS, "conntrack-audit.html"))


def test_textfile_scraped_by_node_exporter(fleet, lab, tmp_path):
    report = fleet["report"]
    textdir = tmp_path / "textfile"
    textdir.mkdir()
    # one file per host, as each host would have in its own textfile directory
    for index, host in enumerate(report["hosts"]):
        (textdir / ("host%d.prom" % index)).write_text(rr.render_textfile(host, prefix="ngct%d" % index))
    # the exporter runs in a namespace of its own: its loopback port cannot collide with anything on the machine
    scraper = lab.add("scrape", conntrack_rule=False)
    scraper.spawn([NODE_EXPORTER, "--web.listen-address=127.0.0.1:9100", "--collector.disable-defaults",
                   "--collector.textfile", "--collector.textfile.directory=%s" % textdir])
    body = http_get(scraper, "http://127.0.0.1:9100/metrics")
    assert "node_textfile_scrape_error 0" in body, [l for l in body.splitlines() if "textfile" in l]
    for index, host in enumerate(report["hosts"]):
        prefix = "ngct%d" % index
        assert "%s_audit_status %d" % (prefix, rr.LEVEL_VALUES[host["status"]]) in body
        assert "%s_stat_clash_resolve_total %d" % (prefix, host["counters"]["clash_resolve"]) in body
        assert "%s_stat_chaintoolong_total %d" % (prefix, host["counters"]["chaintoolong"]) in body
        assert '%s_nat_entries{type="dnat"} %d' % (prefix, host["nat"]["dnat"]) in body
        for state in host["states"]:
            line = '%s_entries_by_state{proto="%s",state="%s"} %d' % (
                prefix, state["proto"], state["state"], state["count"])
            assert line in body
    assert re.search(r'node_textfile_mtime_seconds\{file="[^"]*host0\.prom"\}', body)
