# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Audit live rule sets for the classic conntrack mistakes.

Private to the collection. Pure: parsed rule sets (see ``save_parser.parse_save``) and a context in, findings out.

Finding ids are stable (documented in docs/firewall.md):

- NGCT001 flows accepted whose ESTABLISHED/RELATED packets (follow-ups, replies, ICMP errors) are dropped, or
  replies to this host's own connections dropped; low for a stateless rule set that never uses conntrack.
- NGCT002 the ESTABLISHED,RELATED accept comes after rate-limit drops that established packets hit (medium) or after
  expensive matches and LOG rules (low).
- NGCT003 Unscoped INVALID drop in FORWARD (high when multi-homed or nf_conntrack_tcp_be_liberal=1).
- NGCT004 DNAT (nat PREROUTING, to a non-local address) while FORWARD drops and nothing accepts the DNATed flows.
- NGCT005 Rules split across the nft and legacy backends.
- NGCT006 an ESTABLISHED,RELATED accept that no established packet reaches (after an unconditional DROP/ACCEPT, a
  ``-j RETURN`` or a goto); high when established packets are dropped instead.
- NGCT007 INVALID packets reach ACCEPT rules (medium; high in FORWARD when the host does SNAT/MASQUERADE, because
  INVALID packets skip NAT and leave untranslated) or are answered by REJECT instead of dropped (low).
- NGCT008 ``-m state`` used instead of ``-m conntrack --ctstate`` (info).
- NGCT009 NOTRACK (raw table) for packets that the filter table then drops because nothing accepts UNTRACKED.

