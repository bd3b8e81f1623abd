# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render the fleet audit report (built by ``_audit_eval.fleet``) as JSON, Markdown or one self-contained HTML
page, and one host's result as a node_exporter textfile.

Private to the collection. Pure: a report in, text out. Every value that comes from a host or the inventory is
escaped for the output format (HTML text and attributes, Markdown, Prometheus label values). The HTML page has no
external asset: inline CSS and inline SVG only, no script. Its overview sorts and filters without script: radio
buttons and CSS (``:has()``, ``order`` in a grid), the rows carrying precomputed sort ranks and finding indices, so
no host-provided text ever reaches a selector. A browser without ``:has()`` shows everything, unsorted.
"""

import html
import json
import re

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import InputError

LEVEL_COLOURS = {"ok": "#2e7d32", "warning": "#ef8f00", "critical": "#c62828", "info": "#546e7a"}
LEVEL_VALUES = {"ok": 0, "warning": 1, "critical": 2}
WATCHED = ("drop", "insert_failed", "early_drop", "chaintoolong", "clash_resolve", "invalid", "search_restart", "error",
           "found", "insert")


class RenderError(InputError):
    """Input a renderer cannot use (not a fleet/host result, a bad prefix)."""


def _check(report):
    if not isinstance(report, dict) or "schema_version" not in report or not isinstance(report.get("hosts"), list):
        raise RenderError(None, "input is not a fleet report built by conntrack_audit_fleet")


def _num(value, digits=None):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return "{:,}".format(value)
    if isinstance(value, float):
        return ("%." + str(digits if digits is not None else 2) + "f") % value
    return str(value)


# ---------------------------------------------------------------------------------------------------- JSON


def render_json(report):
    _check(report)
    return json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------------------------- text


def _plain(value):
    return re.sub(r"[\x00-\x1f\x7f]", "?", "-" if value is None else str(value))


def render_text(report):
    """A fixed-width summary for a terminal or a CI log (control characters replaced)."""
    _check(report)
    summary = report["summary"]
    lines = ["fleet %s: %d hosts, %d critical, %d warning, %d ok, %d missing (thresholds %s/%s %%, fail on %s%s)" % (
        _plain(summary["status"]), summary["hosts"], summary["critical"], summary["warning"], summary["ok"],
        summary["missing"], _plain(report["thresholds"]["warning_pct"]), _plain(report["thresholds"]["critical_pct"]),
        _plain(report["fail_on"]), ", gate FAILED" if report.get("gate_failed") else ""),
        "%-24s %-8s %7s %9s %9s  %-22s %-14s %s" % (
            "host", "status", "usage%", "count", "max", "rising", "sizing", "findings")]
    for result in report["hosts"]:
        usage = result["usage"]
        lines.append("%-24s %-8s %7s %9s %9s  %-22s %-14s %s" % (
            _plain(result["host"]), _plain(result["status"]), _plain(_num(usage["usage_pct"])),
            _plain(_num(usage["count"])), _plain(_num(usage["max"])), _plain(_rising_text(result)),
            _plain(result["sizing"]["verdict"] if result.get("sizing") else "-"),
            _plain(",".join(sorted(set(f["id"] for f in result["findings"]))) or "-")))
    for host in report.get("missing_hosts") or []:
        lines.append("%-24s %-8s" % (_plain(host), "missing"))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------- Markdown

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+!|~])")


def md(value):
    """Escape text for a Markdown paragraph or table cell (pipes, emphasis, HTML, links); newlines become spaces."""
    text = "-" if value is None else str(value)
    text = text.replace("\r", " ").replace("\n", " ")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return html.escape(text, quote=False).replace("\\&lt;", "&lt;").replace("\\&gt;", "&gt;")


def md_code(value):
    """Inline code span that cannot be broken out of: the fence is longer than any backtick run inside."""
    text = ("" if value is None else str(value)).replace("\r", " ").replace("\n", " ").replace("|", "\\|")
    longest = max([len(run) for run in re.findall(r"`+", text)] + [0])
    fence = "`" * (longest + 1)
    return "%s %s %s" % (fence, text, fence)


def _rising_text(result):
    deltas = result.get("deltas") or {}
    if deltas.get("baseline"):
        return "baseline"
    if deltas.get("reset"):
        return "reset"
    parts = []
    for name in result.get("rising") or []:
        delta = ((deltas.get("counters") or {}).get(name) or {}).get("delta")
        parts.append("%s +%s" % (name, _num(delta)))
    return ", ".join(parts) if parts else "none"


def _tables_text(env, escape):
    """One line listing every nf_tables table by family, owner and whether the iptables view covers it."""
    tables = env.get("nft_tables")
    if tables is None:
        return "nf_tables tables: not read."
    if not tables:
        return "nf_tables tables: none."
    return "nf_tables tables: " + ", ".join(
        "%s %s (%s, %s)" % (escape(t.get("family")), escape(t.get("name")), escape(t.get("owner")),
                            "in the iptables view" if t.get("iptables_view") else "native, not in the iptables view")
        for t in tables) + "."


def _findings_text(result):
    return ", ".join(sorted(set(f["id"] for f in result["findings"]))) or "none"


def _states_text(result):
    return ", ".join("%s/%s %s" % (s["proto"], s["state"], _num(s["count"])) for s in result.get("states") or []) or "-"


def _md_host_section(result):
    lines = ["", "### %s — %s" % (md(result["host"]), md(result["status"])), ""]
    env = result.get("environment") or {}
    lines.append("Kernel %s, container %s, init netns %s, iptables %s, counters from %s, collected %s." % (
        md(env.get("kernel_release")), md(env.get("container") or "none"), md(env.get("init_netns")),
        md(env.get("iptables_backend")), md(result.get("counters_source")), md(result.get("collected_at"))))
    lines.append("")
    lines.append(_tables_text(env, md))
    lines.append("")
    if result["findings"]:
        for item in result["findings"]:
            lines.append("- **%s** %s: %s — %s" % (
                md(item["id"]), md(item["severity"]), md(item["title"]), md(item["detail"])))
            if item.get("rule"):
                lines.append("  - rule (%s %s %s): %s" % (md(item.get("family")), md(item.get("backend")),
                                                          md(item.get("table")), md_code(item["rule"])))
            if item.get("affects"):
                lines.append("  - affects: %s" % md(item["affects"]))
            lines.append("  - fix: %s" % md(item["fix"]))
    else:
        lines.append("No findings.")
    counters = result.get("counters") or {}
    deltas = (result.get("deltas") or {}).get("counters") or {}
    lines += ["", "| counter | value | change since last audit |", "|---|---:|---:|"]
    for name in WATCHED:
        if name in counters:
            lines.append("| %s | %s | %s |" % (md(name), md(_num(counters.get(name))),
                                               md(_num((deltas.get(name) or {}).get("delta")))))
    if result.get("states"):
        lines += ["", "Entries by protocol and state: " + ", ".join(
            "%s/%s %s" % (md(s["proto"]), md(s["state"]), md(_num(s["count"]))) for s in result["states"])]
    if result.get("nat"):
        lines += ["", "NAT entries: dnat %s, snat %s." % (md(_num(result["nat"]["dnat"])),
                                                          md(_num(result["nat"]["snat"])))]
    sizing = result.get("sizing")
    if sizing:
        lines += ["", "Sizing: peak demand %s x headroom %s = %s needed; live max %s; recommended max %s, "
                      "buckets %s (%s)." % (md(_num(sizing["demand"])), md(sizing["headroom"]),
                                            md(_num(sizing["needed_max"])), md(_num(sizing["live_max"])),
                                            md(_num(sizing["recommended_max"])),
                                            md(_num(sizing["recommended_buckets"])), md(sizing["verdict"]))]
    return lines


def render_markdown(report):
    """Hosts that need attention (warning, critical, missing) first, each with its findings, counters and fixes;
    then the findings across the fleet; then one line per host that is ok (the JSON and HTML have their details)."""
    _check(report)
    summary = report["summary"]
    thresholds = report["thresholds"]
    attention = [r for r in report["hosts"] if r["status"] != "ok"]
    fine = [r for r in report["hosts"] if r["status"] == "ok"]
    missing = report.get("missing_hosts") or []
    lines = [
        "# Conntrack fleet audit",
        "",
        "Generated %s by %s, schema %s. Fleet status: **%s** (%d hosts: %d ok, %d warning, %d critical, %d missing)."
        % (md(report["generated_at"]), md(report["generator"]), md(report["schema_version"]), md(summary["status"]),
           summary["hosts"], summary["ok"], summary["warning"], summary["critical"], summary["missing"]),
        "",
        "Thresholds: warning at %s %% of max, critical at %s %%. Gate: fail on %s%s." % (
            md(thresholds["warning_pct"]), md(thresholds["critical_pct"]), md(report["fail_on"]),
            " (**failed**)" if report.get("gate_failed") else ""),
        "",
        "## Hosts that need attention (%d)" % (len(attention) + len(missing)),
        "",
    ]
    if attention or missing:
        lines += ["| host | status | usage % | count / max | rising since last audit | sizing | findings |",
                  "|---|---|---:|---:|---|---|---|"]
        for result in attention:
            usage = result["usage"]
            sizing = result.get("sizing")
            lines.append("| %s | %s | %s | %s / %s | %s | %s | %s |" % (
                md(result["host"]), md(result["status"]), md(_num(usage["usage_pct"])), md(_num(usage["count"])),
                md(_num(usage["max"])), md(_rising_text(result)), md(sizing["verdict"] if sizing else "not declared"),
                md(_findings_text(result))))
        for host in missing:
            lines.append("| %s | missing | - | - | - | - | did not report |" % md(host))
    else:
        lines.append("None: every host is ok.")
    by_id = {}
    for result in report["hosts"]:
        for item in result["findings"]:
            entry = by_id.setdefault(item["id"], {"title": item["title"], "severities": set(), "hosts": []})
            entry["severities"].add(item["severity"])
            if result["host"] not in entry["hosts"]:
                entry["hosts"].append(result["host"])
    if by_id:
        lines += ["", "## Findings across the fleet", "", "| finding | severity | hosts | title |", "|---|---|---:|---|"]
        for fid in sorted(by_id):
            entry = by_id[fid]
            lines.append("| %s | %s | %d | %s |" % (md(fid), md(", ".join(sorted(entry["severities"]))),
                                                    len(entry["hosts"]), md(entry["title"])))
    if attention:
        lines += ["", "## Details of the hosts that need attention"]
        for result in attention:
            lines += _md_host_section(result)
    lines += ["", "## Hosts that are ok (%d)" % len(fine), ""]
    if fine:
        lines += ["| host | usage % | count / max | rising since last audit | entries by state | NAT dnat / snat | findings |",
                  "|---|---:|---:|---|---|---:|---|"]
        for result in fine:
            usage = result["usage"]
            nat = result.get("nat") or {}
            lines.append("| %s | %s | %s / %s | %s | %s | %s / %s | %s |" % (
                md(result["host"]), md(_num(usage["usage_pct"])), md(_num(usage["count"])), md(_num(usage["max"])),
                md(_rising_text(result)), md(_states_text(result)), md(_num(nat.get("dnat"))),
                md(_num(nat.get("snat"))), md(_findings_text(result))))
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------- HTML


def h(value):
    return html.escape("" if value is None else str(value), quote=True)


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f4f6f8;color:#1d2327}
header{background:#1d2b36;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:22px}
main{padding:18px 28px;max-width:1200px}
.badge{display:inline-block;padding:1px 9px;border-radius:10px;color:#fff;font-weight:600;font-size:12px;
text-transform:uppercase;letter-spacing:.03em}
.ok{background:#2e7d32}.warning{background:#ef8f00}.critical{background:#c62828}.info{background:#546e7a}
.badge.missing{background:#6a1b9a}
table{border-collapse:collapse;background:#fff;margin:8px 0 14px;width:100%}
th,td{border:1px solid #dde3e8;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#eef2f5;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
section.host{background:#fff;border:1px solid #dde3e8;border-left:6px solid #546e7a;border-radius:4px;
padding:10px 18px;margin:16px 0}
section.host.status-ok{border-left-color:#2e7d32}section.host.status-warning{border-left-color:#ef8f00}
section.host.status-critical{border-left-color:#c62828}
section.host h2{margin:4px 0 6px;font-size:18px}
.meta{color:#5a6670;font-size:12px}
ul.findings{padding-left:0;list-style:none}
li.finding{border:1px solid #e3e8ec;border-radius:4px;padding:6px 10px;margin:6px 0;background:#fbfcfd}
li.finding .fix{margin-top:4px;color:#234}
code{background:#eef2f5;padding:1px 4px;border-radius:3px;font-size:12px;word-break:break-all}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:8px 0 4px}
.card{background:#fff;border:1px solid #dde3e8;border-radius:4px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:22px}
.cols{display:flex;gap:18px;flex-wrap:wrap}.cols>div{flex:1 1 320px}
.controls{background:#fff;border:1px solid #dde3e8;border-radius:4px;padding:8px 12px;margin:8px 0}
.controls fieldset{border:0;margin:0;padding:3px 0;display:flex;flex-wrap:wrap;gap:4px 12px;align-items:center}
.controls legend{float:left;font-weight:600;min-width:64px;padding:0}
.controls label{cursor:pointer;white-space:nowrap}
table.overview tbody{display:flex;flex-direction:column}
table.overview tr{display:grid;grid-template-columns:minmax(140px,1.3fr) 96px 250px minmax(110px,1fr) minmax(120px,1.2fr)
minmax(90px,.8fr) minmax(100px,1fr)}
table.overview tr.head{order:-1}
table.overview td,table.overview th{border-width:0 0 1px 0}
"""

