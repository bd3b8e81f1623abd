# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backend of the conntrack_facts module (private to the collection).

``resolve_subsets`` and the ``build_*`` functions are pure; ``gather`` wires them to the adapters in
_netlink, _ct_procfs, _ct_environment and _ct_events and returns ``(facts, warnings)``. It never raises for a
host that lacks conntrack, CAP_NET_ADMIN or /dev/kmsg: those become ``available: false``, a procfs fallback or
an ``events.readable: false`` with the reason.
"""

import os

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import InputError
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import knobs as _knobs
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import netlink as _netlink
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import procfs as _ct_procfs
from ansible_collections.nodeguard.conntrack.plugins.module_utils._host import environment as _ct_environment
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import events as _ct_events
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import owners as _ct_owners

SUBSETS = ("limits", "timeouts", "settings", "counters", "environment", "events", "owners")
# gathered whatever is asked (like setup's min): cheap and needed to read the rest
MIN_SUBSETS = ("limits",)
DEFAULT_GATHER_SUBSET = ["all", "!events"]
LIMIT_KNOBS = ("max", "count", "buckets", "expect_max")
# the keys of the host probe conntrack_facts documents and returns (the probe also answers live/writable knobs)
ENVIRONMENT_KEYS = ("kernel_release", "conntrack", "module_config", "init_netns", "init_netns_reason", "netns_inode", "container",
                    "container_evidence", "writable_knobs", "readonly_knobs", "iptables_backend",
                    "iptables_legacy_tables", "nft_tables", "nft_tables_reason", "nft_native_tables", "nftables_conf",
                    "memtotal_mb", "cpus")
SETTING_KNOBS = tuple(sorted(name for name, (scope, kind) in _knobs.KNOBS.items()
                             if scope == _knobs.SCOPE_NETNS and kind != "timeout"))


class FactsInputError(InputError):
    """A module option with a value the backend cannot use; ``field`` names the option."""


def resolve_subsets(requested):
    """setup-style gather_subset: ``all``, ``min``, names, ``!name``/``!all``/``!min`` -> sorted subset names."""
    if requested is None:
        requested = DEFAULT_GATHER_SUBSET
    if isinstance(requested, str):
        requested = [requested]
    include = set()
    exclude = set()
    negated = set()
    only_negations = True
    for raw in requested:
        if not isinstance(raw, str):
            raise FactsInputError("gather_subset", "%r is not a string" % (raw,))
        item = raw.strip()
        negate = item.startswith("!")
        name = item[1:] if negate else item
        if name == "all":
            expanded = set(SUBSETS)
        elif name == "min":
            expanded = set(MIN_SUBSETS)
        elif name in SUBSETS:
            expanded = {name}
        else:
            raise FactsInputError("gather_subset", "unknown subset %r (valid: all, min, %s, each optionally "
                                  "negated with '!')" % (raw, ", ".join(SUBSETS)))
        if negate:
            negated.add(name)
            exclude |= expanded
        else:
            only_negations = False
            include |= expanded
    if only_negations:
        include = set(SUBSETS)
    chosen = include - exclude
    if "min" not in negated:
        chosen |= set(MIN_SUBSETS)
    return sorted(chosen)


def usage_pct(count, maximum):
    """count / max in percent (2 decimals); None when unknown or unlimited (max 0)."""
    if count is None or not maximum:
        return None
    return round(100.0 * count / maximum, 2)


def build_limits(knob_values, hashsize):
    limits = dict((name, knob_values.get(name)) for name in LIMIT_KNOBS)
    limits["hashsize"] = hashsize
    limits["usage_pct"] = usage_pct(limits["count"], limits["max"])
    return limits


def is_timeout_file(name):
    return name.startswith("nf_conntrack_") and "timeout" in name


def build_counters_from_proc(table):
    """(summed, per_cpu) from a parsed /proc/net/stat/nf_conntrack; rows get their position as ``cpu``."""
    per_cpu = []
    for index, row in enumerate(table["per_cpu"]):
        item = dict(row)
        item["cpu"] = index
        per_cpu.append(item)
    return _ct_procfs.sum_counters(per_cpu), per_cpu


def build_counters_from_netlink(rows):
    per_cpu = [dict(row) for row in rows]
    return _ct_procfs.sum_counters(per_cpu), per_cpu


# ---- gathering (host I/O through the adapters) ----

def _conntrack_present(present):
    return bool(present) or os.path.isdir(_ct_environment.SYS_MODULE_DIR) or os.path.exists(_ct_procfs.STAT_PATH)


def gather_counters(facts, notes):
    """Counters from ctnetlink, falling back to /proc/net/stat/nf_conntrack; returns a warning or None."""
    try:
        with _netlink.CtnetlinkSocket() as ct:
            rows = ct.get_stats_cpu()
        facts["counters"], facts["counters_per_cpu"] = build_counters_from_netlink(rows)
        facts["counters_source"] = "netlink"
        return None
    except _netlink.CtnetlinkPermissionError:
        reason = "ctnetlink refused the request (no CAP_NET_ADMIN in this network namespace)"
    except _netlink.NetlinkError as exc:
        reason = "ctnetlink unavailable (%s)" % exc
    table = _ct_procfs.read_stat_table()
    if table is None:
        facts["counters"], facts["counters_per_cpu"], facts["counters_source"] = None, None, None
        notes.append("counters unavailable: %s and %s does not exist" % (reason, _ct_procfs.STAT_PATH))
        return "conntrack counters unavailable: %s and %s does not exist" % (reason, _ct_procfs.STAT_PATH)
    facts["counters"], facts["counters_per_cpu"] = build_counters_from_proc(table)
    facts["counters_source"] = "procfs"
    note = "counters read from %s because %s" % (_ct_procfs.STAT_PATH, reason)
    notes.append(note)
    return note


def gather_events(window_seconds, max_records, max_bytes, own_inode, init_netns):
    events = {"readable": False, "reason": None, "window_seconds": window_seconds, "records_read": 0,
              "truncated": False}
    try:
        records, truncated = _ct_events.read_kmsg(max_records=max_records, max_bytes=max_bytes)
    except (IOError, OSError) as exc:
        events["reason"] = "cannot read %s: %s" % (_ct_events.KMSG_PATH, os.strerror(exc.errno) if exc.errno
                                                   else exc)
        return events
    events.update(_ct_events.count_events(records, _ct_events.monotonic_usec(), window_seconds,
                                          own_netns_inode=own_inode, init_netns=init_netns))
    events["readable"] = True
    events["records_read"] = len(records)
    events["truncated"] = truncated
    return events


def gather(subsets, events_window=3600, events_max_records=50000, events_max_bytes=8 * 1024 * 1024,
           run_iptables_version=None, run_nft_list=None):
    """(facts dict for ansible_facts.conntrack, list of warnings)."""
    warnings = []
    notes = []
    present = _ct_procfs.present_knobs()
    facts = {"available": _conntrack_present(present), "gather_subset": list(subsets), "notes": notes}
    environment = None
    if "environment" in subsets or "events" in subsets:
        # events only need the netns inode: run no iptables command for facts that are not returned
        environment = _ct_environment.probe(present, run_iptables_version=run_iptables_version
                                            if "environment" in subsets else None,
                                            run_nft_list=run_nft_list if "environment" in subsets else None)
        if "environment" in subsets:
            facts["environment"] = dict((key, environment[key]) for key in ENVIRONMENT_KEYS)
    if not facts["available"]:
        notes.append("connection tracking is not loaded in this kernel (nf_conntrack absent)")
    if "limits" in subsets:
        values = _ct_procfs.read_knobs([k for k in LIMIT_KNOBS if k in present])
        facts["limits"] = build_limits(values, _ct_procfs.read_hashsize())
    if "timeouts" in subsets:
        facts["timeouts"] = read_timeouts()
    if "settings" in subsets:
        facts["settings"] = _ct_procfs.read_knobs([k for k in SETTING_KNOBS if k in present])
    if "counters" in subsets:
        if facts["available"]:
            warning = gather_counters(facts, notes)
            if warning:
                warnings.append(warning)
        else:
            facts["counters"], facts["counters_per_cpu"], facts["counters_source"] = None, None, None
    if "owners" in subsets:
        facts["owners"] = _ct_owners.gather()
    if "events" in subsets:
        facts["events"] = gather_events(events_window, events_max_records, events_max_bytes,
                                        environment["netns_inode"], environment["init_netns"])
        if not facts["events"]["readable"]:
            notes.append("events: %s" % facts["events"]["reason"])
    return facts, warnings


def read_timeouts(proc_dir=None):
    """Every nf_conntrack_*timeout* sysctl present here, catalogued or not (short names)."""
    proc_dir = proc_dir or _knobs.PROC_SYS_DIR
    try:
        names = os.listdir(proc_dir)
    except OSError:
        return {}
    shorts = sorted(name[len("nf_conntrack_"):] for name in names if is_timeout_file(name))
    return _ct_procfs.read_knobs(shorts, proc_dir)
