# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Audit live rule sets for the classic conntrack mistakes.

Private to the collection. Pure: parsed rule sets (see ``_fw_save.parse_save``) and a context in, findings out.

Finding ids are stable (documented in docs/firewall.md):

- NGCT001 NEW accepted with no ESTABLISHED,RELATED accept before it.
- NGCT002 ESTABLISHED,RELATED accept placed after rejecting or expensive rules.
- NGCT003 Unscoped INVALID drop in FORWARD (high when multi-homed or nf_conntrack_tcp_be_liberal=1).
- NGCT004 DNAT rules while FORWARD drops and nothing accepts the DNATed flows.
- NGCT005 Rules split across the nft and legacy backends.

Order is evaluated along the path a packet takes: the built-in chain's rules with every jump (``-j``/``-g``) into a
user chain followed in place, and the conditions of the jump carried into the rules of the called chain.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress

from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import save_parser as fw_save

SEVERITIES = ("info", "low", "medium", "high")
BUILTIN_TARGETS = ("ACCEPT", "DROP", "REJECT", "RETURN", "LOG", "NFLOG", "ULOG", "MARK", "CONNMARK", "CT", "NOTRACK",
                   "DNAT", "SNAT", "MASQUERADE", "REDIRECT", "TRACE", "AUDIT", "NFQUEUE", "QUEUE", "SET", "TCPMSS")
EXPENSIVE_MATCHES = ("recent", "hashlimit", "string", "u32", "bpf", "connlimit", "geoip", "time", "quota", "osf")
LOG_TARGETS = ("LOG", "NFLOG", "ULOG")
NEUTRAL_MATCHES = ("conntrack", "state", "comment")
MAX_DEPTH = 16

FIXES = {
    "NGCT001": "Accept RELATED,ESTABLISHED before any rule that accepts NEW flows (the iptables_baseline module puts "
               "it first); otherwise replies to this host's own connections depend on per-port rules and the policy.",
    "NGCT002": "Move the RELATED,ESTABLISHED accept before rejecting and expensive rules: established packets are the "
               "bulk of the traffic and should leave the chain on the first rule.",
    "NGCT003": "Scope the INVALID drop to the interfaces and sources where both directions of every flow pass this "
               "host (input.invalid_drop / forward.invalid_drop in_interfaces, sources, exemptions), or drop it from "
               "FORWARD; with asymmetric routing the forward path sees one direction and marks it INVALID.",
    "NGCT004": "Accept DNATed flows in FORWARD before the drop (-m conntrack --ctstate DNAT -j ACCEPT, the baseline's "
               "forward.accept_dnat) or add an accept for the translated destination.",
    "NGCT005": "Use one backend: move the rules of the other backend (iptables-legacy-save vs iptables-nft-save) and "
               "make every tool (kube-proxy, Docker, fail2ban, this collection) use the same one.",
}
TITLES = {
    "NGCT001": "NEW accepted with no ESTABLISHED,RELATED accept before it",
    "NGCT002": "ESTABLISHED,RELATED accept placed after rejecting or expensive rules",
    "NGCT003": "unscoped INVALID drop in FORWARD",
    "NGCT004": "DNAT present while FORWARD drops the DNATed flows",
    "NGCT005": "rules split across the nft and legacy backends",
}


def analyse(spec):
    """What a rule matches and does, from its iptables-save text."""
    words = fw_save.tokens(spec)
    info = {"target": None, "target_args": [], "states": None, "scoped": False, "proto": None, "matches": [],
            "in": None, "dest": [], "negated": False, "to_destination": None, "other": False, "conds": set()}
    index = 0
    negate = False
    while index < len(words):
        word = words[index]
        value = words[index + 1] if index + 1 < len(words) else None
        if word == "!":
            negate = True
            info["negated"] = True
            index += 1
            continue
        if word in ("-s", "--source", "-d", "--destination", "-i", "--in-interface", "-o", "--out-interface"):
            info["scoped"] = True
            short = {"--source": "-s", "--destination": "-d", "--in-interface": "-i", "--out-interface": "-o"}
            info["conds"].add("%s%s %s" % ("! " if negate else "", short.get(word, word), value))
            if word in ("-i", "--in-interface") and not negate:
                info["in"] = value
            if word in ("-d", "--destination") and not negate:
                info["dest"].append(value)
            index += 2
        elif word in ("-p", "--protocol"):
            info["proto"] = value
            index += 2
        elif word in ("-m", "--match"):
            info["matches"].append(value)
            index += 2
        elif word in ("--ctstate", "--state"):
            info["states"] = None if negate else set(value.split(","))
            index += 2
        elif word in ("-j", "--jump", "-g", "--goto"):
            info["target"] = value
            info["goto"] = word in ("-g", "--goto")
            info["target_args"] = words[index + 2:]
            if "--to-destination" in info["target_args"]:
                info["to_destination"] = info["target_args"][info["target_args"].index("--to-destination") + 1]
            break
        else:
            if word.startswith("-") and word not in ("--comment",):
                info["other"] = True
            index += 2 if value is not None and not value.startswith("-") else 1
        negate = False
    return info


