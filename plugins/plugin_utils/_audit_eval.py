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

import time

from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.kernel_model import COUNTER_NAMES
from ansible_collections.nodeguard.conntrack.plugins.plugin_utils import _audit_checks as checks
from ansible_collections.nodeguard.conntrack.plugins.plugin_utils._audit_checks import (
    LEVELS, AuditError, _counters, _is_number, _usage, counter_deltas, iso_utc, level_rank, worst)

SCHEMA_VERSION = "1.0"
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

    environment = facts.get("environment") if isinstance(facts.get("environment"), dict) else {}
    available = facts.get("available") is not False
    limits = facts.get("limits") if isinstance(facts.get("limits"), dict) else {}
    usage = _usage(limits, opts)
    counters = _counters(facts)
    deltas = counter_deltas(counters, previous, now, environment.get("netns_inode"))
    note = checks.container_note(environment)
    owners = facts.get("owners") if isinstance(facts.get("owners"), dict) else None

    findings = checks.observability_findings(facts, counters, available)
    findings += checks.usage_findings(usage, opts, note)
    counter_found, rises, cause = checks.counter_findings(counters, deltas, usage, opts, facts.get("events"))
    findings += counter_found
    findings += checks.drift_findings(owners, environment)
    sizing_found, sizing_result = checks.sizing_findings(opts["sizing"], usage, environment, note)
    findings += sizing_found
    chain_found, chains = checks.chain_findings(usage, environment, opts["max_chain_ratio"])
    findings += chain_found
    findings += checks.event_findings(facts.get("events"))
    firewall_found, firewall_out = checks.firewall_findings(collected.get("firewall"), collected.get("nftables"),
                                                            environment, opts["firewall_severity"])
    findings += firewall_found

    order = {"critical": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: (order.get(f["severity"], 3), f["id"]))
    status = worst(f["severity"] for f in findings if f["severity"] in LEVELS)
    nft_tables = environment.get("nft_tables") if isinstance(environment.get("nft_tables"), list) else None
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
        "states": checks.normalise_states(collected.get("states")),
        "nat": checks.normalise_nat(collected.get("nat")),
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
