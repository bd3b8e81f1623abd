# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The checks of one host's audit (private to the collection): each takes normalised data and returns findings.

``_audit_eval.evaluate`` validates the input, normalises the options and calls these in turn; the finding ids and
what each means are listed in ``_audit_eval``'s docstring. Pure: data in, data out.
"""

import math
import time

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import InputError
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import kernel_model
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.kernel_model import COUNTER_NAMES
from ansible_collections.nodeguard.conntrack.plugins.plugin_utils import _sizing as sizing

LEVELS = ("ok", "warning", "critical")


TITLES = {
    "NGCA001": "conntrack table usage above threshold",
    "NGCA002": "counter rising since the last audit",
    "NGCA003": "nf_conntrack_max below the declared peak",
    "NGCA004": "long hash chains at a full table drop packets",
    "NGCA005": "conntrack cannot be observed",
    "NGCA006": "table full messages in the kernel log",
    "NGCA007": "native nftables rules not audited",
    "NGCA008": "counter totals since boot (first audit)",
    "NGCA009": "live value drifted from the persisted one",
}


COUNTER_MEANING = {
    "drop": "new flows were dropped because the table was full",
    "insert_failed": "entries failed to insert (races between packets of one new flow; the classic 5 s DNS delay)",
    "early_drop": "non-assured entries were evicted to make room: the table ran full",
    "chaintoolong": "inserts failed and their packets were dropped because a hash chain was over the kernel's limit "
                    "(too few buckets for the entries, or a hash attack)",
    "clash_resolve": "insert clashes were resolved",
    "invalid": "packets could not be tracked (INVALID): often an asymmetric return path (replies that bypass this host "
               "or arrive on another one), or out-of-window TCP",
}


class AuditError(InputError):
    """Bad audit input. ``field`` names the offending input."""


def level_rank(level):
    return LEVELS.index(level)


def worst(levels):
    result = "ok"
    for level in levels:
        if level_rank(level) > level_rank(result):
            result = level
    return result


def _fmt(value):
    return "{:,}".format(value) if _is_int(value) else str(value)


def _rate_text(rate):
    return "%.3g" % rate


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not (
        isinstance(value, float) and not math.isfinite(value))


def iso_utc(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def rate_level(rate, thresholds, cap):
    """Severity of a counter rising at ``rate`` per second: warning/critical at or above the thresholds (a warning
    threshold of 0 means any rise), never above ``cap``."""
    warning, critical = thresholds
    level = "ok"
    if rate >= critical and rate > 0:
        level = "critical"
    elif rate > 0 and rate >= warning:
        level = "warning"
    return level if level_rank(level) <= level_rank(cap) else cap


def drop_cause(deltas, usage_level, table_full_messages):
    """Why ``drop`` rose: "clash" when insert_failed rose as much (an insert race the kernel could not resolve,
    nf_ct_resolve_clash: drop and insert_failed together), "chain" when chaintoolong explains it, "table_full"
    otherwise (the only other source of drop). Low usage with a clash is a race, not a full table."""
    drop = deltas.get("drop") or 0
    failed = deltas.get("insert_failed") or 0
    chain = deltas.get("chaintoolong") or 0
    if drop <= 0:
        return None
    if chain and chain >= drop:
        return "chain"
    if failed >= drop and not table_full_messages and usage_level == "ok":
        return "clash"
    if failed and failed < drop:
        return "clash_and_table_full"
    return "table_full"


CAUSE_TEXT = {
    "clash": "an insert clash: packets of one new flow raced on several CPUs and the kernel could not merge the "
             "entries (drop and insert_failed rose together while the table was not full): not a full table",
    "chain": "inserts into over-long hash chains (chaintoolong)",
    "clash_and_table_full": "partly insert clashes (insert_failed), the rest a full table",
    "table_full": "the table was full (no insert_failed with it)",
}


def likely_owner(item):
    """(owner text, fix text) for a drifted knob: kube-proxy first (it rewrites on every start), then a sysctl file
    read after the persisted one, then a container runtime, else unknown."""
    writers = item.get("writers") or []
    proxies = [w for w in writers if w.get("kind") == "kube-proxy"]
    if proxies:
        proxy = proxies[0]
        return ("kube-proxy (pid %s, %s)" % (proxy.get("pid"), proxy.get("detail")),
                "kube-proxy rewrites this value whenever it differs, on every start: hand it to the node with "
                "conntrack.maxPerCore: 0 and conntrack.tcpEstablishedTimeout/tcpCloseWaitTimeout: 0s in its "
                "KubeProxyConfiguration (or the --conntrack-* flags = 0), or size the node with kube-proxy's values.")
    runtimes = [w for w in writers if w.get("kind") == "runtime"]
    files = [w for w in writers if w.get("kind") == "sysctl_file"]
    if runtimes:
        names = ", ".join(sorted(set(str(w.get("name")) for w in runtimes)))
        return ("something at run time, possibly %s" % names,
                "Find the writer (a container runtime, an orchestrator agent or a manual sysctl -w), stop it "
                "writing, then re-apply with conntrack_tuning.")
    if files:
        return ("unknown (sysctl files that set it: %s)" % ", ".join(w.get("path") for w in files),
                "Re-apply with conntrack_tuning; if it drifts again, find the writer (a manual sysctl -w, an agent).")
    return ("unknown", "Re-apply with conntrack_tuning; if it drifts again, find the writer (a manual sysctl -w, "
                       "an agent).")


def _drift_finding(short, item):
    owner, fix = likely_owner(item)
    return _finding(
        "NGCA009", "warning", "%s is %s live but %s persisted (%s); likely owner: %s" % (
            item.get("key") or short, _fmt(item.get("live")), _fmt(item.get("persisted")),
            item.get("persisted_by"), owner), fix, "facts", knob=short, owner=owner)


def _finding(fid, severity, detail, fix, source, **extra):
    item = {"id": fid, "source": source, "severity": severity, "title": TITLES[fid], "detail": detail, "fix": fix}
    item.update(extra)
    return item


def _counters(facts):
    raw = facts.get("counters")
    if not isinstance(raw, dict):
        return None
    result = {}
    for name in COUNTER_NAMES:
        value = raw.get(name)
        result[name] = value if _is_int(value) else None
    return result


def counter_deltas(current, previous, now, netns_inode=None):
    """Counter changes since the previous audit's state record.

    Returns ``{"baseline", "reset", "since", "elapsed_seconds", "counters": {name: {previous, current, delta}}}``.
    ``baseline`` is true when there is nothing to compare with (first audit). ``reset`` is true when a counter went
    down or the network namespace changed (reboot, container re-created): deltas are then null, not negative.
    """
    result = {"baseline": True, "reset": False, "since": None, "elapsed_seconds": None, "counters": {}}
    if current is None:
        return result
    if not isinstance(previous, dict) or not isinstance(previous.get("counters"), dict):
        for name in COUNTER_NAMES:
            result["counters"][name] = {"previous": None, "current": current.get(name), "delta": None,
                                        "rate_per_second": None}
        return result
    result["baseline"] = False
    epoch = previous.get("epoch")
    if _is_number(epoch):
        result["since"] = iso_utc(epoch)
        result["elapsed_seconds"] = round(max(0.0, now - epoch), 3)
    prev_inode = previous.get("netns_inode")
    if netns_inode is not None and prev_inode is not None and prev_inode != netns_inode:
        result["reset"] = True
    old = previous["counters"]
    for name in COUNTER_NAMES:
        cur = current.get(name)
        before = old.get(name)
        before = before if _is_int(before) else None
        delta = None
        if cur is not None and before is not None:
            if cur < before:
                result["reset"] = True
            delta = cur - before
        result["counters"][name] = {"previous": before, "current": cur, "delta": delta}
    if result["reset"]:
        for entry in result["counters"].values():
            entry["delta"] = None
    elapsed = result["elapsed_seconds"]
    for entry in result["counters"].values():
        entry["rate_per_second"] = (float("%.6g" % (entry["delta"] / float(elapsed)))
                                    if entry["delta"] is not None and elapsed else None)
    return result


def _usage(limits, opts):
    count = limits.get("count")
    max_entries = limits.get("max")
    pct = limits.get("usage_pct")
    if not _is_number(pct):
        pct = None
        if _is_int(count) and _is_int(max_entries) and max_entries > 0:
            pct = round(count * 100.0 / max_entries, 2)
    # compare the exact ratio, not the rounded percentage (74.9996 % must not count as 75 %)
    exact = pct
    if _is_int(count) and _is_int(max_entries) and max_entries > 0:
        exact = count * 100.0 / max_entries
    level = "ok"
    if exact is not None:
        if exact >= opts["critical_pct"]:
            level = "critical"
        elif exact >= opts["warning_pct"]:
            level = "warning"
    return {
        "count": count if _is_int(count) else None,
        "max": max_entries if _is_int(max_entries) else None,
        "usage_pct": pct,
        "buckets": limits.get("buckets") if _is_int(limits.get("buckets")) else None,
        "level": level,
        "warning_pct": opts["warning_pct"],
        "critical_pct": opts["critical_pct"],
    }


def _sizing_check(spec, usage, environment):
    """Compare the live max with the declared peak, using the same sizing rules as the tuning role."""
    spec = dict(spec)
    if spec.get("kernel_release") is None and isinstance(environment.get("kernel_release"), str) \
            and kernel_model.parse_release(environment["kernel_release"]) is not None:
        # the floor (the kernel's own default) and the chain limit depend on the host's kernel
        spec["kernel_release"] = environment["kernel_release"]
    try:
        planned = sizing.size(spec)
    except sizing.SizingError as exc:
        raise AuditError("sizing.%s" % exc.field, exc.reason)
    headroom = float(spec.get("headroom", sizing.DEFAULT_HEADROOM))
    demand = planned["demand"]
    needed = int(math.ceil(demand * headroom))
    live = usage["max"]
    writable = "max" in (environment.get("writable_knobs") or [])
    if live is None:
        level = "ok"
        verdict = "unknown"
    elif live == 0:
        level, verdict = "ok", "unlimited"
    elif live < demand:
        level, verdict = "critical", "below_peak"
    elif live < needed:
        level, verdict = "warning", "below_headroom"
    else:
        level, verdict = "ok", "sufficient"
    return {
        "peak_flows": spec.get("peak_flows"),
        "demand": demand,
        "headroom": headroom,
        "needed_max": needed,
        "live_max": live,
        "recommended_max": planned["settings"]["max"],
        "recommended_buckets": planned["settings"]["buckets"],
        "max_writable_here": writable,
        "verdict": verdict,
        "level": level,
        "warnings": list(planned["warnings"]),
    }


def container_note(environment):
    """The sentence a fix gets when nf_conntrack_max cannot be raised from this network namespace."""
    if "max" in (environment.get("readonly_knobs") or []):
        return (" nf_conntrack_max is host-scope and read-only in this network namespace: raise it on the host itself "
                "(conntrack_tuning run in the initial namespace).")
    return ""


def observability_findings(facts, counters, available):
    """NGCA005: conntrack not loaded, or no counters source readable."""
    if not available:
        return [_finding("NGCA005", "warning", "conntrack is not loaded in the running kernel; nothing is tracked or "
                         "audited here", "Nothing to do unless this host should track flows.", "facts")]
    if counters is None or all(v is None for v in counters.values()):
        return [_finding("NGCA005", "warning", "no counters source could be read (%s): drops cannot be seen"
                         % "; ".join(facts.get("notes") or ["no reason given"]),
                         "Run the audit as root (CAP_NET_ADMIN for ctnetlink) or enable procfs stats.", "facts")]
    return []


def usage_findings(usage, opts, note):
    """NGCA001: table usage at or above a threshold."""
    if usage["level"] == "ok":
        return []
    return [_finding(
        "NGCA001", usage["level"],
        "%s of %s entries in use (%.2f %%), %s threshold %s %%" % (
            _fmt(usage["count"]), _fmt(usage["max"]), usage["usage_pct"], usage["level"],
            opts["critical_pct"] if usage["level"] == "critical" else opts["warning_pct"]),
        "Find what fills the table (nodeguard.conntrack.diagnose: top destinations, states), shorten the timeouts "
        "of the states that dominate, and raise nf_conntrack_max sized by the peak (conntrack_tuning)." + note,
        "usage", value=usage["usage_pct"])]


def table_full_messages(events):
    return bool(isinstance(events, dict) and events.get("readable") and _is_int(events.get("table_full_this_netns"))
                and events["table_full_this_netns"] > 0)


def _counter_fix(name, cause):
    if cause in ("clash", "clash_and_table_full") and name in ("drop", "insert_failed"):
        return ("Insert clashes are races between the first packets of one flow (typically parallel UDP queries over "
                "one socket, e.g. DNS A and AAAA: options single-request-reopen, or NOTRACK for the resolver "
                "traffic); raising max does not help.")
    if name == "invalid":
        return ("Look for an asymmetric return path (replies routed around this host) and enable "
                "nf_conntrack_log_invalid briefly to see which packets; tcp_be_liberal only as a last resort.")
    return "Check usage against max and the kernel log for 'table full'; for chaintoolong raise buckets (conntrack_tuning)."


def counter_findings(counters, deltas, usage, opts, events):
    """(findings, rises, drop cause): NGCA002 for watched counters that rose (graded by their rate since the last
    audit), NGCA008 (info) with the since-boot totals on a first audit."""
    findings, rises, cause = [], [], None
    if not deltas["baseline"] and not deltas["reset"]:
        elapsed = deltas.get("elapsed_seconds")
        plain = dict((name, deltas["counters"][name]["delta"]) for name in COUNTER_NAMES)
        cause = drop_cause(plain, usage["level"], table_full_messages(events))
        for name in COUNTER_NAMES:
            entry = deltas["counters"][name]
            if name not in opts["counter_rise"] or not entry["delta"] or entry["delta"] <= 0:
                continue
            cap = opts["counter_rise"][name]
            rises.append(name)
            if cap == "ok":
                continue
            rate = entry.get("rate_per_second")
            if rate is not None and name in opts["counter_rate"]:
                level = rate_level(rate, opts["counter_rate"][name], cap)
                pace = "%s/s over %s s" % (_rate_text(rate), _fmt(int(round(elapsed))))
            else:
                level = cap  # no interval known: the rise itself
                pace = "interval unknown"
            if level == "ok":
                continue
            meaning = COUNTER_MEANING.get(name, "counter increased")
            if name in ("drop", "insert_failed") and cause in CAUSE_TEXT:
                meaning = CAUSE_TEXT[cause]
            findings.append(_finding(
                "NGCA002", level, "%s rose by %s since %s (%s): %s" % (
                    name, _fmt(entry["delta"]), deltas["since"] or "the last audit", pace, meaning),
                _counter_fix(name, cause), "counters", counter=name, delta=entry["delta"], value=rate))
    elif deltas["baseline"] and counters is not None:
        totals = [(name, counters.get(name)) for name in COUNTER_NAMES
                  if name in opts["counter_rise"] and opts["counter_rise"][name] != "ok" and _is_int(counters.get(name))
                  and counters.get(name) > 0]
        if totals:
            findings.append(_finding(
                "NGCA008", "info", "first audit: since boot (or since this namespace was created) %s; the next audit "
                "grades their rate" % ", ".join("%s %s" % (name, _fmt(value)) for name, value in totals),
                "Nothing to do now; run the audit again to see whether they still rise.", "counters"))
    return findings, rises, cause


def drift_findings(owners, environment):
    """NGCA009 for every knob whose live value drifted from its persisted value."""
    findings = []
    writable_here = environment.get("writable_knobs")
    for short, item in sorted((owners or {}).items()):
        # a host-scope knob read-only in this network namespace (a container) cannot be applied here: its persisted
        # value is for the host, nobody overrode it, and NGCA003 already says where to raise it
        if environment.get("init_netns") is False and isinstance(writable_here, list) and short not in writable_here:
            continue
        if isinstance(item, dict) and item.get("drift"):
            findings.append(_drift_finding(short, item))
    return findings


def sizing_findings(spec, usage, environment, note):
    """(findings, sizing check): NGCA003 when max is below the declared peak (x headroom)."""
    if spec is None:
        return [], None
    result = _sizing_check(spec, usage, environment)
    if result["level"] == "ok":
        return [], result
    if result["verdict"] == "below_peak":
        detail = "nf_conntrack_max %s is below the declared peak demand %s: the table overflows at peak" % (
            _fmt(result["live_max"]), _fmt(result["demand"]))
    else:
        detail = "nf_conntrack_max %s is below peak %s x headroom %s = %s" % (
            _fmt(result["live_max"]), _fmt(result["demand"]), result["headroom"], _fmt(result["needed_max"]))
    fix = "Raise nf_conntrack_max to %s and buckets to %s (conntrack_tuning with conntrack_tuning_peak_flows)." % (
        _fmt(result["recommended_max"]), _fmt(result["recommended_buckets"]))
    if not result["max_writable_here"]:
        fix += note
    return [_finding("NGCA003", result["level"], detail, fix, "sizing")], result


def chain_findings(usage, environment, max_chain_ratio):
    """(findings, chains): NGCA004 when a full table's hash chains make inserts fail on this kernel, or when
    max / buckets is above max_chain_ratio."""
    if not (_is_int(usage["max"]) and usage["max"] > 0 and _is_int(usage["buckets"]) and usage["buckets"] > 0):
        return [], None
    release = environment.get("kernel_release")
    version = kernel_model.parse_release(release)
    chains = sizing.chain_check(usage["max"], usage["buckets"], version)
    ratio = usage["max"] / float(usage["buckets"])
    chains["ratio"] = round(ratio, 3)
    chains["kernel_release"] = release if version is not None else None
    if not chains["acceptable"]:
        limits = tuple(chains["limits"])
        return [_finding(
            "NGCA004", "critical" if chains["insert_failure"] >= 0.01 else "warning",
            "a full table puts %.1f hash nodes in each bucket (max %s / buckets %s, every entry hashed twice); with "
            "the %s of %s about %.2g of new flows fail to insert and their packets are dropped (chaintoolong, "
            "insert_failed): long chains drop packets" % (
                chains["nodes_per_bucket"], _fmt(usage["max"]), _fmt(usage["buckets"]),
                kernel_model.describe_limits(limits),
                "kernel %s" % release if version is not None else "an unknown kernel (assumed 5.15-6.2)",
                chains["insert_failure"]),
            "Raise nf_conntrack_buckets to nf_conntrack_max (%s, the kernel's own ratio) with conntrack_tuning; "
            "buckets are host-scope (initial network namespace)." % _fmt(usage["max"]), "sizing",
            value=chains["nodes_per_bucket"])], chains
    if ratio > max_chain_ratio:
        return [_finding(
            "NGCA004", "warning", "max / buckets is %.1f (limit %s): a full table walks %.1f nodes per bucket on "
            "every lookup%s" % (ratio, max_chain_ratio, chains["nodes_per_bucket"],
                                "" if chains["limits"] is None else
                                ", close to the kernel's chain limit where inserts fail and packets drop"),
            "Raise nf_conntrack_buckets to nf_conntrack_max (conntrack_tuning does this from the sizing).", "sizing",
            value=chains["nodes_per_bucket"])], chains
    return [], chains


def event_findings(events):
    """NGCA006: 'table full, dropping packet' kernel messages for this namespace."""
    if not table_full_messages(events):
        return []
    return [_finding(
        "NGCA006", "critical", "%d 'table full, dropping packet' messages for this namespace in the last %s s" % (
            events["table_full_this_netns"], events.get("window_seconds")),
        "The table overflowed: raise nf_conntrack_max sized by the peak and find what fills it (diagnose).",
        "events")]


def _rule_finding(item, source, firewall_severity):
    original = item.get("severity")
    level = firewall_severity.get(original, "warning")
    entry = {"id": str(item.get("id")), "source": source, "severity": level if level != "ok" else "info",
             "title": str(item.get("title") or item.get("id")), "detail": str(item.get("detail") or ""),
             "fix": str(item.get("fix") or ""), "original_severity": original}
    for key in ("family", "backend", "table", "chain", "position", "rule", "affects"):
        if item.get(key) is not None:
            entry[key] = item[key]
    return entry


def firewall_findings(firewall, nft_result, environment, firewall_severity):
    """(findings, firewall summary for the report): the rule-set findings of iptables_audit and nftables_audit with
    their severity mapped, and NGCA007 when native nftables rules were not audited."""
    findings = []
    out = {"audited": False, "summary": None, "sources": [], "skipped": []}
    if isinstance(firewall, dict) and isinstance(firewall.get("findings"), list):
        out = {"audited": True, "summary": firewall.get("summary"), "sources": list(firewall.get("sources") or []),
               "skipped": list(firewall.get("skipped") or [])}
    nft_tables = environment.get("nft_tables") if isinstance(environment.get("nft_tables"), list) else None
    nft_audited = isinstance(nft_result, dict) and isinstance(nft_result.get("findings"), list) \
        and not nft_result.get("skipped")
    out["nftables_audited"] = nft_audited
    out["nftables_summary"] = nft_result.get("summary") if nft_audited else None
    if nft_audited and nft_result.get("source"):
        out["sources"].append(str(nft_result["source"]))
    native = [t for t in nft_tables or [] if isinstance(t, dict) and not t.get("iptables_view")]
    if native and not nft_audited:
        findings.append(_finding(
            "NGCA007", "warning", "%d nf_tables table(s) hold rules the iptables view does not show (%s) and no "
            "nftables audit read them: the rule-set findings cover only part of this host's firewall" % (
                len(native), ", ".join("%s %s (%s)" % (t.get("family"), t.get("name"), t.get("owner"))
                                       for t in native)),
            "Run nodeguard.conntrack.nftables_audit on the host (the conntrack_audit role does when conntrack_audit_"
            "firewall is true and nft can list the rule set; it needs root).", "firewall"))
    elif nft_tables is None and environment.get("nft_tables_reason") not in (None, "nft not found", "not read") \
            and not nft_audited:
        findings.append(_finding(
            "NGCA007", "warning", "the nf_tables rule set could not be listed (%s): native nftables rules, if any, "
            "were not audited" % environment.get("nft_tables_reason"),
            "Run the audit as root with the nft command installed.", "facts"))
    for source, result_in in (("firewall", firewall), ("nftables", nft_result if nft_audited else None)):
        if isinstance(result_in, dict) and isinstance(result_in.get("findings"), list):
            findings.extend(_rule_finding(item, source, firewall_severity)
                            for item in result_in["findings"] if isinstance(item, dict))
    return findings, out


def normalise_states(raw_states):
    """Entries by protocol and state ({proto, state, count}, largest first) from conntrack_info-shaped groups."""
    if not isinstance(raw_states, list):
        return None
    states = []
    for group in raw_states:
        key = group.get("key") if isinstance(group, dict) else None
        if not isinstance(key, dict) or not _is_int(group.get("count")):
            continue
        states.append({"proto": str(key.get("proto") or "unknown"),
                       "state": str(key.get("state")) if key.get("state") else "none", "count": group["count"]})
    states.sort(key=lambda s: (-s["count"], s["proto"], s["state"]))
    return states


def normalise_nat(nat):
    if not isinstance(nat, dict):
        return None
    return {"dnat": nat.get("dnat") if _is_int(nat.get("dnat")) else None,
            "snat": nat.get("snat") if _is_int(nat.get("snat")) else None}