def _unconditional(info):
    return (not info["scoped"] and info["proto"] is None and info["states"] is None and not info["other"]
            and all(m in ("comment",) for m in info["matches"]))


def _est_accept(info):
    """An accept of ESTABLISHED packets limited at most by interfaces/addresses (returns its conditions) or None."""
    if (info["target"] == "ACCEPT" and info["states"] is not None and "ESTABLISHED" in info["states"]
            and info["proto"] is None and all(m in NEUTRAL_MATCHES for m in info["matches"]) and not info["other"]):
        return info["conds"]
    return None


def _general_est_accept(info):
    return _est_accept(info) == set() and not info["negated"]


def _accepts_new(info):
    if info["target"] != "ACCEPT" or info["in"] == "lo":
        return False
    if info["states"] is None:
        return not (info["proto"] in ("icmp", "ipv6-icmp", "icmpv6"))
    return bool(info["states"] & set(["NEW", "DNAT"]))


def _may_hit_established(info):
    return info["states"] is None or bool(info["states"] & set(["ESTABLISHED", "RELATED"]))


def flatten(table, chain, depth=0, inherited=None, seen=None):
    """The rules a packet meets, in order, from a built-in chain, with user chains followed in place.

    Each item is (chain, position, spec, info, path) where ``path`` is the list of jump infos leading there.
    """
    inherited = inherited or []
    seen = seen or ()
    out = []
    if depth > MAX_DEPTH or chain in seen:
        return out
    for position, spec in enumerate(table["rules"].get(chain, []), 1):
        info = analyse(spec)
        target = info["target"]
        if target and target not in BUILTIN_TARGETS and target in table["rules"]:
            out.append((chain, position, spec, info, inherited))
            out.extend(flatten(table, target, depth + 1, inherited + [info], seen + (chain,)))
            continue
        out.append((chain, position, spec, info, inherited))
    return out


def _scoped_path(info, path):
    return info["scoped"] or any(item["scoped"] for item in path)


def _states_on_path(info, path):
    states = info["states"]
    for item in path:
        if item["states"] is not None:
            states = item["states"] if states is None else (states & item["states"])
    return states


def _finding(fid, severity, family, backend, table, chain, position, spec, detail):
    return {"id": fid, "severity": severity, "title": TITLES[fid], "family": family, "backend": backend,
            "table": table, "chain": chain, "position": position,
            "rule": ("-A %s %s" % (chain, spec)) if spec is not None else None, "detail": detail, "fix": FIXES[fid]}


def _drops_at_end(table, builtin, rules):
    if table["policies"].get(builtin) == "DROP":
        return True
    for _chain, _pos, _spec, info, path in rules:
        if info["target"] in ("DROP", "REJECT") and _unconditional(info) and all(_unconditional(p) for p in path):
            return True
    return False


def _order_findings(family, backend, table, builtin):
    findings = []
    rules = flatten(table, builtin)
    drops = _drops_at_end(table, builtin, rules)
    est_seen = False
    offenders = []
    reported_new = False
    scoped_est = []
    for chain, position, spec, info, path in rules:
        conds = set(info["conds"])
        for item in path:
            conds |= item["conds"]
        if _est_accept(info) is not None and not any(p["proto"] or p["states"] for p in path):
            scoped_est.append(conds)
        if _general_est_accept(info) and not any(p["scoped"] or p["proto"] for p in path):
            est_seen = True
            if offenders:
                chain0, position0, spec0, reason = offenders[0]
                findings.append(_finding(
                    "NGCT002", "medium" if reason == "rejecting" else "low", family, backend, "filter", chain0,
                    position0, spec0, "%d rule(s) before the ESTABLISHED,RELATED accept (%s -A %s position %d) are "
                    "rejecting or expensive; the first is %s" % (len(offenders), builtin, chain, position, reason)))
            break
        if info["target"] and info["target"] not in BUILTIN_TARGETS:
            continue  # the jump itself; its chain's rules follow
        covered = any(est <= conds for est in scoped_est)
        if _accepts_new(info) and not covered and not reported_new and not any(p["in"] == "lo" for p in path):
            reported_new = True
            findings.append(_finding(
                "NGCT001", "high" if drops else "low", family, backend, "filter", chain, position, spec,
                "%s accepts NEW flows before any general RELATED,ESTABLISHED accept%s" % (
                    builtin, "; the chain drops by default, so replies to this host's own connections are dropped"
                    if drops else "")))
        states = _states_on_path(info, path)
        hits_est = states is None or bool(states & set(["ESTABLISHED", "RELATED"]))
        if info["target"] in ("DROP", "REJECT") and hits_est:
            offenders.append((chain, position, spec, "rejecting"))
        elif hits_est and (info["target"] in LOG_TARGETS or set(info["matches"]) & set(EXPENSIVE_MATCHES)):
            offenders.append((chain, position, spec, "expensive"))
    if not est_seen and offenders and drops:
        chain0, position0, spec0, _reason = offenders[0]
        # no ESTABLISHED accept at all is already NGCT001's job when NEW is accepted; report drops otherwise
        if not reported_new:
            findings.append(_finding("NGCT002", "medium", family, backend, "filter", chain0, position0, spec0,
                                     "%s has no general RELATED,ESTABLISHED accept" % builtin))
    return findings