How it works: a small path evaluator over the chain graph. A *packet class* is a conntrack state (NEW, ESTABLISHED,
RELATED, INVALID, UNTRACKED; DNAT known or not) plus a *context*: what is known about the packets (interfaces,
addresses, protocol, ports, other matches), as a list of (key, value, negated) atoms. Walking a built-in chain for a
class follows jumps, gotos, RETURNs and the policy; each rule either matches none, some or all of the packets of the
class that reach it. A rule matching all of them ends the walk (ACCEPT/DROP/REJECT), leaves the called chain
(RETURN) or skips the rest of the caller (goto); the packets' *fate* is where the walk ends. Rules of well-known
tools (Docker, kube-proxy, Calico, ufw, fail2ban, ...) are reported at low severity at most: those tools manage them
and the fix goes into the tool's hook chain.
"""

import ipaddress

from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import save_parser as fw_save
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall.audit_paths import (
    ADDR_KEYS,
    CONTRA,
    describe,
    evaluate,
    fates,
    IFACE_KEYS,
    _is_chain,
    parse_rule,
    PORT_KEYS,
    reverse,
    _rules,
    SAT,
    _state_against,
)
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import audit_tools as tools_mod
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall.audit_tools import SEVERITIES
EXPENSIVE_MATCHES = ("recent", "hashlimit", "string", "u32", "bpf", "connlimit", "geoip", "time", "quota", "osf")
RATE_MATCHES = ("recent", "hashlimit", "connlimit", "limit")
LOG_TARGETS = ("LOG", "NFLOG", "ULOG")
DROPS = ("DROP", "REJECT")
STATES = ("NEW", "ESTABLISHED", "RELATED", "INVALID", "UNTRACKED")
ICMP = {"ipv4": "icmp", "ipv6": "ipv6-icmp"}
FIXES = {
    "NGCT001": "Accept RELATED,ESTABLISHED (-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT) before the rules "
               "that accept NEW flows and before the drop (the iptables_baseline module puts it first); per-port "
               "ESTABLISHED rules miss replies to this host's own connections and the ICMP errors path MTU discovery "
               "needs.",
    "NGCT002": "Move the RELATED,ESTABLISHED accept before rate limits and expensive rules, or limit those to "
               "--ctstate NEW: established packets are the bulk of the traffic, should leave the chain on the first "
               "rule and must not count towards a limit that drops them.",
    "NGCT003": "Scope the INVALID drop to the interfaces and sources where both directions of every flow pass this "
               "host (input.invalid_drop / forward.invalid_drop in_interfaces, sources, exemptions), or drop it from "
               "FORWARD; with asymmetric routing the forward path sees one direction and marks it INVALID.",
    "NGCT004": "Accept DNATed flows in FORWARD before the drop (-m conntrack --ctstate DNAT -j ACCEPT, the baseline's "
               "forward.accept_dnat) or add an accept for the translated destination and port.",
    "NGCT005": "Use one backend: move the rules of the other backend (iptables-legacy-save vs iptables-nft-save) and "
               "make every tool (kube-proxy, Docker, fail2ban, this collection) use the same one.",
    "NGCT006": "Move the RELATED,ESTABLISHED accept above the rule that ends the walk first (an unconditional DROP, "
               "ACCEPT, RETURN or goto), normally to the top of the chain.",
    "NGCT007": "Drop INVALID before the accept rules (-m conntrack --ctstate INVALID -j DROP right after the "
               "RELATED,ESTABLISHED accept; input.invalid_drop / forward.invalid_drop of the baseline); INVALID packets "
               "skip NAT, so a NAT router forwards them with the untranslated address. For a tool's chains put the "
               "drop in the tool's hook chain (DOCKER-USER for Docker).",
    "NGCT008": "Use -m conntrack --ctstate instead of the legacy -m state --state alias; only conntrack also matches "
               "DNAT/SNAT and the other conntrack fields.",
    "NGCT009": "Accept the untracked flows explicitly (add UNTRACKED to the RELATED,ESTABLISHED accept or accept "
               "--ctstate UNTRACKED for the exempted ports), or remove the NOTRACK rule: untracked packets are neither "
               "ESTABLISHED nor RELATED.",
}
TITLES = {
    "NGCT001": "NEW accepted with no ESTABLISHED,RELATED accept before it",
    "NGCT002": "ESTABLISHED,RELATED accept placed after rate limits or expensive rules",
    "NGCT003": "unscoped INVALID drop in FORWARD",
    "NGCT004": "DNAT present while FORWARD drops the DNATed flows",
    "NGCT005": "rules split across the nft and legacy backends",
    "NGCT006": "ESTABLISHED,RELATED accept unreachable",
    "NGCT007": "INVALID packets not dropped",
    "NGCT008": "legacy -m state match",
    "NGCT009": "NOTRACK without an UNTRACKED accept",
}


# ---------------------------------------------------------------------------------------------------------------
# helpers for the findings


def _loopback(ctx):
    return any(key in IFACE_KEYS and value == "lo" and not neg for key, value, neg in ctx)


def _icmp(ctx):
    return any(key == "-p" and value in ("icmp", "ipv6-icmp") and not neg for key, value, neg in ctx)


def _scoping(ctx):
    return [atom for atom in ctx if atom[0] in IFACE_KEYS + ADDR_KEYS]


def _finding(fid, severity, family, backend, table, chain, position, spec, detail, affects):
    return {"id": fid, "severity": severity, "title": TITLES[fid], "family": family, "backend": backend,
            "table": table, "chain": chain, "position": position,
            "rule": ("-A %s %s" % (chain, spec)) if spec is not None else None, "detail": detail, "affects": affects,
            "fix": FIXES[fid]}


def _event_finding(fid, severity, item, table, event, detail, affects, builtin=None):
    if event is None:
        return _finding(fid, severity, item["family"], item["backend"], table, builtin, None, None, detail, affects)
    return _finding(fid, severity, item["family"], item["backend"], table, event["chain"], event["position"],
                    event["spec"], detail, affects)


def _is_est_accept(rule):
    states = rule["states"]
    return (rule["target"] == "ACCEPT" and states is not None and not states[1] and "ESTABLISHED" in states[0])


def _static_rules(table, builtin, cache):
    """Every (chain, position, spec, rule) in the built-in chain and the chains it jumps to, once each."""
    seen, out, todo = set(), [], [builtin]
    while todo:
        chain = todo.pop(0)
        if chain in seen:
            continue
        seen.add(chain)
        for position, spec, rule in _rules(table, chain, cache):
            out.append((chain, position, spec, rule))
            if _is_chain(table, rule["target"]):
                todo.append(rule["target"])
    return out


# ---------------------------------------------------------------------------------------------------------------
# the findings


def _coverage_gaps(ruleset, builtin, event, family, cache):
    """What happens to the ESTABLISHED/RELATED packets of the flows a NEW accept admits: list of (what, fate)."""
    ctx = list(event["ctx"])
    reply_chain = "FORWARD" if builtin == "FORWARD" else "OUTPUT"
    related_ctx = [(key, value, neg) for key, value, neg in (reverse(ctx) if builtin == "FORWARD" else ctx)
                   if key in IFACE_KEYS] + [("-p", ICMP[family], False)]
    checks = (("their later packets (%s)" % describe(ctx), builtin, ("ESTABLISHED", None), ctx),
              ("their replies in %s (%s)" % (reply_chain, describe(reverse(ctx))), reply_chain,
               ("ESTABLISHED", None), reverse(ctx)),
              ("their ICMP errors (RELATED, %s)" % describe(related_ctx), builtin, ("RELATED", None), related_ctx))
    gaps = []
    for what, chain, klass, context in checks:
        lost = [fate for fate in fates(ruleset, "filter", chain, klass, context, cache)
                if fate.verdict != "ACCEPT" and not fate.forked]
        if lost:
            gaps.append((what, lost[0]))
    return gaps


def _own_replies_lost(ruleset, family, cache):
    """Replies to this host's own connections (and their ICMP errors) that INPUT drops: [(what, fate)]."""
    out_new = evaluate(ruleset, "filter", "OUTPUT", ("NEW", None), [], cache)
    if out_new.verdict != "ACCEPT" and not out_new.accepts():
        return []
    lost = []
    for name, klass, ctx in (("ESTABLISHED replies to this host's connections", ("ESTABLISHED", None), []),
                             ("RELATED ICMP errors", ("RELATED", None), [("-p", ICMP[family], False)])):
        walk = evaluate(ruleset, "filter", "INPUT", klass, ctx, cache)
        if walk.verdict in DROPS:
            lost.append((name, walk))
    return lost