# the sort keys the overview offers: (id, label); ranks are precomputed per row (missing hosts last)
SORTS = (("status", "worst first"), ("usage", "usage"), ("host", "host name"), ("findings", "most findings"))
STATUS_FILTERS = ("critical", "warning", "ok", "missing")


def _controls_css(finding_ids):
    """Rules that hide and reorder by which radio button is checked. Selectors carry only fixed names and
    generated indices, never report text."""
    rules = []
    for status in STATUS_FILTERS:
        rules.append('body:has(#fs-%s:checked) [data-status]:not([data-status="%s"]){display:none}' % (status, status))
    for index in range(len(finding_ids)):
        rules.append('body:has(#ff-%d:checked) [data-status]:not([data-findings~="f%d"]){display:none}' % (index, index))
    for key, _label in SORTS[1:]:
        rules.append("body:has(#so-%s:checked) table.overview tr.overview{order:var(--o-%s)}" % (key, key))
    return "\n".join(rules)


def _sort_ranks(hosts, missing):
    """{host: {sort key: rank}}: 0 comes first; hosts that did not report come after every other."""
    ranks = dict((r["host"], {}) for r in hosts)
    orders = {
        "usage": sorted(hosts, key=lambda r: (-(r["usage"]["usage_pct"] or -1), r["host"])),
        "host": sorted(hosts, key=lambda r: r["host"]),
        "findings": sorted(hosts, key=lambda r: (-len(r["findings"]), r["host"])),
    }
    for key, ordered in orders.items():
        for rank, result in enumerate(ordered):
            ranks[result["host"]][key] = rank
    for rank, host in enumerate(sorted(missing)):
        ranks[host] = dict((key, len(hosts) + rank) for key in orders)
    return ranks


