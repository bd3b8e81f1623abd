# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backend of the conntrack_audit_collect module (private to the collection): everything the fleet audit needs
from one host in one module run.

- conntrack facts (``facts.gather``, as conntrack_facts returns them),
- entry statistics from ONE table dump: entries by protocol and TCP state, and the DNAT and SNAT entry counts
  (``dump.query`` grouped by proto, state, dnat and snat, then folded; no entry is kept, memory stays constant),
- the rule-set audit (the firewall host layer ``_firewall.apply.Host`` reads the rule sets and the context, the pure
  ``_firewall.audit.audit`` finds the mistakes: what iptables_audit returns).

``entry_statistics`` is pure; ``collect`` wires the adapters and returns ``(result, warnings)``.
"""

from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import dump as _dump
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import entries as _entries
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import facts as _ct_facts
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import netlink as _netlink
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import audit as _fw_audit

STATS_GROUP_BY = ("proto", "state", "dnat", "snat")
NAT_KINDS = ("dnat", "snat")
FAMILIES = ("ipv4", "ipv6")
BACKENDS = ("nft", "legacy")


def entry_statistics(groups):
    """Fold groups by proto/state/dnat/snat into (states, nat).

    ``states`` has the shape of conntrack_info's groups for ``group_by: [proto, state]`` (key {proto, state},
    count; largest first), ``nat`` the counts of ``status: [dnat]`` and ``status: [snat]``.
    """
    by_state = {}
    nat = dict((kind, 0) for kind in NAT_KINDS)
    for group in groups:
        key, count = group["key"], group["count"]
        pair = (key["proto"], key["state"])
        by_state[pair] = by_state.get(pair, 0) + count
        for kind in NAT_KINDS:
            if key[kind]:
                nat[kind] += count
    states = [{"key": {"proto": proto, "state": state}, "count": count}
              for (proto, state), count in sorted(by_state.items(),
                                                  key=lambda item: (-item[1], str(item[0][0]), item[0][1] or ""))]
    return states, nat


def read_entry_statistics(socket_factory=_netlink.CtnetlinkSocket):
    """One dump of both families: {states, nat, scanned, dump_interrupted}. Raises NetlinkError / CtError."""
    scan, _info = _dump.query(_entries.EntryFilter.from_params({}), group_by=list(STATS_GROUP_BY), limit=0,
                              socket_factory=socket_factory)
    states, nat = entry_statistics(scan.group_list(0))
    return {"states": states, "nat": nat, "scanned": scan.scanned, "matched": scan.matched,
            "dump_interrupted": scan.dump_interrupted}


def audit_rule_sets(firewall_host, families=FAMILIES, backends=BACKENDS, multi_homed=None):
    """The iptables_audit result {findings, summary, sources, skipped, context} through a firewall host layer."""
    context = firewall_host.audit_context(multi_homed)
    rulesets, sources, skipped = firewall_host.read_rulesets(families, backends)
    findings = _fw_audit.audit(rulesets, context)
    return {"findings": findings, "summary": _fw_audit.summary(findings), "sources": sources, "skipped": skipped,
            "context": context}


def collect(subsets, firewall_host, events_window=3600, events_max_records=50000, entry_stats=True, firewall=True,
            families=FAMILIES, backends=BACKENDS, multi_homed=None, run_iptables_version=None, run_nft_list=None,
            socket_factory=_netlink.CtnetlinkSocket):
    """(result, warnings). ``result``: {facts, entry_stats, entry_stats_error, firewall}.

    Errors of the facts and of the rule sets (NodeguardError) propagate: the host's audit fails, as it did with the
    separate modules. Entry statistics that cannot be read (no CAP_NET_ADMIN, conntrack absent) leave
    ``entry_stats`` null with the reason in ``entry_stats_error``: the audit goes on without them.
    """
    facts, warnings = _ct_facts.gather(subsets, events_window=events_window, events_max_records=events_max_records,
                                       run_iptables_version=run_iptables_version, run_nft_list=run_nft_list)
    result = {"facts": facts, "entry_stats": None, "entry_stats_error": None, "firewall": None}
    if entry_stats:
        if not facts["available"]:
            result["entry_stats_error"] = "connection tracking is not loaded in this kernel"
        else:
            try:
                result["entry_stats"] = read_entry_statistics(socket_factory=socket_factory)
            except _netlink.CtnetlinkPermissionError as exc:
                result["entry_stats_error"] = "cannot read conntrack entries: %s (run as root / with CAP_NET_ADMIN)" % exc
            except (_netlink.NetlinkError, _entries.CtError) as exc:
                result["entry_stats_error"] = "cannot read conntrack entries: %s" % exc
            if result["entry_stats"] and result["entry_stats"]["dump_interrupted"]:
                warnings.append("the conntrack table changed during the dump; counts may be off by the entries "
                                "that changed")
    if firewall:
        result["firewall"] = audit_rule_sets(firewall_host, families=families, backends=backends,
                                             multi_homed=multi_homed)
    return result, warnings