def _established_findings(item, tools, cache):
    """NGCT001 (flows whose ESTABLISHED/RELATED packets are dropped), NGCT006 (unreachable ER accept)."""
    ruleset, family = item["ruleset"], item["family"]
    filt = ruleset["filter"]
    findings = []
    unreachable_chains = set()
    for builtin in ("INPUT", "FORWARD", "OUTPUT"):
        for chain, position, spec, rule in _static_rules(filt, builtin, cache):
            if not _is_est_accept(rule):
                continue
            walk = evaluate(ruleset, "filter", builtin, ("ESTABLISHED", None), rule["atoms"], cache)
            if walk.reached(chain, position):
                continue
            killer = walk.stops.get(chain)
            if killer is None or killer["position"] > position:
                killer = walk.end
            where = ("-A %s %s (%s position %d)" % (killer["chain"], killer["spec"], killer["chain"],
                                                    killer["position"]) if killer else walk.where())
            dropped = walk.verdict in DROPS
            tool = tools.of_event({"chain": chain, "path": (), "rule": rule})
            # dead but harmless when an earlier rule accepts established packets anyway (a redundant rule)
            severity = tools_mod.cap("high", tool) if dropped else "info"
            findings.append(_finding(
                "NGCT006", severity, family, item["backend"], "filter", chain, position, spec,
                "no ESTABLISHED packet reaches this accept: %s ends their walk first; they end at %s%s" % (
                    where, walk.where(), tools_mod.tool_note(tool)),
                "%s %s ESTABLISHED,RELATED packets (%s): %s" % (
                    family, builtin, describe(rule["atoms"]),
                    "dropped" if dropped else "accepted by an earlier rule, this one is dead")))
            if dropped:
                unreachable_chains.add(builtin)
            break  # one per built-in chain
    stateless = not any(parse_rule(spec)["states"] is not None for data in ruleset.values()
                        for rules in data["rules"].values() for spec in rules)
    for builtin in ("INPUT", "FORWARD"):
        if builtin in unreachable_chains:
            continue
        new = evaluate(ruleset, "filter", builtin, ("NEW", None), [], cache)
        accepts = new.accepts(lambda ev: _loopback(ev["ctx"]))
        lost = _own_replies_lost(ruleset, family, cache) if builtin == "INPUT" else []
        for event in accepts:
            gaps = _coverage_gaps(ruleset, builtin, event, family, cache)
            if not gaps:
                continue
            tool = tools.of_event(event)
            what = ["%s end at %s" % (name, fate.where()) for name, fate in gaps]
            affects = ["%s dropped" % name for name, fate in gaps]
            if lost:
                what.extend("%s end at %s" % (name, fate.where()) for name, fate in lost)
                affects.append("replies to this host's own connections and its ICMP errors (path MTU discovery)")
            if evaluate(ruleset, "filter", builtin, ("ESTABLISHED", None), [], cache).verdict != "ACCEPT":
                what.append("%s has no general RELATED,ESTABLISHED accept" % builtin)
            findings.append(_event_finding(
                "NGCT001", tools_mod.cap("high", tool), item, "filter", event,
                "%s accepts NEW flows (%s) but %s%s" % (builtin, describe(event["ctx"]), "; ".join(what),
                                                        tools_mod.tool_note(tool)),
                "%s %s: %s" % (family, builtin, "; ".join(affects))))
            break
        else:
            if lost:
                first = accepts[0] if accepts else None
                findings.append(_event_finding(
                    "NGCT001", "high", item, "filter", first,
                    "this host opens connections (OUTPUT accepts NEW) but INPUT has no general RELATED,ESTABLISHED "
                    "accept: %s" % "; ".join("%s end at %s" % (name, fate.where()) for name, fate in lost),
                    "%s INPUT: replies to this host's own connections and ICMP errors (path MTU discovery), except "
                    "those matching a narrower accept" % family, builtin="INPUT"))
    if stateless:
        for builtin in ("INPUT", "FORWARD"):
            new = evaluate(ruleset, "filter", builtin, ("NEW", None), [], cache)
            accepts = new.accepts(lambda ev: _loopback(ev["ctx"]))
            if accepts and not any(f["id"] == "NGCT001" and f["chain"] == accepts[0]["chain"] for f in findings):
                findings.append(_event_finding(
                    "NGCT001", "low", item, "filter", accepts[0],
                    "the rule set never uses conntrack: %s accepts by port and address only, so every packet "
                    "(ESTABLISHED, INVALID) walks the chain and the policy %s decides the rest" % (
                        builtin, new.verdict),
                    "%s %s: every packet, stateless" % (family, builtin)))
                break
    return findings