def _controls_html(summary, finding_ids, finding_hosts, titles):
    status_counts = {"critical": summary["critical"], "warning": summary["warning"], "ok": summary["ok"],
                     "missing": summary["missing"]}
    status = ['<input type="radio" name="status" id="fs-all" checked><label for="fs-all">all (%d)</label>'
              % (summary["hosts"] + summary["missing"])]
    for name in STATUS_FILTERS:
        status.append('<input type="radio" name="status" id="fs-%s"><label for="fs-%s">%s (%d)</label>'
                      % (name, name, name, status_counts[name]))
    finding = ['<input type="radio" name="finding" id="ff-all" checked><label for="ff-all">any</label>']
    for index, fid in enumerate(finding_ids):
        finding.append('<input type="radio" name="finding" id="ff-%d"><label for="ff-%d" title="%s">%s (%d)</label>'
                       % (index, index, h(titles.get(fid)), h(fid), finding_hosts[fid]))
    sort = ['<input type="radio" name="sort" id="so-%s"%s><label for="so-%s">%s</label>'
            % (key, " checked" if key == SORTS[0][0] else "", key, label) for key, label in SORTS]
    return ('<form class="controls" id="controls" autocomplete="off">'
            '<fieldset class="filter-status"><legend>Status</legend>%s</fieldset>'
            '<fieldset class="filter-finding"><legend>Finding</legend>%s</fieldset>'
            '<fieldset class="sort"><legend>Sort</legend>%s</fieldset></form>'
            % ("".join(status), "".join(finding), "".join(sort)))


