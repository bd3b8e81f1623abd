"""The HTML report of a 100-host fleet sorts and filters by status and finding in a real browser (headless chromium)
although the page has no script: a probe script added to a COPY of the page clicks each control and records
which overview rows and host sections stay visible and in which order they are laid out.
"""
import json
import re
import subprocess
import sys

from netns_lab import COLLECTIONS_PATH

if COLLECTIONS_PATH not in sys.path:
    sys.path.insert(0, COLLECTIONS_PATH)

from ansible_collections.nodeguard.conntrack.plugins.plugin_utils import _audit_eval as ev  # noqa: E402
from ansible_collections.nodeguard.conntrack.plugins.plugin_utils import _report_render as rr  # noqa: E402

CHROMIUM = "/usr/bin/chromium"

PROBE = r"""
<script>
(function () {
  function visible(el) { return getComputedStyle(el).display !== "none"; }
  function state() {
    var rows = Array.prototype.slice.call(document.querySelectorAll("tr.overview")).filter(visible);
    rows.sort(function (a, b) { return a.getBoundingClientRect().top - b.getBoundingClientRect().top; });
    var sections = Array.prototype.slice.call(document.querySelectorAll("section.host")).filter(visible);
    return {rows: rows.map(function (r) { return r.getAttribute("data-host"); }),
            sections: sections.map(function (s) { return s.getAttribute("data-host"); })};
  }
  var out = {initial: state()};
  var inputs = document.querySelectorAll("#controls input");
  for (var i = 0; i < inputs.length; i++) {
    var input = inputs[i];
    input.click();
    out[input.id] = state();
    // back to the defaults, so each control is observed alone
    document.getElementById(input.name === "status" ? "fs-all" : input.name === "finding" ? "ff-all" : "so-status").click();
  }
  var pre = document.createElement("pre");
  pre.id = "probe-result";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"""


def _facts(count, drop=0):
    return {"available": True, "limits": {"max": 1000, "count": count, "usage_pct": count / 10.0, "buckets": 1000},
            "counters": dict(dict((n, 0) for n in ev.COUNTER_NAMES), drop=drop), "counters_source": "netlink",
            "environment": {"netns_inode": 7}}


def _firewall(ids):
    return {"findings": [{"id": fid, "severity": "high" if fid == "NGCT001" else "medium", "title": fid + " title",
                          "detail": "d", "fix": "f", "rule": "-A INPUT -j ACCEPT", "family": "ipv4",
                          "backend": "nft", "table": "filter", "chain": "INPUT", "position": 1} for fid in ids],
            "summary": {}, "sources": [], "skipped": []}


def _fleet_report():
    """100 hosts: usage from 0 to 99 % by host number, rule findings on some, one host missing."""
    results = []
    for number in range(100):
        ids = (["NGCT001"] if number % 10 == 3 else []) + (["NGCT003"] if number % 7 == 0 else [])
        results.append(ev.evaluate({"host": "node-%03d" % number, "facts": _facts(number * 10),
                                    "firewall": _firewall(ids)}, now=1000))
    return ev.fleet(results, missing=["node-gone"], now=1000)


def _probe(tmp_path, report):
    page = rr.render_html(report)
    assert "<script" not in page  # the report itself stays script-free
    copy = tmp_path / "probe.html"
    copy.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           "--user-data-dir=%s" % (tmp_path / "profile"), "--window-size=1400,1000",
                           "--dump-dom", "file://%s" % copy], capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', proc.stdout, re.S)
    assert found, proc.stdout[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def test_overview_sorts_and_filters_without_script(tmp_path):
    report = _fleet_report()
    by_host = dict((r["host"], r) for r in report["hosts"])
    worst_first = [r["host"] for r in report["hosts"]] + ["node-gone"]
    state = _probe(tmp_path, report)

    assert state["initial"]["rows"] == worst_first and len(worst_first) == 101
    assert state["initial"]["sections"] == worst_first[:-1]
    assert state["so-status"]["rows"] == worst_first

    by_usage = sorted(by_host, key=lambda host: (-by_host[host]["usage"]["usage_pct"], host)) + ["node-gone"]
    assert state["so-usage"]["rows"] == by_usage
    assert state["so-host"]["rows"] == sorted(by_host) + ["node-gone"]
    by_findings = sorted(by_host, key=lambda host: (-len(by_host[host]["findings"]), host)) + ["node-gone"]
    assert state["so-findings"]["rows"] == by_findings

    for status in ("critical", "warning", "ok"):
        expected = [host for host in worst_first[:-1] if by_host[host]["status"] == status]
        assert expected, status  # the fleet has hosts of every status
        assert state["fs-" + status]["rows"] == expected
        assert state["fs-" + status]["sections"] == expected
    assert state["fs-missing"] == {"rows": ["node-gone"], "sections": []}

    finding_ids = sorted(set(f["id"] for r in report["hosts"] for f in r["findings"]))
    assert "NGCT001" in finding_ids and "NGCT003" in finding_ids and "NGCA001" in finding_ids
    for index, fid in enumerate(finding_ids):
        expected = [host for host in worst_first[:-1] if fid in [f["id"] for f in by_host[host]["findings"]]]
        assert state["ff-%d" % index]["rows"] == expected, fid
        assert state["ff-%d" % index]["sections"] == expected, fid