def _order_findings(item, tools, cache):
    """NGCT002: rate-limit drops and expensive rules that established packets meet before the ER accept."""
    ruleset, family = item["ruleset"], item["family"]
    findings = []
    for builtin in ("INPUT", "FORWARD"):
        walk = evaluate(ruleset, "filter", builtin, ("ESTABLISHED", None), [], cache)
        if walk.verdict != "ACCEPT" or walk.end is None or not _is_est_accept(walk.end["rule"]):
            continue
        rate, expensive = [], []
        for event in walk.events:
            rule = event["rule"]
            if event is walk.end:
                break
            if _loopback(event["ctx"]):
                continue
            heavy = set(rule["matches"]) & set(EXPENSIVE_MATCHES)
            if rule["target"] in DROPS and set(rule["matches"]) & set(RATE_MATCHES):
                rate.append(event)
            elif heavy or rule["target"] in LOG_TARGETS:
                expensive.append(event)
        accept = "-A %s %s (%s position %d)" % (walk.end["chain"], walk.end["spec"], walk.end["chain"],
                                                walk.end["position"])
        if rate:
            event = rate[0]
            tool = tools.of_event(event)
            findings.append(_event_finding(
                "NGCT002", tools_mod.cap("medium", tool), item, "filter", event,
                "established packets pass this rate limit before %s; when it trips they are dropped and open "
                "sessions break%s" % (accept, tools_mod.tool_note(tool)),
                "%s %s ESTABLISHED packets matching %s" % (family, builtin, describe(event["ctx"]))))
        elif expensive:
            event = expensive[0]
            findings.append(_event_finding(
                "NGCT002", "low", item, "filter", event,
                "%d expensive or logging rule(s) are evaluated for established packets before %s" % (
                    len(expensive), accept),
                "%s %s ESTABLISHED packets matching %s (cost only)" % (family, builtin, describe(event["ctx"]))))
    return findings