def usage_svg(usage, width=560, height=58, compact=False):
    """Inline SVG: the table's fill as a bar against the warning and critical thresholds.

    ``compact`` (the overview table): no threshold captions, the percentage to the right of the bar."""
    pct = usage.get("usage_pct")
    level = usage.get("level") or "ok"
    left, right, top, bar_h = 8, 8, 14, 22
    if compact:
        left, right, top, bar_h = 2, 62, 8, 16
    inner = width - left - right
    parts = ['<svg class="usage-chart" role="img" xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
             'viewBox="0 0 %d %d">' % (width, height, width, height)]
    if pct is None:
        label = "usage unknown (max unlimited or unreadable)"
        parts.append('<title>%s</title>' % h(label))
        parts.append('<rect x="%d" y="%d" width="%d" height="%d" fill="#eceff1" stroke="#b0bec5"/>'
                     % (left, top, inner, bar_h))
        parts.append('<text x="%d" y="%d" font-size="12" fill="#37474f">%s</text>' % (left + 6, top + 15, h(label)))
        parts.append("</svg>")
        return "".join(parts)
    shown = max(0.0, min(100.0, float(pct)))
    label = "%.2f %% of max (%s / %s)" % (float(pct), _num(usage.get("count")), _num(usage.get("max")))
    parts.append('<title>%s</title>' % h("usage " + label))
    parts.append('<rect x="%d" y="%d" width="%d" height="%d" fill="#eceff1" stroke="#b0bec5"/>' % (left, top, inner, bar_h))
    parts.append('<rect class="usage-bar" x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>'
                 % (left, top, inner * shown / 100.0, bar_h, LEVEL_COLOURS.get(level, "#546e7a")))
    for name, value, colour in (("warning", usage.get("warning_pct"), LEVEL_COLOURS["warning"]),
                                ("critical", usage.get("critical_pct"), LEVEL_COLOURS["critical"])):
        if value is None:
            continue
        x = left + inner * float(value) / 100.0
        # a white casing keeps the line visible over a bar of the same colour
        parts.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ffffff" stroke-width="4"/>'
                     % (x, top - 6, x, top + bar_h + 4))
        parts.append('<line class="threshold-%s" x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="2" '
                     'stroke-dasharray="4 2"/>' % (h(name), x, top - 6, x, top + bar_h + 4, colour))
        if not compact:
            parts.append('<text x="%.1f" y="%d" font-size="10" text-anchor="%s" fill="%s">%s %s %%</text>'
                         % (x, top - 7, "end" if name == "warning" else "start", colour, h(name),
                            h(_num(float(value), 0))))
    if compact:
        parts.append('<text x="%d" y="%d" font-size="12" fill="#1d2327">%s %%</text>'
                     % (left + inner + 6, top + bar_h - 3, h(_num(float(pct)))))
    else:
        parts.append('<text x="%d" y="%d" font-size="12" fill="#1d2327">%s</text>' % (left, top + bar_h + 16, h(label)))
    parts.append("</svg>")
    return "".join(parts)


