"""Report renderers: JSON against the JSON Schema, Markdown and HTML escaping, the text summary, the textfile."""
import copy
import html.parser
import json
import os
import re

import jsonschema
import pytest

from ansible_collections.nodeguard.conntrack.plugins.plugin_utils import _audit_eval as ev
from ansible_collections.nodeguard.conntrack.plugins.plugin_utils import _report_render as rr

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
SCHEMA = json.load(open(os.path.join(ROOT, "docs", "audit-report.schema.json")))
EVIL = '<script>alert("x")</script> | *bold* [link](http://e) `tick` & "q" \'s\n# heading'


def _facts(count, counters=None):
    return {"available": True,
            "limits": {"max": 1000, "count": count, "usage_pct": count / 10.0, "buckets": 512},
            "counters": dict(dict((n, 0) for n in ev.COUNTER_NAMES), **(counters or {})), "counters_source": "netlink",
            "environment": {"kernel_release": "6.12.0", "container": None, "init_netns": True, "netns_inode": 1,
                            "iptables_backend": "nft", "writable_knobs": ["max"], "readonly_knobs": ["count"]}}


def _fleet(evil=False, fail_on="none"):
    full = ev.evaluate({"host": "full-1", "facts": _facts(950), "states": [{"key": {"proto": "udp", "state": None}, "count": 940}],
                        "nat": {"dnat": 2, "snat": 0}}, {"sizing": {"peak_flows": 2000, "memory_mb": 4096, "cpus": 2}}, now=100)
    first = ev.evaluate({"host": "rules-2", "facts": _facts(10, {"drop": 1})}, now=50)
    rules_facts = _facts(10, {"drop": 4})
    rules_facts["environment"]["nft_tables"] = [
        {"family": "inet", "name": EVIL if evil else "firewalld", "owner": "firewalld", "iptables_view": False,
         "rules": 9}]
    rules = ev.evaluate({"host": EVIL if evil else "rules-2", "facts": rules_facts, "nftables": {
        "findings": [{"id": "NGNF003", "severity": "low", "title": "invalid drop", "detail": "d", "fix": "f",
                      "family": "inet", "table": "firewalld", "chain": "filter_FORWARD", "position": 4,
                      "rule": "ct state invalid drop"}], "summary": {"low": 1}, "source": "nft -j list ruleset",
        "skipped": ""}, "firewall": {
        "findings": [{"id": "NGCT001", "severity": "high", "title": EVIL if evil else "NEW accepted",
                      "detail": EVIL if evil else "detail", "fix": EVIL if evil else "fix it",
                      "rule": EVIL if evil else "-A INPUT -p tcp --dport 80 -m conntrack --ctstate NEW -j ACCEPT",
                      "family": "ipv4", "backend": "nft", "table": "filter", "chain": "INPUT", "position": 1,
                      "affects": EVIL if evil else "ipv4 INPUT replies to this host's connections: dropped"}],
        "summary": {"high": 1}, "sources": ["/usr/sbin/iptables-nft-save"], "skipped": []}},
        previous=ev.state_record(first), now=100)
    clean = ev.evaluate({"host": "clean-3", "facts": _facts(1)}, now=100)
    return ev.fleet([clean, rules, full], missing=["gone-4"], now=200, fail_on=fail_on)


@pytest.mark.parametrize("evil", [False, True])
def test_json_validates_against_the_schema(evil):
    report = json.loads(rr.render_json(_fleet(evil)))
    jsonschema.Draft202012Validator(SCHEMA).validate(report)
    assert report["schema_version"] == "1.0"
    assert [h["host"] for h in report["hosts"]][0] == "full-1"


def test_schema_rejects_what_it_should():
    validator = jsonschema.Draft202012Validator(SCHEMA)
    report = json.loads(rr.render_json(_fleet()))
    for mutate in (lambda r: r.pop("schema_version"), lambda r: r.__setitem__("schema_version", "2.0"),
                   lambda r: r["hosts"][0].__setitem__("status", "bad"),
                   lambda r: r["hosts"][0]["findings"][0].__setitem__("id", "X1"),
                   lambda r: r["hosts"][0]["usage"].__setitem__("count", -1),
                   lambda r: r["summary"].__setitem__("extra", 1)):
        broken = copy.deepcopy(report)
        mutate(broken)
        assert list(validator.iter_errors(broken)), mutate