def _invalid_only(event):
    """Whether the rule (with the jumps leading to it) matches INVALID packets and neither NEW nor ESTABLISHED."""
    for rule in event["via"] + (event["rule"],):
        states = rule["states"]
        if states is not None and _state_against(states, ("INVALID", False)) == SAT and \
                _state_against(states, ("NEW", None)) == CONTRA and \
                _state_against(states, ("ESTABLISHED", None)) == CONTRA:
            return True
    return False


def _invalid_findings(item, tools, context, cache):
    """NGCT003 (unscoped INVALID drop in FORWARD) and NGCT007 (INVALID not dropped)."""
    ruleset, family = item["ruleset"], item["family"]
    findings = []
    severe = context.get("multi_homed") or context.get("tcp_be_liberal")
    walk = evaluate(ruleset, "filter", "FORWARD", ("INVALID", False), [], cache)
    for event in walk.events:
        if event["rule"]["target"] not in DROPS or not _invalid_only(event):
            continue
        if _scoping(event["ctx"]):
            continue
        why = []
        if context.get("multi_homed"):
            why.append("the host is multi-homed")
        if context.get("tcp_be_liberal"):
            why.append("nf_conntrack_tcp_be_liberal=1 says out-of-window packets are expected")
        tool = tools.of_event(event)
        findings.append(_event_finding(
            "NGCT003", tools_mod.cap("high" if severe else "medium", tool), item, "filter", event,
            "INVALID is dropped for every forwarded packet" + ("; " + " and ".join(why) if why else "") +
            tools_mod.tool_note(tool),
            "%s FORWARD: every INVALID packet, including out-of-window packets of flows routed asymmetrically" %
            family))
        break
    nat = ruleset.get("nat") or {}
    snat = any(parse_rule(spec)["target"] in ("SNAT", "MASQUERADE", "NETMAP")
               for rules in nat.get("rules", {}).values() for spec in rules)
    for builtin in ("INPUT", "FORWARD"):
        invalid = evaluate(ruleset, "filter", builtin, ("INVALID", False), [], cache)
        new = evaluate(ruleset, "filter", builtin, ("NEW", None), [], cache)
        denies = new.verdict in DROPS
        leaks = invalid.accepts(lambda ev: _loopback(ev["ctx"]) or _icmp(ev["ctx"]))
        if leaks:
            event = leaks[0]
            tool = tools.of_event(event)
            if not denies:
                severity = "info"
            elif builtin == "FORWARD" and snat:
                severity = "high"
            else:
                severity = "medium"
            detail = "INVALID packets reach %d accept rule(s) in %s before any INVALID drop, the first: this one" % (
                len(leaks), builtin)
            if builtin == "FORWARD" and snat:
                detail += "; the nat table masquerades, and INVALID packets skip NAT, so they leave with the " \
                          "untranslated (internal) address"
            if not denies:
                detail += "; %s accepts by default anyway" % builtin
            findings.append(_event_finding(
                "NGCT007", tools_mod.cap(severity, tool), item, "filter", event, detail + tools_mod.tool_note(tool),
                "%s %s INVALID packets matching %s: accepted%s" % (
                    family, builtin, describe(event["ctx"]),
                    " and forwarded untranslated" if builtin == "FORWARD" and snat else "")))
        elif builtin == "INPUT" and invalid.verdict == "REJECT" and invalid.end is not None and \
                _state_against(invalid.end["rule"]["states"], ("NEW", None)) != CONTRA and \
                not any(ev["rule"]["target"] in DROPS and _invalid_only(ev) for ev in invalid.events):
            findings.append(_event_finding(
                "NGCT007", "low", item, "filter", invalid.end,
                "no explicit INVALID drop: INVALID packets end at this REJECT, which answers them instead of "
                "dropping them silently",
                "%s %s INVALID packets: answered with a reject" % (family, builtin)))
    return findings


def _contains(network, address):
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False


def _dnat_address(to_destination):
    """First translated address of a --to-destination value (``a[-b][:port[-port]]``, IPv6 in brackets)."""
    text = to_destination or ""
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    if text.count(":") > 1:  # IPv6 without a port
        return text.split("-", 1)[0]
    return text.split(":", 1)[0].split("-", 1)[0]