def _badge(level):
    return '<span class="badge %s">%s</span>' % (h(level), h(level))


def _finding_html(item):
    out = ['<li class="finding" data-id="%s" data-severity="%s">' % (h(item["id"]), h(item["severity"])),
           '%s <b class="finding-id">%s</b> %s' % (_badge(item["severity"]), h(item["id"]), h(item["title"]))]
    if item.get("original_severity"):
        out.append(' <span class="meta">(rule audit severity %s)</span>' % h(item["original_severity"]))
    out.append('<div class="detail">%s</div>' % h(item["detail"]))
    if item.get("rule"):
        out.append('<div class="rule">rule (%s, %s, table %s, chain %s, position %s): <code>%s</code></div>' % (
            h(item.get("family")), h(item.get("backend")), h(item.get("table")), h(item.get("chain")),
            h(item.get("position")), h(item["rule"])))
    if item.get("affects"):
        out.append('<div class="affects"><b>Affects:</b> %s</div>' % h(item["affects"]))
    out.append('<div class="fix"><b>Fix:</b> %s</div></li>' % h(item["fix"]))
    return "".join(out)


def _finding_refs(result, finding_index):
    return " ".join("f%d" % finding_index[fid] for fid in sorted(set(f["id"] for f in result["findings"])))


def _host_html(index, result, finding_index=None):
    usage = result["usage"]
    env = result.get("environment") or {}
    out = ['<section class="host status-%s" id="host-%d" data-host="%s" data-status="%s" data-findings="%s">'
           % (h(result["status"]), index, h(result["host"]), h(result["status"]),
              _finding_refs(result, finding_index or {})),
           '<h2>%s %s</h2>' % (h(result["host"]), _badge(result["status"])),
           '<div class="meta">kernel %s · container %s · init netns %s · iptables %s · counters from %s · collected %s'
           '</div>' % (h(env.get("kernel_release")), h(env.get("container") or "none"), h(env.get("init_netns")),
                       h(env.get("iptables_backend")), h(result.get("counters_source")), h(result.get("collected_at"))),
           usage_svg(usage),
           '<p class="nft-tables">%s</p>' % _tables_text(env, h)]
    if result["findings"]:
        out.append('<ul class="findings">%s</ul>' % "".join(_finding_html(f) for f in result["findings"]))
    else:
        out.append('<p class="no-findings">No findings.</p>')
    counters = result.get("counters") or {}
    deltas = result.get("deltas") or {}
    dcounters = deltas.get("counters") or {}
    note = "first audit: baseline recorded" if deltas.get("baseline") else (
        "counters reset since the last audit (reboot or new namespace)" if deltas.get("reset") else
        "change since %s" % (deltas.get("since") or "the last audit"))
    rows = "".join('<tr class="counter" data-counter="%s"><td>%s</td><td class="num">%s</td><td class="num">%s</td></tr>'
                   % (h(name), h(name), h(_num(counters.get(name))), h(_num((dcounters.get(name) or {}).get("delta"))))
                   for name in WATCHED if name in counters)
    out.append('<div class="cols"><div><table class="counters"><tr><th>counter</th><th>value</th><th>%s</th></tr>%s'
               '</table></div>' % (h(note), rows))
    side = []
    if result.get("states"):
        side.append('<table class="states"><tr><th>proto</th><th>state</th><th>entries</th></tr>%s</table>' % "".join(
            '<tr><td>%s</td><td>%s</td><td class="num">%s</td></tr>' % (h(s["proto"]), h(s["state"]), h(_num(s["count"])))
            for s in result["states"]))
    if result.get("nat"):
        side.append('<p class="nat">NAT entries: dnat %s, snat %s</p>' % (
            h(_num(result["nat"]["dnat"])), h(_num(result["nat"]["snat"]))))
    sizing = result.get("sizing")
    if sizing:
        side.append('<p class="sizing" data-verdict="%s">Sizing: peak demand %s × headroom %s = %s needed; live max %s '
                    '(%s); recommended max %s, buckets %s.</p>' % (
                        h(sizing["verdict"]), h(_num(sizing["demand"])), h(sizing["headroom"]),
                        h(_num(sizing["needed_max"])), h(_num(sizing["live_max"])), h(sizing["verdict"]),
                        h(_num(sizing["recommended_max"])), h(_num(sizing["recommended_buckets"]))))
    fw = result.get("firewall") or {}
    side.append('<p class="meta">rule sets read: %s%s</p>' % (
        h(", ".join(fw.get("sources") or []) or "none"),
        h("; skipped: " + ", ".join(fw["skipped"])) if fw.get("skipped") else ""))
    out.append('<div>%s</div></div></section>' % "".join(side))
    return "".join(out)


