# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fleet audit evaluation: what one host's conntrack data means, and the fleet report that holds every host.

Private to the collection. Pure and deterministic: data in (facts, rule-audit findings, entry statistics, the
previous audit's counters, the time), data out. The filters ``conntrack_audit_evaluate`` and
``conntrack_audit_fleet`` are thin wrappers; the report renderers (``_report_render``) read what this builds.

Audit finding ids (stable; the rule-set findings keep the NGCT ids of iptables_audit):

- NGCA001 table usage at or above a threshold (count / max of this network namespace)
- NGCA002 a watched counter (drop, insert_failed, early_drop, chaintoolong) rose since the last audit
- NGCA003 nf_conntrack_max below the declared peak (critical) or below peak x headroom (warning)
- NGCA004 long hash chains at a full table: inserts would fail and drop packets on this kernel (2 x max / buckets
  nodes per bucket against the kernel's random chain limit), or max / buckets above max_chain_ratio
- NGCA005 conntrack cannot be observed (not loaded, no counters source)
- NGCA006 "table full, dropping packet" kernel messages for this namespace in the events window
- NGCA007 native nftables tables the iptables view does not show, and no nftables audit read them (never a clean
  bill for rules nobody read)

Findings of nftables_audit keep their NGNF ids (source ``nftables``).
- NGCA009 a knob's live value differs from the value persisted for it (drift), with the likely owner and the fix
- NGCA008 (info) a first audit: watched counters' totals since boot (or since the namespace was created)

Counter rises (NGCA002) are graded on their rate per second since the previous audit (``counter_rate``), capped at
the counter's ``counter_rise`` level; a rise of drop together with insert_failed while the table is not full is told
apart as an insert clash (a race between packets of one new flow) from a table that was full.
"""

import math
import time

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import InputError
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import kernel_model
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.kernel_model import COUNTER_NAMES
from ansible_collections.nodeguard.conntrack.plugins.plugin_utils import _sizing as sizing

SCHEMA_VERSION = "1.0"
LEVELS = ("ok", "warning", "critical")
DEFAULT_COUNTER_RISE = {"drop": "critical", "insert_failed": "warning", "early_drop": "warning", "chaintoolong": "warning",
                        "invalid": "warning"}
# per counter: (warning at or above, critical at or above), in events per second since the previous audit; the level
# is capped at counter_rise. One drop a day (1.2e-5/s) is a warning, one a minute (0.017/s) critical; some INVALID
# packets are normal (late retransmissions, scans): a warning from 1/s (an asymmetric return path gives far more).
DEFAULT_COUNTER_RATE = {"drop": (0.0, 0.01), "insert_failed": (0.0, 0.01), "early_drop": (0.0, 0.1),
                        "chaintoolong": (0.0, 0.01), "invalid": (1.0, 100.0)}
DEFAULT_FIREWALL_SEVERITY = {"high": "critical", "medium": "warning", "low": "warning", "info": "ok"}
DEFAULT_WARNING_PCT = 75.0
DEFAULT_CRITICAL_PCT = 90.0
DEFAULT_MAX_CHAIN_RATIO = 8.0
SIZING_FIELDS = ("peak_flows", "new_flows_per_second", "avg_flow_lifetime", "headroom", "memory_mb", "cpus",
                 "memory_budget_pct", "entry_bytes", "buckets_ratio", "kernel_release")

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


def _pct(value, field):
    if not _is_number(value):
        raise AuditError(field, "must be a number, got %r" % (value,))
    if value <= 0 or value > 100:
        raise AuditError(field, "must be > 0 and <= 100, got %r" % (value,))
    return float(value)


def _level_map(value, field, keys, default):
    if value is None:
        return dict(default)
    if not isinstance(value, dict):
        raise AuditError(field, "must be a mapping, got %r" % (value,))
    result = dict(default)
    for key, level in value.items():
        if keys is not None and key not in keys:
            raise AuditError("%s.%s" % (field, key), "unknown key (allowed: %s)" % ", ".join(keys))
        if level not in LEVELS:
            raise AuditError("%s.%s" % (field, key), "must be one of %s, got %r" % (", ".join(LEVELS), level))
        result[key] = level
    return result


def _rate_map(value):
    result = dict(DEFAULT_COUNTER_RATE)
    if value is None:
        return result
    if not isinstance(value, dict):
        raise AuditError("counter_rate", "must be a mapping of counter name to [warning, critical] per second, got %r"
                         % (value,))
    for key, pair in value.items():
        field = "counter_rate.%s" % (key,)
        if key not in COUNTER_NAMES:
            raise AuditError(field, "unknown counter (allowed: %s)" % ", ".join(COUNTER_NAMES))
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(_is_number(v) and v >= 0 for v in pair):
            raise AuditError(field, "must be [warning, critical] events per second (numbers >= 0), got %r" % (pair,))
        if pair[1] < pair[0]:
            raise AuditError(field, "critical (%s) is below warning (%s)" % (pair[1], pair[0]))
        result[key] = (float(pair[0]), float(pair[1]))
    return result


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


def normalise_options(options):
    """Validate evaluation options; returns a complete dict. Raises AuditError naming the field."""
    options = dict(options or {})
    known = ("warning_pct", "critical_pct", "counter_rise", "counter_rate", "firewall_severity", "max_chain_ratio",
             "sizing")
    for key in options:
        if key not in known:
            raise AuditError(key, "unknown option (allowed: %s)" % ", ".join(known))
    warning = _pct(options.get("warning_pct", DEFAULT_WARNING_PCT), "warning_pct")
    critical = _pct(options.get("critical_pct", DEFAULT_CRITICAL_PCT), "critical_pct")
    if critical < warning:
        raise AuditError("critical_pct", "(%s) is below warning_pct (%s)" % (critical, warning))
    ratio = options.get("max_chain_ratio", DEFAULT_MAX_CHAIN_RATIO)
    if not _is_number(ratio) or ratio <= 0:
        raise AuditError("max_chain_ratio", "must be a positive number, got %r" % (ratio,))
    sizing_spec = options.get("sizing")
    if sizing_spec is not None:
        if not isinstance(sizing_spec, dict):
            raise AuditError("sizing", "must be a mapping, got %r" % (sizing_spec,))
        unknown = sorted(set(sizing_spec) - set(SIZING_FIELDS))
        if unknown:
            raise AuditError("sizing.%s" % unknown[0], "unknown sizing input (allowed: %s)" % ", ".join(SIZING_FIELDS))
        sizing_spec = dict((k, v) for k, v in sizing_spec.items() if v is not None)
        if sizing_spec.get("peak_flows") is None and sizing_spec.get("new_flows_per_second") is None:
            sizing_spec = None  # nothing declared: no sizing check
    return {
        "warning_pct": warning,
        "critical_pct": critical,
        "counter_rise": _level_map(options.get("counter_rise"), "counter_rise", COUNTER_NAMES, DEFAULT_COUNTER_RISE),
        "counter_rate": _rate_map(options.get("counter_rate")),
        "firewall_severity": _level_map(options.get("firewall_severity"), "firewall_severity",
                                        tuple(DEFAULT_FIREWALL_SEVERITY), DEFAULT_FIREWALL_SEVERITY),
        "max_chain_ratio": float(ratio),
        "sizing": sizing_spec,
    }


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


def evaluate(collected, options=None, previous=None, now=None):
    """Evaluate one host.

    ``collected``: {"host", "facts" (ansible_facts.conntrack), "firewall" (iptables_audit result or None),
    "nftables" (nftables_audit result or None),
    "states" (conntrack_info groups by proto/state or None), "nat" ({"dnat": n, "snat": n} or None)}.
    ``previous``: the state record of the last audit (see :func:`state_record`) or None.
    """
    if not isinstance(collected, dict):
        raise AuditError("collected", "must be a mapping, got %r" % (collected,))
    host = collected.get("host")
    if not isinstance(host, str) or not host:
        raise AuditError("collected.host", "must be a non-empty string, got %r" % (host,))
    facts = collected.get("facts")
    if not isinstance(facts, dict):
        raise AuditError("collected.facts", "must be the conntrack facts mapping, got %r" % (facts,))
    opts = normalise_options(options)
    if now is None:
        now = time.time()
    if not _is_number(now):
        raise AuditError("now", "must be a number of seconds since the epoch, got %r" % (now,))

    findings = []
    environment = facts.get("environment") if isinstance(facts.get("environment"), dict) else {}
    available = facts.get("available") is not False
    limits = facts.get("limits") if isinstance(facts.get("limits"), dict) else {}
    usage = _usage(limits, opts)
    counters = _counters(facts)
    deltas = counter_deltas(counters, previous, now, environment.get("netns_inode"))
    container_note = ""
    if "max" in (environment.get("readonly_knobs") or []):
        container_note = (" nf_conntrack_max is host-scope and read-only in this network namespace: raise it on the "
                          "host itself (conntrack_tuning run in the initial namespace).")

    if not available:
        findings.append(_finding("NGCA005", "warning", "conntrack is not loaded in the running kernel; nothing is "
                                 "tracked or audited here", "Nothing to do unless this host should track flows.",
                                 "facts"))
    elif counters is None or all(v is None for v in counters.values()):
        findings.append(_finding("NGCA005", "warning", "no counters source could be read (%s): drops cannot be seen"
                                 % "; ".join(facts.get("notes") or ["no reason given"]),
                                 "Run the audit as root (CAP_NET_ADMIN for ctnetlink) or enable procfs stats.", "facts"))

    if usage["level"] != "ok":
        findings.append(_finding(
            "NGCA001", usage["level"],
            "%s of %s entries in use (%.2f %%), %s threshold %s %%" % (
                _fmt(usage["count"]), _fmt(usage["max"]), usage["usage_pct"], usage["level"],
                opts["critical_pct"] if usage["level"] == "critical" else opts["warning_pct"]),
            "Find what fills the table (nodeguard.conntrack.diagnose: top destinations, states), shorten the timeouts "
            "of the states that dominate, and raise nf_conntrack_max sized by the peak (conntrack_tuning)."
            + container_note, "usage", value=usage["usage_pct"]))

    rises = []
    events = facts.get("events")
    table_full_messages = bool(isinstance(events, dict) and events.get("readable")
                               and _is_int(events.get("table_full_this_netns")) and events["table_full_this_netns"] > 0)
    elapsed = deltas.get("elapsed_seconds")
    cause = None
    if not deltas["baseline"] and not deltas["reset"]:
        plain = dict((name, deltas["counters"][name]["delta"]) for name in COUNTER_NAMES)
        cause = drop_cause(plain, usage["level"], table_full_messages)
        for name in COUNTER_NAMES:
            entry = deltas["counters"][name]
            if name in opts["counter_rise"] and entry["delta"] and entry["delta"] > 0:
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
                fix = ("Check usage against max and the kernel log for 'table full'; for chaintoolong raise buckets "
                       "(conntrack_tuning).")
                if cause in ("clash", "clash_and_table_full") and name in ("drop", "insert_failed"):
                    fix = ("Insert clashes are races between the first packets of one flow (typically parallel UDP "
                           "queries over one socket, e.g. DNS A and AAAA: options single-request-reopen, or NOTRACK "
                           "for the resolver traffic); raising max does not help.")
                elif name == "invalid":
                    fix = ("Look for an asymmetric return path (replies routed around this host) and enable "
                           "nf_conntrack_log_invalid briefly to see which packets; tcp_be_liberal only as a last resort.")
                findings.append(_finding(
                    "NGCA002", level, "%s rose by %s since %s (%s): %s" % (
                        name, _fmt(entry["delta"]), deltas["since"] or "the last audit", pace, meaning),
                    fix, "counters", counter=name, delta=entry["delta"], value=rate))
    elif deltas["baseline"] and counters is not None:
        totals = [(name, counters.get(name)) for name in COUNTER_NAMES
                  if name in opts["counter_rise"] and opts["counter_rise"][name] != "ok" and _is_int(counters.get(name))
                  and counters.get(name) > 0]
        if totals:
            findings.append(_finding(
                "NGCA008", "info", "first audit: since boot (or since this namespace was created) %s; the next audit "
                "grades their rate" % ", ".join("%s %s" % (name, _fmt(value)) for name, value in totals),
                "Nothing to do now; run the audit again to see whether they still rise.", "counters"))

    owners = facts.get("owners") if isinstance(facts.get("owners"), dict) else None
    env = facts.get("environment") if isinstance(facts.get("environment"), dict) else {}
    writable_here = env.get("writable_knobs")
    for short, item in sorted((owners or {}).items()):
        # a host-scope knob read-only in this network namespace (a container) cannot be applied here: its persisted
        # value is for the host, nobody overrode it, and NGCA003 already says where to raise it
        if env.get("init_netns") is False and isinstance(writable_here, list) and short not in writable_here:
            continue
        if isinstance(item, dict) and item.get("drift"):
            findings.append(_drift_finding(short, item))

    sizing_result = None
    if opts["sizing"] is not None:
        sizing_result = _sizing_check(opts["sizing"], usage, environment)
        if sizing_result["level"] != "ok":
            if sizing_result["verdict"] == "below_peak":
                detail = "nf_conntrack_max %s is below the declared peak demand %s: the table overflows at peak" % (
                    _fmt(sizing_result["live_max"]), _fmt(sizing_result["demand"]))
            else:
                detail = "nf_conntrack_max %s is below peak %s x headroom %s = %s" % (
                    _fmt(sizing_result["live_max"]), _fmt(sizing_result["demand"]),
                    sizing_result["headroom"], _fmt(sizing_result["needed_max"]))
            fix = "Raise nf_conntrack_max to %s and buckets to %s (conntrack_tuning with conntrack_tuning_peak_flows)." % (
                _fmt(sizing_result["recommended_max"]), _fmt(sizing_result["recommended_buckets"]))
            if not sizing_result["max_writable_here"]:
                fix += container_note
            findings.append(_finding("NGCA003", sizing_result["level"], detail, fix, "sizing"))

    chains = None
    if _is_int(usage["max"]) and usage["max"] > 0 and _is_int(usage["buckets"]) and usage["buckets"] > 0:
        release = environment.get("kernel_release")
        version = kernel_model.parse_release(release)
        chains = sizing.chain_check(usage["max"], usage["buckets"], version)
        ratio = usage["max"] / float(usage["buckets"])
        chains["ratio"] = round(ratio, 3)
        chains["kernel_release"] = release if version is not None else None
        if not chains["acceptable"]:
            limits = tuple(chains["limits"])
            findings.append(_finding(
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
                value=chains["nodes_per_bucket"]))
        elif ratio > opts["max_chain_ratio"]:
            findings.append(_finding(
                "NGCA004", "warning", "max / buckets is %.1f (limit %s): a full table walks %.1f nodes per bucket on "
                "every lookup%s" % (ratio, opts["max_chain_ratio"], chains["nodes_per_bucket"],
                                    "" if chains["limits"] is None else
                                    ", close to the kernel's chain limit where inserts fail and packets drop"),
                "Raise nf_conntrack_buckets to nf_conntrack_max (conntrack_tuning does this from the sizing).", "sizing",
                value=chains["nodes_per_bucket"]))

    events = facts.get("events")
    if isinstance(events, dict) and events.get("readable") and _is_int(events.get("table_full_this_netns")) \
            and events["table_full_this_netns"] > 0:
        findings.append(_finding(
            "NGCA006", "critical", "%d 'table full, dropping packet' messages for this namespace in the last %s s" % (
                events["table_full_this_netns"], events.get("window_seconds")),
            "The table overflowed: raise nf_conntrack_max sized by the peak and find what fills it (diagnose).",
            "events"))

    firewall = collected.get("firewall")
    firewall_out = {"audited": False, "summary": None, "sources": [], "skipped": []}
    if isinstance(firewall, dict) and isinstance(firewall.get("findings"), list):
        firewall_out = {"audited": True, "summary": firewall.get("summary"), "sources": list(firewall.get("sources") or []),
                        "skipped": list(firewall.get("skipped") or [])}
    nft_tables = environment.get("nft_tables") if isinstance(environment.get("nft_tables"), list) else None
    nft_result = collected.get("nftables")
    nft_audited = isinstance(nft_result, dict) and isinstance(nft_result.get("findings"), list) \
        and not nft_result.get("skipped")
    firewall_out["nftables_audited"] = nft_audited
    firewall_out["nftables_summary"] = nft_result.get("summary") if nft_audited else None
    if nft_audited and nft_result.get("source"):
        firewall_out["sources"].append(str(nft_result["source"]))
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
        if not (isinstance(result_in, dict) and isinstance(result_in.get("findings"), list)):
            continue
        for item in result_in["findings"]:
            if not isinstance(item, dict):
                continue
            original = item.get("severity")
            level = opts["firewall_severity"].get(original, "warning")
            entry = {"id": str(item.get("id")), "source": source, "severity": level if level != "ok" else "info",
                     "title": str(item.get("title") or item.get("id")), "detail": str(item.get("detail") or ""),
                     "fix": str(item.get("fix") or ""), "original_severity": original}
            for key in ("family", "backend", "table", "chain", "position", "rule", "affects"):
                if item.get(key) is not None:
                    entry[key] = item[key]
            findings.append(entry)

    states = None
    raw_states = collected.get("states")
    if isinstance(raw_states, list):
        states = []
        for group in raw_states:
            key = group.get("key") if isinstance(group, dict) else None
            if not isinstance(key, dict) or not _is_int(group.get("count")):
                continue
            states.append({"proto": str(key.get("proto") or "unknown"),
                           "state": str(key.get("state")) if key.get("state") else "none", "count": group["count"]})
        states.sort(key=lambda s: (-s["count"], s["proto"], s["state"]))
    nat = collected.get("nat")
    if isinstance(nat, dict):
        nat = {"dnat": nat.get("dnat") if _is_int(nat.get("dnat")) else None,
               "snat": nat.get("snat") if _is_int(nat.get("snat")) else None}
    else:
        nat = None

    order = {"critical": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: (order.get(f["severity"], 3), f["id"]))
    status = worst(f["severity"] for f in findings if f["severity"] in LEVELS)
    return {
        "host": host,
        "status": status,
        "collected_at": iso_utc(now),
        "collected_epoch": round(float(now), 3),
        "available": available,
        "environment": {
            "kernel_release": environment.get("kernel_release"),
            "container": environment.get("container"),
            "init_netns": environment.get("init_netns"),
            "netns_inode": environment.get("netns_inode"),
            "iptables_backend": environment.get("iptables_backend"),
            "nft_tables": None if nft_tables is None else [
                {"family": t.get("family"), "name": t.get("name"), "owner": t.get("owner"),
                 "iptables_view": bool(t.get("iptables_view")), "rules": t.get("rules")}
                for t in nft_tables if isinstance(t, dict)],
        },
        "usage": usage,
        "counters": counters,
        "counters_source": facts.get("counters_source"),
        "deltas": deltas,
        "rising": rises,
        "drop_cause": cause,
        "owners": owners,
        "sizing": sizing_result,
        "chains": chains,
        "states": states,
        "nat": nat,
        "firewall": firewall_out,
        "findings": findings,
    }


def state_record(result):
    """What the next audit compares with: the counters and where they came from."""
    return {
        "schema_version": SCHEMA_VERSION,
        "host": result["host"],
        "epoch": result["collected_epoch"],
        "collected_at": result["collected_at"],
        "netns_inode": result["environment"].get("netns_inode"),
        "counters": result["counters"],
    }


def fleet(results, options=None, missing=None, now=None, fail_on="none"):
    """The fleet report: every host's result, sorted worst first, with a summary."""
    if not isinstance(results, list):
        raise AuditError("results", "must be a list of host results, got %r" % (results,))
    for index, item in enumerate(results):
        if not isinstance(item, dict) or item.get("status") not in LEVELS or "host" not in item:
            raise AuditError("results[%d]" % index, "is not a host result of conntrack_audit_evaluate")
    if fail_on not in ("none",) + LEVELS[1:]:
        raise AuditError("fail_on", "must be none, warning or critical, got %r" % (fail_on,))
    opts = normalise_options(options)
    if now is None:
        now = time.time()
    missing = sorted(set(missing or []) - set(r["host"] for r in results))
    hosts = sorted(results, key=lambda r: (-level_rank(r["status"]), -(r["usage"]["usage_pct"] or 0), r["host"]))
    by_id = {}
    for result in hosts:
        for item in result["findings"]:
            by_id[item["id"]] = by_id.get(item["id"], 0) + 1
    counts = dict((level, sum(1 for r in hosts if r["status"] == level)) for level in LEVELS)
    status = worst(r["status"] for r in hosts)
    if missing:
        status = "critical"
    gate_failed = fail_on != "none" and level_rank(status) >= level_rank(fail_on)
    summary = {
        "hosts": len(hosts),
        "ok": counts["ok"],
        "warning": counts["warning"],
        "critical": counts["critical"],
        "missing": len(missing),
        "status": status,
        "findings_by_id": dict(sorted(by_id.items())),
        "near_full": [r["host"] for r in hosts if r["usage"]["level"] != "ok"],
        "dropping": [r["host"] for r in hosts if r["rising"]],
        "rule_findings": [r["host"] for r in hosts if any(f["source"] in ("firewall", "nftables")
                                                          for f in r["findings"])],
        "undersized": [r["host"] for r in hosts if r["sizing"] and r["sizing"]["level"] != "ok"],
    }
    return {
        "schema_version": SCHEMA_VERSION,
        "generator": "nodeguard.conntrack.conntrack_audit",
        "generated_at": iso_utc(now),
        "thresholds": {"warning_pct": opts["warning_pct"], "critical_pct": opts["critical_pct"],
                       "counter_rise": opts["counter_rise"], "firewall_severity": opts["firewall_severity"]},
        "fail_on": fail_on,
        "gate_failed": gate_failed,
        "summary": summary,
        "missing_hosts": missing,
        "hosts": hosts,
    }