def _dnat_port(to_destination):
    text = to_destination or ""
    if text.startswith("["):
        rest = text.split("]", 1)[1] if "]" in text else ""
        return rest[1:] if rest.startswith(":") else None
    if text.count(":") == 1:
        return text.split(":", 1)[1].split("/", 1)[0].replace("-", ":")
    return None


def _is_local(address, context):
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.is_loopback:
        return True
    return address in set(context.get("local_addresses") or ())


def _dnat_findings(item, context, cache):
    ruleset, family = item["ruleset"], item["family"]
    if not ruleset.get("nat") or not ruleset.get("filter"):
        return []
    prerouting = evaluate(ruleset, "nat", "PREROUTING", ("NEW", False), [], cache)
    findings, seen = [], set()
    for event in prerouting.events:
        rule = event["rule"]
        if rule["target"] != "DNAT" or (event["chain"], event["position"]) in seen:
            continue
        seen.add((event["chain"], event["position"]))
        address = _dnat_address(rule["to_destination"])
        if not address or _is_local(address, context):
            continue
        port = _dnat_port(rule["to_destination"])
        ctx = [atom for atom in event["ctx"] if atom[0] not in ("-d", "--dport") and atom[0] in
               IFACE_KEYS + ("-s", "-p", "--sport")]
        ctx.append(("-d", address, False))
        if port:
            ctx.append(("--dport", port, False))
        walk = evaluate(ruleset, "filter", "FORWARD", ("NEW", True), ctx, cache)
        if walk.verdict in DROPS and not walk.accepts():
            findings.append(_event_finding(
                "NGCT004", "high", item, "nat", event,
                "FORWARD accepts nothing of the flows DNATed to %s%s: they end at %s" % (
                    address, (":%s" % port) if port else "", walk.where()),
                "%s NEW flows matching %s, translated to %s" % (
                    family, describe(event["ctx"]), rule["to_destination"])))
    return findings


def _addrtype_local(ctx):
    """True/False when the context says the destination is / is not a local address, else None."""
    for key, value, neg in ctx:
        if key == "addrtype --dst-type" and value == "LOCAL":
            return not neg
    return None


def _accepts_new(ruleset, builtin, ctx, cache):
    walk = evaluate(ruleset, "filter", builtin, ("NEW", False), ctx, cache)
    # a loopback accept admits untracked packets as well: only other accepts count
    return walk.verdict == "ACCEPT" or bool(walk.accepts(lambda ev: _loopback(ev["ctx"])))


def _passes_tracked(ruleset, builtin, ctx, cache):
    """Whether ``builtin`` would pass the packets a NOTRACK rule exempts if they were tracked.

    They pass as NEW when the chain accepts NEW flows like them; as ESTABLISHED when they are the replies to flows
    the other direction opens: for a NOTRACK of a source port (or of no port), the flows this host opens to that port
    (OUTPUT accepts NEW to it) or, for OUTPUT, that this host serves (INPUT accepts NEW to it).
    """
    if _accepts_new(ruleset, builtin, ctx, cache):
        return True
    if builtin == "FORWARD":
        return False
    if any(key == "--dport" for key, _value, _neg in ctx):
        return False  # packets to a service port: NEW or nothing
    other = "OUTPUT" if builtin == "INPUT" else "INPUT"
    if not _accepts_new(ruleset, other, reverse(ctx), cache):
        return False
    return evaluate(ruleset, "filter", builtin, ("ESTABLISHED", False), ctx, cache).verdict == "ACCEPT"