def render_html(report):
    _check(report)
    summary = report["summary"]
    thresholds = report["thresholds"]
    missing = report.get("missing_hosts") or []
    finding_hosts, titles = {}, {}
    for result in report["hosts"]:
        for fid in set(f["id"] for f in result["findings"]):
            finding_hosts[fid] = finding_hosts.get(fid, 0) + 1
        for item in result["findings"]:
            titles.setdefault(item["id"], item["title"])
    finding_ids = sorted(finding_hosts)
    finding_index = dict((fid, index) for index, fid in enumerate(finding_ids))
    ranks = _sort_ranks(report["hosts"], missing)
    rows = []
    for index, result in enumerate(report["hosts"]):
        usage = result["usage"]
        rank = ranks[result["host"]]
        rows.append('<tr class="overview" data-host="%s" data-status="%s" data-findings="%s" '
                    'style="--o-usage:%d;--o-host:%d;--o-findings:%d"><td><a href="#host-%d">%s</a></td><td>%s</td>'
                    '<td>%s</td><td class="num">%s / %s</td><td>%s</td><td>%s</td><td>%s</td></tr>' % (
                        h(result["host"]), h(result["status"]), _finding_refs(result, finding_index), rank["usage"],
                        rank["host"], rank["findings"], index, h(result["host"]), _badge(result["status"]),
                        usage_svg(usage, width=240, height=32, compact=True), h(_num(usage["count"])), h(_num(usage["max"])),
                        h(_rising_text(result)), h(result["sizing"]["verdict"] if result.get("sizing") else "not declared"),
                        h(", ".join(sorted(set(f["id"] for f in result["findings"]))) or "none")))
    for host in missing:
        rank = ranks[host]
        rows.append('<tr class="overview not-reported" data-host="%s" data-status="missing" data-findings="" '
                    'style="--o-usage:%d;--o-host:%d;--o-findings:%d"><td>%s</td><td><span class="badge missing">missing'
                    '</span></td><td style="grid-column:span 5">did not report (unreachable or failed before the audit)'
                    '</td></tr>' % (h(host), rank["usage"], rank["host"], rank["findings"], h(host)))
    cards = "".join('<div class="card"><b>%s</b>%s</div>' % (h(summary[key]), h(label)) for key, label in (
        ("hosts", "hosts"), ("critical", "critical"), ("warning", "warning"), ("ok", "ok"), ("missing", "missing")))
    glance = "".join('<li>%s: %s</li>' % (h(label), h(", ".join(summary[key]) or "none")) for key, label in (
        ("near_full", "close to full"), ("dropping", "counters rising"), ("rule_findings", "rule-set mistakes"),
        ("undersized", "max below declared peak")))
    body = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="generator" content="%s">' % h(report["generator"]),
        '<title>Conntrack fleet audit %s</title><style>%s\n%s</style></head><body>' % (
            h(report["generated_at"]), CSS, _controls_css(finding_ids)),
        '<header><h1>Conntrack fleet audit</h1><div>Fleet status %s · generated %s · schema %s · thresholds warning %s %%, '
        'critical %s %% · gate: fail on %s%s</div></header><main>' % (
            _badge(summary["status"]), h(report["generated_at"]), h(report["schema_version"]),
            h(thresholds["warning_pct"]), h(thresholds["critical_pct"]), h(report["fail_on"]),
            " (failed)" if report.get("gate_failed") else ""),
        '<div class="cards" id="summary">%s</div>' % cards,
        '<ul class="glance">%s</ul>' % glance,
        _controls_html(summary, finding_ids, finding_hosts, titles),
        '<table class="overview"><tr class="head"><th>host</th><th>status</th><th>usage vs thresholds</th>'
        '<th>count / max</th><th>rising since last audit</th><th>sizing</th><th>findings</th></tr>%s</table>'
        % "".join(rows),
    ]
    body += [_host_html(index, result, finding_index) for index, result in enumerate(report["hosts"])]
    body.append('</main></body></html>\n')
    return "\n".join(body)


