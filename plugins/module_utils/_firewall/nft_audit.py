# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Audit a native nftables rule set for the classic conntrack mistakes (private to the collection).

Pure: a parsed rule set (``nft_ruleset.parse``) and a context in, findings out. Finding ids are stable and
documented with their fixes in docs/firewall.md:

- NGNF001 NEW accepted in a base chain that drops by default, with no ct state established,related accept before
  (or a general one later that the packets come back to: after a jump, not after a goto).
- NGNF002 ct state established,related accept placed after rules that drop, reject or log established packets.
- NGNF003 unscoped ct state invalid drop on the forward hook (asymmetric routing breaks).
- NGNF004 DNAT while a forward base chain drops and nothing there accepts the DNATed flows.
- NGNF005 an accept in one base chain is overridden by another base chain on the same hook (of another table or
  the same one) that drops the packet (every base chain on a hook gets a say; accept ends only its own chain).
- NGNF006 notrack with no ct state untracked (or stateless) accept where a base chain drops by default.
- NGNF007 ``ip6 nexthdr ipv6-icmp`` accept (misses ICMPv6 behind extension headers, such as MLD).
- NGNF008 /etc/nftables.conf starts with ``flush ruleset`` while other tools' tables are loaded.

Each base chain is evaluated along the path a packet takes, per address family (an inet table is read once as
IPv4 and once as IPv6): rules in order, with every jump, goto and verdict map followed in place and the
conditions of the call carried into the called chain. A final unconditional drop or reject rule counts as a drop
policy. Only ``type filter`` chains filter; nat and route chains are read for DNAT only.
"""

import ipaddress

from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import nft_inventory as _inventory
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import nft_ruleset as _nft

SEVERITIES = ("info", "low", "medium", "high")
NFPROTOS = ("ipv4", "ipv6")
LOOPBACK_CONDS = ("iifname == lo", "iif == lo", "oifname == lo", "oif == lo")
ICMP_WORDS = ("icmp", "ipv6-icmp", "icmpv6")

TITLES = {
    "NGNF001": "NEW accepted with no ct state established,related accept before it",
    "NGNF002": "ct state established,related accept placed after dropping, rejecting or logging rules",
    "NGNF003": "unscoped ct state invalid drop on the forward hook",
    "NGNF004": "DNAT present while a forward base chain drops the DNATed flows",
    "NGNF005": "accept overridden by another base chain (of this or another table) on the same hook",
    "NGNF006": "notrack without ct state untracked handling",
    "NGNF007": "ICMPv6 accepted by ip6 nexthdr (misses extension headers)",
    "NGNF008": "/etc/nftables.conf flushes the whole rule set",
}
FIXES = {
    "NGNF001": "Put 'ct state established,related accept' first in the chain (the nftables_baseline module does); "
               "otherwise replies to this host's own connections (DNS answers come from port 53 to a random port) "
               "hit the drop.",
    "NGNF002": "Move 'ct state established,related accept' before rules that drop, reject or log: established "
               "packets are the bulk of the traffic and should leave the chain on the first rule.",
    "NGNF003": "Scope the invalid drop to interfaces or addresses where both directions of every flow pass this "
               "host (iifname/oifname, saddr), or remove it from forward; with asymmetric routing the forward path "
               "sees one direction and conntrack marks it invalid (firewalld#1061, kubernetes#94861).",
    "NGNF004": "Accept DNATed flows in the forward chain before its drop ('ct status dnat accept', as firewalld "
               "does) or accept the translated destination explicitly.",
    "NGNF005": "Accept the traffic in the dropping table too (or 'ct status dnat accept' for published ports): "
               "a drop in any base chain on the hook is final, whatever the priority. Add the rule to the table "
               "that drops, through its owner's interface (firewall-cmd, the baseline's services).",
    "NGNF006": "Accept the notracked flows in the chain that drops: 'ct state untracked accept' scoped like the "
               "notrack rule, or a stateless accept of the same match. Untracked packets are never established.",
    "NGNF007": "Use 'meta l4proto ipv6-icmp accept' (or 'icmpv6 type { ... } accept'); ip6 nexthdr only sees the "
               "first header, so MLD and other ICMPv6 behind a hop-by-hop header is not matched.",
    "NGNF008": "Do not enable nftables.service with a 'flush ruleset' file on a host where Docker, firewalld, "
               "libvirt or kube-proxy keep tables: start, reload and stop delete them. Flush only your own table "
               "('table inet filter; flush table inet filter') or use the nftables_baseline include file.",
}


# ---- per-rule predicates ----

def _states(entry):
    return _nft.path_states(entry)


def _conds(entry):
    return _nft.path_conds(entry)


def _is_loopback(entry):
    return any(cond in LOOPBACK_CONDS for cond in _conds(entry))


def _is_icmp(entry):
    for cond in _conds(entry):
        if cond.startswith(("icmp ", "icmpv6 ")):
            return True
        if cond.startswith(("ip protocol ==", "l4proto ==", "ip6 nexthdr ==", "l4proto in")) and \
                any(word in cond.split(" ", 2)[-1] for word in ICMP_WORDS):
            return True
    return False


def _er_accept(entry):
    """An accept of established packets not limited by protocol or other matches."""
    info = entry["info"]
    states = _states(entry)
    return (info["verdict"] == "accept" and states is not None and "established" in states
            and not info["proto"] and not info["other"] and not any(c["proto"] for c in entry["path"]))


def _general(entry):
    return not _conds(entry)


def _accepts_new(entry):
    info = entry["info"]
    if info["verdict"] != "accept" or _is_loopback(entry) or info.get("nat"):
        return False
    states = _states(entry)
    if states is None:
        return not _is_icmp(entry) and not info["ct_status"]
    return "new" in states


def _opaque(entry):
    """A match this reader cannot compare (xt compat, fib, marks, ...) on the rule or its path."""
    return entry["info"]["other"] or any(call["other"] and not call.get("vmap_key") for call in entry["path"])


def _drops(entry):
    return entry["info"]["verdict"] in ("drop", "reject")


def _hits_established(entry):
    states = _states(entry)
    return states is None or bool(states & set(["established", "related"]))


def _split_cond(cond):
    """("left op", set of values) from a normalised condition string."""
    for op in (" == ", " in ", " != "):
        if op in cond:
            left, value = cond.split(op, 1)
            if value.startswith("{ ") and value.endswith(" }"):
                values = set(item.strip() for item in value[2:-2].split(", "))
            else:
                values = set([value])
            return left + op.rstrip(), values
    return cond, set()


def _value_covers(general, specific):
    if general == specific:
        return True
    try:
        return ipaddress.ip_network(specific, strict=False).subnet_of(ipaddress.ip_network(general, strict=False))
    except (ValueError, TypeError, AttributeError):
        return False


def _cond_covers(general, specific):
    """Whether every packet matching condition ``specific`` also matches ``general``."""
    if general == specific:
        return True
    g_key, g_values = _split_cond(general)
    s_key, s_values = _split_cond(specific)
    if g_key != s_key or g_key.endswith("!=") or not s_values or any(v.startswith("@") for v in g_values):
        return False
    return all(any(_value_covers(g, v) for g in g_values) for v in s_values)


def _subsumes(general_conds, specific_conds):
    """Whether a rule matching ``general_conds`` matches every packet that ``specific_conds`` matches."""
    return all(any(_cond_covers(g, s) for s in specific_conds) for g in general_conds)


def _site_covers(er_entry, entry):
    """Whether ``entry`` is reached after ``er_entry`` in the same chain invocation (or deeper from there)."""
    site = er_entry["site"]
    depth = len(site)
    if entry["site"][:depth] != site:
        return False
    if len(entry["site"]) == depth:
        return entry["chain"] == er_entry["chain"]
    return entry["site"][depth][0] == er_entry["chain"]


def _returns_to(er_entry, entry):
    """Whether a packet that leaves ``entry``'s chain without a verdict comes back to ``er_entry``, a rule later in
    an enclosing chain: only when the call out of ``er_entry``'s chain was a jump (a goto does not come back; the
    chain that made it is done, and the packet returns above it, to the policy for a base chain)."""
    site = er_entry["site"]
    depth = len(site)
    if entry["site"][:depth] != site:
        return False
    if len(entry["site"]) == depth:
        return entry["chain"] == er_entry["chain"] and entry["position"] < er_entry["position"]
    call_chain, call_position = entry["site"][depth]
    return call_chain == er_entry["chain"] and call_position < er_entry["position"] and \
        entry["path"][depth].get("kind") != "goto"


class _Chain(object):
    """One base chain read for one address family."""

    def __init__(self, ruleset, chain, nfproto, walked):
        self.chain = chain
        self.nfproto = nfproto
        self.entries = [e for e in walked if nfproto in _nft.path_nfprotos(e)]
        self.drops = chain.get("policy") == "drop" or any(
            _drops(e) and _nft.unconditional(e, nfproto) for e in self.entries)

    @property
    def key(self):
        return (self.chain["family"], self.chain["table"], self.chain["name"])


def _finding(fid, severity, chain_or_table, entry, detail, nfproto, **extra):
    if isinstance(chain_or_table, dict) and "hook" in chain_or_table:
        family, table = chain_or_table["family"], chain_or_table["table"]
        hook, prio = chain_or_table["hook"], _nft.priority(chain_or_table)
    else:
        family, table = chain_or_table
        hook, prio = None, None
    item = {"id": fid, "severity": severity, "title": TITLES[fid], "family": family, "table": table,
            "chain": entry["chain"] if entry else None, "position": entry["position"] if entry else None,
            "handle": entry["handle"] if entry else None,
            "rule": _nft.rule_text(entry["rule"]) if entry else None,
            "hook": hook, "priority": prio, "nfprotos": [nfproto] if nfproto else [],
            "detail": detail, "fix": FIXES[fid]}
    item.update(extra)
    return item


# ---- the checks ----

def _order_findings(view):
    chain = view.chain
    findings = []
    er_entries = []
    offenders = []
    new_accepts = []
    for entry in view.entries:
        info = entry["info"]
        if info["verdict"] in ("jump", "goto", "vmap"):
            continue
        if _er_accept(entry):
            if _general(entry):
                # a NEW accept before an established,related accept that every packet reaches is covered by it
                new_accepts = [e for e in new_accepts if not _returns_to(entry, e)]
                if offenders:
                    first, reason = offenders[0]
                    findings.append(_finding(
                        "NGNF002", "medium" if reason == "dropping" else "low", chain, first,
                        "%d rule(s) before the established,related accept (chain %s position %d) can drop or "
                        "log established packets; the first is %s" % (
                            len(offenders), entry["chain"], entry["position"], reason), view.nfproto))
                break
            er_entries.append(entry)
            continue
        covered = any(_site_covers(er, entry) or _subsumes(_conds(er), _conds(entry)) for er in er_entries)
        if view.drops and not covered and _accepts_new(entry):
            new_accepts.append(entry)
        if covered:
            continue
        if _drops(entry) and _hits_established(entry):
            offenders.append((entry, "dropping"))
        elif _hits_established(entry) and info["expensive"]:
            offenders.append((entry, "logging" if info["log"] else "expensive"))
    if new_accepts:
        entry = new_accepts[0]
        dns = any(c in ("udp dport == 53", "tcp dport == 53") for c in _conds(entry))
        findings.insert(0, _finding(
            "NGNF001", "high", chain, entry,
            "the %s base chain drops by default and accepts NEW flows with no established,related accept "
            "that their packets reach: replies to this host's own connections are dropped%s" % (
                chain["hook"], "; 'dport 53' opens DNS for queries to this host, while the answers to its own "
                "queries come from port 53 and are dropped" if dns else ""), view.nfproto))
    return findings


def _router_interfaces(view):
    names = set()
    for entry in view.entries:
        for cond in _conds(entry):
            for key in ("iifname == ", "oifname == ", "iif == ", "oif == "):
                if cond.startswith(key):
                    name = cond[len(key):]
                    if name != "lo" and not name.startswith("{") and "*" not in name:
                        names.add(name)
    return names


def _invalid_findings(view, context):
    findings = []
    names = _router_interfaces(view)
    for entry in view.entries:
        if not _drops(entry) or _states(entry) != set(["invalid"]):
            continue
        if any(call["scoped"] for call in entry["path"]) or entry["info"]["scoped"]:
            continue
        why = []
        if context.get("multi_homed"):
            why.append("the host is multi-homed")
        if context.get("tcp_be_liberal"):
            why.append("nf_conntrack_tcp_be_liberal=1 says out-of-window packets are expected")
        if why:
            severity = "high"
        elif len(names) > 1:
            severity = "medium"
            why.append("the forward rules name %d interfaces (%s): this rule set describes a router" % (
                len(names), ", ".join(sorted(names))))
        else:
            severity = "low"
            why.append("harmless while every flow passes this host in both directions (one uplink, symmetric "
                       "routing); it breaks as soon as a return path bypasses it")
        findings.append(_finding("NGNF003", severity, view.chain, entry,
                                 "invalid is dropped for every forwarded packet; " + "; ".join(why), view.nfproto))
    return findings


def _dnat_address(info):
    addr = (info.get("dnat") or {}).get("addr")
    return addr if isinstance(addr, str) else None


def _daddr_values(entry):
    values = []
    for cond in _conds(entry):
        for key in ("ip daddr == ", "ip6 daddr == "):
            if cond.startswith(key):
                values.append(cond[len(key):])
    return values


def _contains(network, address):
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False


def _dnat_rules(ruleset, nfproto):
    out = []
    for chain in _nft.base_chains(ruleset):
        if nfproto not in _nft.FAMILY_NFPROTO.get(chain["family"], ()):
            continue
        for entry in _nft.walk(ruleset, chain):
            if entry["info"].get("nat") == "dnat" and nfproto in _nft.path_nfprotos(entry):
                out.append((chain, entry, _dnat_address(entry["info"])))
    return out


def _dnat_findings(ruleset, views, nfproto):
    dnats = _dnat_rules(ruleset, nfproto)
    findings = []
    if not dnats:
        return findings, dnats
    for view in views:
        if view.chain["hook"] != "forward" or not view.drops:
            continue
        for chain, entry, address in dnats:
            accepted = False
            for other in view.entries:
                if other["info"]["verdict"] != "accept":
                    continue
                if "dnat" in (other["info"]["ct_status"] or set()):
                    accepted = True
                elif _accepts_new(other):
                    dests = _daddr_values(other)
                    accepted = not dests or (address is not None and any(_contains(d, address) for d in dests))
                if accepted:
                    break
            if not accepted:
                findings.append(_finding(
                    "NGNF004", "high", chain, entry,
                    "forward chain %s %s %s drops by default and nothing there accepts flows DNATed to %s" % (
                        view.chain["family"], view.chain["table"], view.chain["name"], address or "this target"),
                    nfproto))
    return findings, dnats


def _covered_by(drop_view, entry, dnat_addresses):
    """Whether the dropping chain accepts what ``entry`` (in another table) accepts."""
    states = _states(entry)
    conds = _conds(entry)
    for other in drop_view.entries:
        if other["info"]["verdict"] != "accept" or _opaque(other):
            continue
        other_states = _states(other)
        if other_states is not None and states is not None and states <= other_states \
                and _subsumes(_conds(other), conds):
            return True
        if other_states is not None and states is None:
            if "dnat" in (other["info"]["ct_status"] or set()) and any(
                    _contains(d, a) for d in _daddr_values(entry) for a in dnat_addresses if a):
                return True
            continue
        if other_states is None and not other["info"]["ct_status"] and _subsumes(_conds(other), conds):
            return True
    return False


def _hook_findings(views, nfproto, dnat_addresses, xtables=()):
    findings = []
    by_hook = {}
    for view in views:
        if view.chain.get("type", "filter") == "filter":
            by_hook.setdefault(view.chain["hook"], []).append(view)
    for hook, group in sorted(by_hook.items()):
        for drop_view in group:
            if not drop_view.drops:
                continue
            for accept_view in group:
                accept_table = (accept_view.chain["family"], accept_view.chain["table"])
                # two base chains of one table on a hook are as independent as two tables' chains
                if accept_view.key == drop_view.key or accept_table in xtables:
                    continue
                uncovered = [e for e in accept_view.entries
                             if _accepts_new(e) and not _covered_by(drop_view, e, dnat_addresses)]
                if not uncovered:
                    continue
                first = uncovered[0]
                dc, ac = drop_view.chain, accept_view.chain
                order = "runs after" if _nft.priority(dc) > _nft.priority(ac) else (
                    "runs before" if _nft.priority(dc) < _nft.priority(ac) else "runs at the same priority as")
                findings.append(_finding(
                    "NGNF005", "medium", ac, first,
                    "%d accept(s) in %s %s chain %s (priority %d) do not get the packet through: %s %s chain %s "
                    "(priority %d) %s it on the %s hook and drops what it does not accept itself" % (
                        len(uncovered), ac["family"], ac["table"], ac["name"], _nft.priority(ac), dc["family"],
                        dc["table"], dc["name"], _nft.priority(dc), order, hook), nfproto,
                    dropping_table="%s %s" % (dc["family"], dc["table"]), dropping_chain=dc["name"]))
    return findings


def _notrack_findings(views, nfproto, all_entries):
    """``all_entries``: the rules of every base chain of every family (a stateless accept of the same match in
    either family is a deliberate choice, such as an IPv6-only web front)."""
    findings = []
    for view in views:
        if view.chain["hook"] not in ("prerouting", "output"):
            continue
        for entry in view.entries:
            if not entry["info"]["notrack"]:
                continue
            notrack_conds = _conds(entry)
            checked = ("input", "forward") if view.chain["hook"] == "prerouting" else ("output",)
            droppers = [v for v in views if v.chain["hook"] in checked and v.drops
                        and v.chain.get("type", "filter") == "filter"]
            if not droppers:
                continue
            handled = False
            # handled in any family counts: a stateless accept that shares the match is a deliberate choice
            for other in all_entries:
                if other["info"]["verdict"] != "accept" or other["chain"] == entry["chain"]:
                    continue
                states = _states(other)
                if states is not None and "untracked" not in states:
                    continue
                other_conds = _conds(other)
                if states is not None and _subsumes(other_conds, notrack_conds):
                    handled = True
                elif states is None and (_subsumes(other_conds, notrack_conds) or
                                         _subsumes(notrack_conds, other_conds)) and not _is_loopback(other):
                    handled = True if other_conds or not notrack_conds else handled
                if handled:
                    break
            if not handled:
                names = ", ".join("%s %s %s" % (v.chain["family"], v.chain["table"], v.chain["name"])
                                  for v in droppers)
                findings.append(_finding(
                    "NGNF006", "high", view.chain, entry,
                    "packets notracked here can never be established or related; %s drop(s) by default and "
                    "accept them neither by ct state untracked nor by a stateless rule of the same match, so "
                    "they (and the replies to this host's own connections they cover) are dropped" % names,
                    nfproto))
    return findings


def _nexthdr_findings(ruleset, xtables=()):
    findings = []
    for key, chain in sorted(ruleset["chains"].items()):
        if key[:2] in xtables:
            continue
        for position, rule in enumerate(chain["rules"], 1):
            info = _nft.analyse_rule(rule)
            if info["nexthdr_icmpv6"] and info["verdict"] == "accept":
                entry = {"chain": chain["name"], "position": position, "handle": rule.get("handle"), "rule": rule}
                findings.append(_finding("NGNF007", "low", (key[0], key[1]), entry,
                                         "ip6 nexthdr matches the first header after the IPv6 header only: ICMPv6 "
                                         "behind a hop-by-hop header (MLD) is not accepted by this rule", None,
                                         nfprotos=["ipv6"]))
    return findings


def _conf_findings(context, tables):
    conf = context.get("nftables_conf")
    if not conf or not conf.get("flush_ruleset"):
        return []
    others = ["%s %s (%s)" % (t["family"], t["name"], t["owner"]) for t in tables or []
              if t["owner"] not in ("nftables.conf", "iptables-nft", "nodeguard.conntrack")]
    if not others:
        return []
    enabled = context.get("nftables_service_enabled")
    return [{"id": "NGNF008", "severity": "medium" if enabled else "low", "title": TITLES["NGNF008"],
             "family": None, "table": None, "chain": None, "position": None, "handle": None,
             "rule": "flush ruleset", "hook": None, "priority": None, "nfprotos": [],
             "detail": "%s starts with 'flush ruleset'%s; loading it deletes %s" % (
                 context.get("nftables_conf_path") or "/etc/nftables.conf",
                 " and nftables.service is enabled" if enabled else " (nftables.service is not enabled)",
                 ", ".join(others)),
             "fix": FIXES["NGNF008"]}]


def audit(ruleset, context=None, tables=None):
    """Findings for a parsed rule set, most severe first. ``context``: multi_homed, tcp_be_liberal,
    nftables_conf (see nft_inventory.nftables_conf), nftables_service_enabled. ``tables``: the inventory
    (computed when not given).

    Tables the iptables view covers (iptables-nft's) are iptables_audit's to lint; here they only count as the
    dropping side of NGNF005, since their drop is as final for another table's packet as any other.
    """
    context = context or {}
    if tables is None:
        tables = _inventory.inventory(ruleset)
    xtables = set((t["family"], t["name"]) for t in tables if t.get("iptables_view"))
    raw = []
    bases = [c for c in _nft.base_chains(ruleset) if c["family"] in _nft.FAMILY_NFPROTO]
    walked = dict(((c["family"], c["table"], c["name"]), _nft.walk(ruleset, c)) for c in bases)
    all_entries = [entry for key, entries in walked.items() if key[:2] not in xtables for entry in entries]
    for nfproto in NFPROTOS:
        views = [_Chain(ruleset, c, nfproto, walked[(c["family"], c["table"], c["name"])]) for c in bases
                 if nfproto in _nft.FAMILY_NFPROTO[c["family"]]]
        native = [v for v in views if (v.chain["family"], v.chain["table"]) not in xtables]
        filters = [v for v in native if v.chain.get("type", "filter") == "filter"]
        for view in filters:
            if view.chain["hook"] in ("input", "forward"):
                raw.extend(_order_findings(view))
            if view.chain["hook"] == "forward":
                raw.extend(_invalid_findings(view, context))
        dnat_found, dnats = _dnat_findings(ruleset, filters, nfproto)
        raw.extend(dnat_found)
        droppers = [v for v in views if v.chain.get("type", "filter") == "filter"]
        raw.extend(_hook_findings(droppers, nfproto, [address for _c, _e, address in dnats], xtables))
        raw.extend(_notrack_findings(native, nfproto, all_entries))
    raw.extend(_nexthdr_findings(ruleset, xtables))
    raw.extend(_conf_findings(context, tables))
    return _merge(raw)


def _merge(raw):
    """One finding per rule and id: an inet rule found for IPv4 and IPv6 lists both in ``nfprotos``."""
    merged = {}
    order = []
    for item in raw:
        key = (item["id"], item["family"], item["table"], item["chain"], item["position"], item.get("dropping_table"))
        if key in merged:
            existing = merged[key]
            existing["nfprotos"] = sorted(set(existing["nfprotos"]) | set(item["nfprotos"]))
            if SEVERITIES.index(item["severity"]) > SEVERITIES.index(existing["severity"]):
                existing["severity"], existing["detail"] = item["severity"], item["detail"]
            continue
        merged[key] = item
        order.append(key)
    rank = dict((name, index) for index, name in enumerate(reversed(SEVERITIES)))
    return sorted((merged[key] for key in order),
                  key=lambda f: (rank[f["severity"]], f["id"], f["family"] or "", f["table"] or "", f["chain"] or "",
                                 f["position"] or 0))


def summary(findings):
    counts = dict((severity, 0) for severity in SEVERITIES)
    for finding in findings:
        counts[finding["severity"]] += 1
    return counts