def _notrack_findings(item, tools, cache):
    """NGCT009: packets exempted from conntrack that the filter table would pass tracked but drops untracked."""
    ruleset, family = item["ruleset"], item["family"]
    if not ruleset.get("raw") or not ruleset.get("filter"):
        return []
    findings = []
    for raw_chain, filter_chains in (("PREROUTING", ("INPUT", "FORWARD")), ("OUTPUT", ("OUTPUT",))):
        raw = evaluate(ruleset, "raw", raw_chain, ("NEW", False), [], cache)
        for event in raw.events:
            if not event["rule"]["notrack"]:
                continue
            local = _addrtype_local(event["ctx"])
            ctx = [atom for atom in event["ctx"] if atom[0] in IFACE_KEYS + ADDR_KEYS + PORT_KEYS + ("-p",)]
            for builtin in filter_chains:
                if (builtin == "FORWARD" and local is True) or (builtin == "INPUT" and local is False):
                    continue
                walk = evaluate(ruleset, "filter", builtin, ("UNTRACKED", False), ctx, cache)
                if walk.verdict not in DROPS:
                    continue
                if not _passes_tracked(ruleset, builtin, ctx, cache):
                    continue
                tool = tools.of_event(event)
                findings.append(_event_finding(
                    "NGCT009", tools_mod.cap("high", tool), item, "raw", event,
                    "packets this rule exempts from conntrack are UNTRACKED, neither NEW nor ESTABLISHED nor "
                    "RELATED; %s would pass them tracked, but nothing accepts them untracked and they end at %s%s" % (
                        builtin, walk.where(), tools_mod.tool_note(tool)),
                    "%s %s packets matching %s (UNTRACKED): dropped" % (family, builtin, describe(ctx))))
                break
    return findings


def _state_module_findings(item):
    hits = []
    for table in sorted(item["ruleset"]):
        data = item["ruleset"][table]
        for chain in data["chains"]:
            for position, spec in enumerate(data["rules"].get(chain, []), 1):
                if parse_rule(spec)["uses_state_module"]:
                    hits.append((table, chain, position, spec))
    if not hits:
        return []
    table, chain, position, spec = hits[0]
    return [_finding("NGCT008", "info", item["family"], item["backend"], table, chain, position, spec,
                     "%d rule(s) match with -m state; it works (an alias kept for compatibility) but cannot match "
                     "DNAT/SNAT or other conntrack fields" % len(hits),
                     "%s: none (style)" % item["family"])]


def audit(rulesets, context=None):
    """``rulesets``: list of {"family", "backend", "ruleset"}; returns findings sorted by severity then id.

    ``context``: {"multi_homed", "tcp_be_liberal", "local_addresses": [addresses of this host]}.
    """
    context = context or {}
    findings = []
    by_family = {}
    for item in rulesets:
        family, ruleset = item["family"], item["ruleset"]
        if fw_save.has_rules(ruleset):
            by_family.setdefault(family, []).append(item)
        cache = {}
        tools = tools_mod.Tools(ruleset.get("filter"))
        if ruleset.get("filter"):
            findings.extend(_established_findings(item, tools, cache))
            findings.extend(_order_findings(item, tools, cache))
            findings.extend(_invalid_findings(item, tools, context, cache))
        findings.extend(_dnat_findings(item, context, cache))
        findings.extend(_notrack_findings(item, tools_mod.Tools(ruleset.get("raw")), cache))
        findings.extend(_state_module_findings(item))
    for family, items in sorted(by_family.items()):
        backends = sorted(set(item["backend"] for item in items))
        if len(backends) > 1:
            minor = sorted(items, key=lambda item: _rule_count(item["ruleset"]))[0]
            table, chain, position, spec = _first_rule(minor["ruleset"])
            findings.append(_finding("NGCT005", "high", family, minor["backend"], table, chain, position, spec,
                                     "both %s hold %s rules; packets traverse both rule sets" % (
                                         " and ".join(backends), family),
                                     "%s: every packet (both rule sets)" % family))
    order = dict((name, index) for index, name in enumerate(reversed(SEVERITIES)))
    return sorted(findings, key=lambda f: (order[f["severity"]], f["id"], f["family"], f["backend"], f["table"],
                                           f["chain"] or "", f["position"] or 0))


def _rule_count(ruleset):
    return sum(len(rules) for data in ruleset.values() for rules in data["rules"].values())


def _first_rule(ruleset):
    for table in sorted(ruleset):
        data = ruleset[table]
        for chain in data["chains"]:
            for position, spec in enumerate(data["rules"].get(chain, []), 1):
                return table, chain, position, spec
    return None, None, None, None


def summary(findings):
    counts = dict((severity, 0) for severity in SEVERITIES)
    for finding in findings:
        counts[finding["severity"]] += 1
    return counts