class _Collector(html.parser.HTMLParser):
    def __init__(self):
        html.parser.HTMLParser.__init__(self)
        self.tags = []
        self.text = []
        self.attrs = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend(attrs)

    def handle_data(self, data):
        self.text.append(data)


def test_html_is_self_contained_and_holds_every_host_and_finding():
    report = _fleet()
    page = rr.render_html(report)
    parser = _Collector()
    parser.feed(page)
    assert "script" not in parser.tags and "link" not in parser.tags and "img" not in parser.tags
    assert not re.search(r"(src|href)=\"(https?:|//)", page)
    assert parser.tags.count("svg") == 2 * len(report["hosts"])  # overview row + host section
    for host in report["hosts"]:
        assert 'data-host="%s"' % host["host"] in page
        for finding in host["findings"]:
            assert 'data-id="%s"' % finding["id"] in page
    assert 'data-host="gone-4"' in page and "missing" in page
    assert "threshold-warning" in page and "threshold-critical" in page
    assert "<b>Affects:</b> ipv4 INPUT replies to this host&#x27;s connections: dropped" in page
    assert "  - affects: ipv4 INPUT replies to this host's connections: dropped" in rr.render_markdown(report)


def test_html_escapes_everything():
    page = rr.render_html(_fleet(evil=True))
    parser = _Collector()
    parser.feed(page)
    assert "script" not in parser.tags
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    # the evil host name is an attribute value and text, never markup
    assert any(name == "data-host" and value == EVIL for name, value in parser.attrs)
    assert EVIL.replace("\n", "") in "".join(parser.text).replace("\n", "")


def test_usage_bar_width_follows_usage():
    svg = rr.usage_svg({"usage_pct": 50.0, "count": 5, "max": 10, "level": "ok", "warning_pct": 75, "critical_pct": 90},
                       width=116)
    # inner width 100 px: half full
    assert 'class="usage-bar" x="8" y="14" width="50.0"' in svg
    assert 'x1="83.0"' in svg and 'x1="98.0"' in svg
    over = rr.usage_svg({"usage_pct": 130.0, "level": "critical", "warning_pct": 75, "critical_pct": 90}, width=116)
    assert 'width="100.0"' in over
    assert "usage unknown" in rr.usage_svg({"usage_pct": None})


def _table_after(lines, header):
    start = lines.index(header)
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append(line)
    return table


def test_markdown_table_and_escaping():
    text = rr.render_markdown(_fleet(evil=True))
    lines = text.splitlines()
    table = _table_after(lines, "| host | status | usage % | count / max | rising since last audit | sizing | findings |")
    assert len(table) == 2 + 3  # header, separator, the two hosts that need attention and the missing one
    ok_table = _table_after(lines, "| host | usage % | count / max | rising since last audit | entries by state | "
                                   "NAT dnat / snat | findings |")
    assert len(ok_table) == 2 + 1 and ok_table[2].startswith("| clean-3 |")
    for rows in (table, ok_table):
        header_cells = rows[0].count("|")
        for row in rows:
            # escaped pipes do not add cells
            assert len(re.findall(r"(?<!\\)\|", row)) == header_cells, row
    # raw text only inside a code span (CommonMark shows code spans literally, markup included)
    outside = re.sub(r"(`+) .*? \1", "", text)
    assert "`` %s ``" % EVIL.replace("\n", " ").replace("|", "\\|") in text
    assert "<script>" not in outside
    assert "\\*bold\\*" in text and "\\[link\\]" in text
    assert "\n\\# heading" not in text and "\n# heading" not in text
    assert "| gone-4 | missing |" in text
    plain = rr.render_markdown(_fleet())
    assert "### full-1 — critical" in plain
    assert "`` -A INPUT -p tcp --dport 80 -m conntrack --ctstate NEW -j ACCEPT ``" not in plain
    assert "` -A INPUT -p tcp --dport 80 -m conntrack --ctstate NEW -j ACCEPT `" in plain
    assert "drop \\+3" in plain