# ---------------------------------------------------------------------------------------------------- textfile


def _label(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_textfile(result, prefix="nodeguard_conntrack"):
    """node_exporter textfile collector format: the metrics node_exporter's conntrack collector does not have."""
    if not isinstance(result, dict) or "status" not in result or "host" not in result:
        raise RenderError(None, "input is not a host result of conntrack_audit_evaluate")
    if not re.match(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$", prefix):
        raise RenderError(None, "prefix %r is not a valid Prometheus metric name prefix" % (prefix,))
    out = []

    def family(name, kind, help_text, samples):
        samples = [(labels, value) for labels, value in samples if value is not None]
        if not samples:
            return
        out.append("# HELP %s_%s %s" % (prefix, name, help_text))
        out.append("# TYPE %s_%s %s" % (prefix, name, kind))
        for labels, value in samples:
            text = ",".join('%s="%s"' % (k, _label(v)) for k, v in labels)
            out.append("%s_%s%s %s" % (prefix, name, "{%s}" % text if text else "", value))

    counters = result.get("counters") or {}
    family("stat_clash_resolve_total", "counter", "Conntrack insert clashes resolved, summed over CPUs.",
           [((), counters.get("clash_resolve"))])
    family("stat_chaintoolong_total", "counter", "Packets dropped because a conntrack hash chain was too long.",
           [((), counters.get("chaintoolong"))])
    family("entries_by_state", "gauge", "Conntrack entries by protocol and TCP state (state none for other protocols).",
           [((("proto", s["proto"]), ("state", s["state"])), s["count"]) for s in result.get("states") or []])
    nat = result.get("nat") or {}
    family("nat_entries", "gauge", "Conntrack entries with destination (dnat) or source (snat) NAT.",
           [((("type", kind),), nat.get(kind)) for kind in ("dnat", "snat")])
    family("audit_status", "gauge", "Audit status of this host: 0 ok, 1 warning, 2 critical.",
           [((), LEVEL_VALUES[result["status"]])])
    findings = result.get("findings") or []
    family("audit_findings", "gauge", "Audit findings on this host by severity.",
           [((("severity", level),), sum(1 for f in findings if f["severity"] == level))
            for level in ("critical", "warning", "info")])
    family("audit_finding", "gauge", "Audit findings on this host by id and severity (1 when present).",
           sorted(set(((("id", f["id"]), ("severity", f["severity"])), 1) for f in findings)))
    usage = result.get("usage") or {}
    family("audit_usage_threshold_ratio", "gauge", "Usage thresholds the audit applied, as a ratio of max.",
           [((("level", "warning"),), usage.get("warning_pct") / 100.0 if usage.get("warning_pct") else None),
            ((("level", "critical"),), usage.get("critical_pct") / 100.0 if usage.get("critical_pct") else None)])
    rising = set(result.get("rising") or [])
    deltas = result.get("deltas") or {}
    if not deltas.get("baseline") and not deltas.get("reset"):
        family("audit_counter_rising", "gauge", "1 when the counter rose since the previous audit.",
               [((("counter", name),), 1 if name in rising else 0)
                for name in ("drop", "insert_failed", "early_drop", "chaintoolong")])
    return "\n".join(out) + "\n"


RENDERERS = {"text": render_text, "json": render_json, "markdown": render_markdown, "html": render_html}