def _invalid_findings(family, backend, table, context):
    findings = []
    severe = context.get("multi_homed") or context.get("tcp_be_liberal")
    for chain, position, spec, info, path in flatten(table, "FORWARD"):
        if info["target"] not in ("DROP", "REJECT"):
            continue
        states = _states_on_path(info, path)
        if states is None or states != set(["INVALID"]):
            continue
        if _scoped_path(info, path):
            continue
        why = []
        if context.get("multi_homed"):
            why.append("the host is multi-homed")
        if context.get("tcp_be_liberal"):
            why.append("nf_conntrack_tcp_be_liberal=1 says out-of-window packets are expected")
        findings.append(_finding("NGCT003", "high" if severe else "medium", family, backend, "filter", chain,
                                 position, spec, "INVALID is dropped for every forwarded packet" +
                                 ("; " + " and ".join(why) if why else "")))
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


def _dnat_findings(family, backend, ruleset):
    nat, filt = ruleset.get("nat"), ruleset.get("filter")
    if not nat or not filt:
        return []
    dnats = []
    for chain in nat["chains"]:
        for position, spec in enumerate(nat["rules"].get(chain, []), 1):
            info = analyse(spec)
            if info["target"] == "DNAT":
                dnats.append((chain, position, spec, _dnat_address(info["to_destination"])))
    if not dnats:
        return []
    rules = flatten(filt, "FORWARD")
    if not _drops_at_end(filt, "FORWARD", rules):
        return []
    findings = []
    for chain, position, spec, address in dnats:
        accepted = False
        for _c, _p, _s, info, path in rules:
            if info["target"] != "ACCEPT":
                continue
            states = _states_on_path(info, path)
            if states is not None and "DNAT" in states:
                accepted = True
            elif states is None or "NEW" in states:
                dests = info["dest"] + [d for p in path for d in p["dest"]]
                if dests and address and all(_contains(d, address) for d in dests):
                    accepted = True
            if accepted:
                break
        if not accepted:
            findings.append(_finding("NGCT004", "high", family, backend, "nat", chain, position, spec,
                                     "FORWARD drops by default and nothing accepts flows DNATed to %s" % address))
    return findings


def audit(rulesets, context=None):
    """``rulesets``: list of {"family", "backend", "ruleset"}; returns findings sorted by severity then id."""
    context = context or {}
    findings = []
    by_family = {}
    for item in rulesets:
        family, backend, ruleset = item["family"], item["backend"], item["ruleset"]
        if fw_save.has_rules(ruleset):
            by_family.setdefault(family, []).append(item)
        filt = ruleset.get("filter")
        if filt:
            for builtin in ("INPUT", "FORWARD"):
                findings.extend(_order_findings(family, backend, filt, builtin))
            findings.extend(_invalid_findings(family, backend, filt, context))
        findings.extend(_dnat_findings(family, backend, ruleset))
    for family, items in sorted(by_family.items()):
        backends = sorted(set(item["backend"] for item in items))
        if len(backends) > 1:
            minor = sorted(items, key=lambda item: _rule_count(item["ruleset"]))[0]
            table, chain, position, spec = _first_rule(minor["ruleset"])
            findings.append(_finding("NGCT005", "high", family, minor["backend"], table, chain, position, spec,
                                     "both %s hold %s rules; packets traverse both rule sets" % (
                                         " and ".join(backends), family)))
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


def route_interfaces(route_text, ipv6_route_text):
    """Non-loopback interfaces that carry routes, from the texts of /proc/net/route and /proc/net/ipv6_route.

    More than one means the host is multi-homed (NGCT003). IPv6 multicast (ff00::/8) routes are ignored: every
    interface with IPv6 has one.
    """
    names = set()
    for line in (route_text or "").splitlines()[1:]:
        parts = line.split()
        if parts and parts[0] != "lo":
            names.add(parts[0])
    for line in (ipv6_route_text or "").splitlines():
        parts = line.split()
        if len(parts) == 10 and parts[9] != "lo" and not parts[0].startswith("ff"):
            names.add(parts[9])
    return sorted(names)