def test_markdown_lists_the_hosts_that_need_attention_first():
    text = rr.render_markdown(_fleet())
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == ["# Conntrack fleet audit", "## Hosts that need attention (3)", "## Findings across the fleet",
                        "## Details of the hosts that need attention", "### full-1 — critical",
                        "### rules-2 — critical", "## Hosts that are ok (1)"]
    attention = text.index("## Hosts that need attention")
    assert attention < text.index("| full-1 |") < text.index("| rules-2 |") < text.index("| gone-4 |") \
        < text.index("| clean-3 |")
    assert "| NGCT001 | critical | 1 | NEW accepted |" in text
    assert "| NGCA001 | critical | 1 |" in text
    # an ok host is one line (its details are in the JSON and HTML), not a section
    assert "### clean-3" not in text
    calm = rr.render_markdown(ev.fleet([ev.evaluate({"host": "a", "facts": _facts(1)}, now=1)], now=2))
    assert "## Hosts that need attention (0)\n\nNone: every host is ok." in calm


def test_md_code_cannot_be_broken_out_of():
    assert rr.md_code("a`b``c") == "``` a`b``c ```"


def test_text_summary():
    text = rr.render_text(_fleet(fail_on="critical"))
    lines = text.splitlines()
    assert lines[0].startswith("fleet critical: 3 hosts, 2 critical, 0 warning, 1 ok, 1 missing")
    assert "gate FAILED" in lines[0]
    assert lines[2].split()[:2] == ["full-1", "critical"]
    assert "rules-2" in text and "drop +3" in text and "gone-4" in text
    assert "\x1b" not in rr.render_text(_fleet(evil=True))


def test_renderers_refuse_other_input():
    for render in (rr.render_json, rr.render_markdown, rr.render_html, rr.render_text):
        with pytest.raises(rr.RenderError):
            render({"hosts": 3})
    with pytest.raises(rr.RenderError):
        rr.render_textfile({"x": 1})
    with pytest.raises(rr.RenderError):
        rr.render_textfile(_fleet()["hosts"][0], prefix="bad-prefix")


PROM_LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})? -?[0-9.e+]+$')


def test_textfile_format_and_values():
    report = _fleet()
    full = report["hosts"][0]
    text = rr.render_textfile(full)
    families = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            families.add(line.split()[2])
        elif not line.startswith("# HELP "):
            assert PROM_LINE.match(line), line
    assert "nodeguard_conntrack_stat_clash_resolve_total 0" in text
    assert 'nodeguard_conntrack_entries_by_state{proto="udp",state="none"} 940' in text
    assert 'nodeguard_conntrack_nat_entries{type="dnat"} 2' in text
    assert "nodeguard_conntrack_audit_status 2" in text
    assert 'nodeguard_conntrack_audit_finding{id="NGCA001",severity="critical"} 1' in text
    # a first audit has no rise information: that family is absent, not zero
    assert "audit_counter_rising" not in text
    rules = [h for h in report["hosts"] if h["host"] == "rules-2"][0]
    assert 'nodeguard_conntrack_audit_counter_rising{counter="drop"} 1' in rr.render_textfile(rules)
    assert all(name.startswith("nodeguard_conntrack_") for name in families)
    assert rr.render_textfile(full, prefix="site_ct").count("site_ct_audit_status") == 3


def test_textfile_label_escaping():
    result = copy.deepcopy(_fleet()["hosts"][0])
    result["states"] = [{"proto": 'u"d\\p\n', "state": "x", "count": 1}]
    line = [l for l in rr.render_textfile(result).splitlines() if l.startswith("nodeguard_conntrack_entries_by_state")][0]
    assert line == 'nodeguard_conntrack_entries_by_state{proto="u\\"d\\\\p\\n",state="x"} 1'
    assert PROM_LINE.match(line)


def test_every_nft_table_is_listed_with_its_owner():
    report = _fleet()
    markdown = rr.render_markdown(report)
    assert "nf_tables tables: inet firewalld (firewalld, native, not in the iptables view)." in markdown
    assert "nf_tables tables: not read." in markdown  # hosts whose facts did not list them say so
    assert "NGNF003" in markdown and "ct state invalid drop" in markdown
    assert 'class="nft-tables">nf_tables tables: inet firewalld (firewalld, native' in rr.render_html(report)
