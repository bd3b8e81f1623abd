# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render the normalised baseline model (``model.normalise_model``) as one nftables table the collection owns.

Private to the collection. Pure: model in, ``nft -f`` text out. The same model as the iptables baseline, in the
same order: loopback, ct state established,related first, IPv6 neighbour discovery, the scoped invalid drop (its
own chain: exemptions return, optional rate-limited log, drop), ICMP essentials, untracked accepts of the notrack
flows, the declared NEW flows, the final action. Notrack rules sit in prerouting/output chains at raw priority.

The table is ``inet nodeguard_conntrack`` (``ip``/``ip6`` when only one family is managed). Its comment carries a
digest of the rendered body, so the module can tell whether the live table is the one it would write. Every
change is one ``nft -f`` transaction that declares, deletes and re-creates only this table.
"""

import hashlib

TABLE = "nodeguard_conntrack"
OWNED_FAMILIES = ("inet", "ip", "ip6")
COMMENT_PREFIX = "nodeguard.conntrack baseline sha256:"
RAW_PRIORITY = -300
ICMP4_ESSENTIAL = ("destination-unreachable", "time-exceeded", "parameter-problem")
ICMP6_ERRORS = ("destination-unreachable", "packet-too-big", "time-exceeded", "parameter-problem")
ICMP6_NDP = ("nd-router-solicit", "nd-router-advert", "nd-neighbor-solicit", "nd-neighbor-advert")
NFT_FAMILY = {"ipv4": "ip", "ipv6": "ip6"}


def table_family(model):
    families = model["families"]
    if len(families) == 2:
        return "inet"
    return NFT_FAMILY[families[0]]


def _quote(text):
    return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"')


def _set(values):
    values = list(values)
    return values[0] if len(values) == 1 else "{ %s }" % ", ".join(values)


def _port(port):
    return port.replace(":", "-")


def _ifaces(key, names):
    """``iifname``/``oifname`` matches: one rule fragment per wildcard name (nft 1.0.6 has no wildcards in
    anonymous sets), one set for the plain names. ``+`` alone (any interface) matches everything."""
    if not names or "+" in names:
        return [""]
    plain = [_quote(name) for name in names if not name.endswith("+")]
    out = ["%s %s" % (key, _quote(name[:-1] + "*")) for name in names if name.endswith("+")]
    if plain:
        out.insert(0, "%s %s" % (key, _set(plain)))
    return out


def _nets(nets, family):
    """(address texts of this family, skip): skip when the list has addresses but none of this family."""
    mine = [text for fam, text in nets if fam == family]
    return mine, bool(nets) and not mine


def _addr(family, direction, nets):
    if not nets:
        return ""
    return "%s %s %s" % (NFT_FAMILY[family], direction, _set(nets))


def _families_for(model, *net_lists):
    """[(family or None, [nets per list])]: one entry with family None when no list has addresses, otherwise one
    per managed family that has addresses in every non-empty list."""
    if not any(net_lists):
        return [(None, [[] for _nets in net_lists])]
    out = []
    for family in model["families"]:
        picked = []
        skip = False
        for nets in net_lists:
            mine, missing = _nets(nets, family)
            skip = skip or missing
            picked.append(mine)
        if not skip:
            out.append((family, picked))
    return out


def _join(*parts):
    return " ".join(part for part in parts if part)


def _l4(proto, sports=None, dports=None, not_syn=False):
    parts = []
    if proto == "udplite":
        parts.append("meta l4proto udplite")
        prefix = "th"
    else:
        prefix = proto
    if sports:
        parts.append("%s sport %s" % (prefix, _set(_port(p) for p in sports)))
    if dports:
        parts.append("%s dport %s" % (prefix, _set(_port(p) for p in dports)))
    if not parts:
        parts.append("meta l4proto %s" % proto)
    if not_syn and proto == "tcp":
        parts.append("tcp flags & (fin | syn | rst | ack) != syn")
    return " ".join(parts)


def _comment(text):
    return "comment %s" % _quote(text) if text else ""


def _invalid(spec, model, chain, forward):
    """(jump rules, invalid chain rules)."""
    if not spec["enabled"]:
        return [], []
    jumps = []
    for family, (sources,) in _families_for(model, spec["sources"]):
        for in_iface in _ifaces("iifname", spec["in_interfaces"]):
            for out_iface in (_ifaces("oifname", spec["out_interfaces"]) if forward else [""]):
                jumps.append(_join(in_iface, out_iface, _addr(family, "saddr", sources) if family else "",
                                   "ct state invalid jump", chain))
    body = []
    for family in model["families"]:
        mine, _skip = _nets(spec["exempt_sources"], family)
        if mine:
            body.append("%s saddr %s return" % (NFT_FAMILY[family], _set(mine)))
    for iface in _ifaces("iifname", spec["exempt_interfaces"]):
        if iface:
            body.append(iface + " return")
    if spec["log"]:
        number, unit = spec["log_rate"].split("/")
        units = {"sec": "second", "min": "minute", "hour": "hour", "day": "day"}
        body.append("limit rate %s/%s burst 10 packets log prefix %s"
                    % (number, units[unit], _quote(spec["log_prefix"])))
    body.append("drop")
    return jumps, body


def _services(service, model, forward=False):
    rules = []
    for family, (sources, destinations) in _families_for(model, service["sources"], service["destinations"]):
        for in_iface in _ifaces("iifname", service["interfaces"]):
            for out_iface in (_ifaces("oifname", service["out_interfaces"]) if forward else [""]):
                rules.append(_join(in_iface, out_iface,
                                   _addr(family, "saddr", sources) if family else "",
                                   _addr(family, "daddr", destinations) if family else "",
                                   _l4(service["proto"], dports=service["ports"]), "ct state new accept",
                                   _comment(service["comment"])))
    return rules


def _notrack(item, model):
    out = {"prerouting": [], "output": [], "input": [], "forward": []}
    proto = item["proto"]
    notrack = _join("notrack", _comment(item["comment"]))
    untracked = _join("ct state untracked accept", _comment(item["comment"]))
    directions = ("in", "out") if item["direction"] == "both" else (item["direction"],)
    for family, (sources, destinations) in _families_for(model, item["sources"], item["destinations"]):
        remote = _addr(family, "saddr", sources) if family else ""
        local = _addr(family, "daddr", destinations) if family else ""
        remote_back = _addr(family, "daddr", sources) if family else ""
        local_back = _addr(family, "saddr", destinations) if family else ""
        for iface_in, iface_out in zip(_ifaces("iifname", item["interfaces"]), _ifaces("oifname", item["interfaces"])):
            for direction in directions:
                if direction == "in":
                    towards_local = _l4(proto, dports=item["ports"])
                    towards_remote = _l4(proto, sports=item["ports"])
                else:
                    towards_remote = _l4(proto, sports=item["local_ports"], dports=item["ports"])
                    towards_local = _l4(proto, sports=item["ports"], dports=item["local_ports"], not_syn=True)
                if item["forwarded"]:
                    out["prerouting"].append(_join(iface_in, remote, local, towards_local, notrack))
                    out["prerouting"].append(_join(local_back, remote_back, towards_remote, notrack))
                    if item["accept"]:
                        out["forward"].append(_join(iface_in, remote, local, towards_local, untracked))
                        out["forward"].append(_join(local_back, remote_back, towards_remote, untracked))
                    continue
                out["prerouting"].append(_join(iface_in, remote, local, "fib daddr type local", towards_local,
                                               notrack))
                out["output"].append(_join(iface_out, local_back, remote_back, towards_remote, notrack))
                if item["accept"]:
                    out["input"].append(_join(iface_in, remote, local, towards_local, untracked))
    return out


def _final(action):
    return [action] if action in ("drop", "reject") else []


def chains(model, priority=0):
    """{chain name: (base chain header or None, [rules])} in the order they are written."""
    families = model["families"]
    notrack = {"prerouting": [], "output": [], "input": [], "forward": []}
    for item in model["notrack"]:
        for key, rules in _notrack(item, model).items():
            notrack[key].extend(rules)
    policies = model.get("policies") or {}
    out = []

    def header(hook, prio, policy="accept"):
        return "type filter hook %s priority %d; policy %s;" % (hook, prio, policy)

    section = model["input"]
    input_policy = "drop" if policies.get("INPUT") == "DROP" else "accept"
    if section["enabled"]:
        rules = []
        if section["loopback"]:
            rules.append('iif "lo" accept')
        rules.append("ct state established,related accept")
        if section["icmp"] and "ipv6" in families:
            # neighbour discovery is never tracked; accepting it before any invalid drop keeps IPv6 alive
            rules.append("icmpv6 type %s ip6 hoplimit 255 accept" % _set(ICMP6_NDP))
        jumps, body = _invalid(section["invalid_drop"], model, "input_invalid", False)
        rules += jumps
        if section["icmp"]:
            if "ipv4" in families:
                rules.append("icmp type %s accept" % _set(ICMP4_ESSENTIAL))
                if section["icmp_echo"]:
                    rules.append("icmp type echo-request accept")
            if "ipv6" in families:
                rules.append("icmpv6 type %s accept" % _set(ICMP6_ERRORS))
                if section["icmp_echo"]:
                    rules.append("icmpv6 type echo-request accept")
        rules += notrack["input"]
        for service in section["services"]:
            rules += _services(service, model)
        rules += _final(section["final_action"])
        out.append(("input", header("input", priority, input_policy), rules))
        if jumps:
            out.append(("input_invalid", None, body))
    elif input_policy == "drop":
        out.append(("input", header("input", priority, "drop"), []))

    section = model["forward"]
    forward_policy = "drop" if policies.get("FORWARD") == "DROP" else "accept"
    if section["enabled"]:
        rules = ["ct state established,related accept"]
        if section["accept_dnat"]:
            rules.append("ct status dnat accept")
        jumps, body = _invalid(section["invalid_drop"], model, "forward_invalid", True)
        rules += jumps
        rules += notrack["forward"]
        for service in section["services"]:
            rules += _services(service, model, forward=True)
        rules += _final(section["final_action"])
        out.append(("forward", header("forward", priority, forward_policy), rules))
        if jumps:
            out.append(("forward_invalid", None, body))
    elif forward_policy == "drop":
        out.append(("forward", header("forward", priority, "drop"), []))
    if policies.get("OUTPUT") == "DROP":
        out.append(("output", header("output", priority, "drop"), []))
    if notrack["prerouting"]:
        out.append(("raw_prerouting", "type filter hook prerouting priority %d; policy accept;" % RAW_PRIORITY,
                    notrack["prerouting"]))
    if notrack["output"]:
        out.append(("raw_output", "type filter hook output priority %d; policy accept;" % RAW_PRIORITY,
                    notrack["output"]))
    return out


def body_text(model, priority=0):
    lines = []
    for name, head, rules in chains(model, priority):
        lines.append("\tchain %s {" % name)
        if head:
            lines.append("\t\t" + head)
        lines.extend("\t\t" + rule for rule in rules)
        lines.append("\t}")
    return "\n".join(lines) + "\n"


def digest(model, priority=0):
    return hashlib.sha256(("%s\n%s" % (table_family(model), body_text(model, priority))).encode("utf-8")).hexdigest()[:16]


def table_text(model, priority=0):
    """The table as an ``nft -f`` definition, with the digest in its comment."""
    return "table %s %s {\n\tcomment %s\n%s}\n" % (table_family(model), TABLE,
                                                   _quote(COMMENT_PREFIX + digest(model, priority)),
                                                   body_text(model, priority))


def replace_script(model, priority=0, present=()):
    """One transaction: delete every owned table (``present``: families that exist, plus the one written, declared
    first so the delete never fails), then define ours. Nothing else is named."""
    family = table_family(model)
    lines = ["#!/usr/sbin/nft -f", "# nodeguard.conntrack baseline: replaces only table %s %s" % (family, TABLE)]
    for fam in OWNED_FAMILIES:
        if fam == family or fam in present:
            lines.append("table %s %s" % (fam, TABLE))
            lines.append("delete table %s %s" % (fam, TABLE))
    return "\n".join(lines) + "\n" + table_text(model, priority)


def remove_script(present):
    lines = []
    for fam in OWNED_FAMILIES:
        if fam in present:
            lines.append("table %s %s" % (fam, TABLE))
            lines.append("delete table %s %s" % (fam, TABLE))
    return "\n".join(lines) + "\n" if lines else ""


def restore_script(present, previous_listings):
    """What the rollback timer loads: delete the owned tables now present, recreate the previous ones."""
    return remove_script(present) + "".join(previous_listings)


def live_digest(listing):
    """The digest in the comment of a listed owned table (``nft list table``), or None (no comment of ours: the
    table was written by something else or edited by hand)."""
    for line in (listing or "").splitlines():
        text = line.strip()
        if text.startswith('comment "%s' % COMMENT_PREFIX) and text.endswith('"'):
            return text[len('comment "%s' % COMMENT_PREFIX):-1]
    return None


def chain_heads(model, priority=0):
    """{chain: (type, hook, priority, policy) or None for a regular chain} of the rendered table (to notice a base
    chain whose policy, hook or priority was changed by hand)."""
    out = {}
    for name, head, _rules in chains(model, priority):
        words = (head or "").replace(";", " ").split()
        if len(words) >= 8 and words[0] == "type" and words[2] == "hook" and words[4] == "priority" \
                and words[6] == "policy":
            out[name] = (words[1], words[3], int(words[5]), words[7])
        else:
            out[name] = None
    return out


def rule_counts(model, priority=0):
    """{chain: number of rules} the rendered table has (to notice rules added to or removed from it by hand)."""
    return dict((name, len(rules)) for name, _head, rules in chains(model, priority))


def render_unit(nft_path, rules_path):
    return """[Unit]
Description=nodeguard.conntrack nftables baseline (loads only table %(table)s)
Documentation=https://github.com/nodeguard/conntrack/blob/main/docs/firewall.md
DefaultDependencies=no
Wants=network-pre.target
Before=network-pre.target shutdown.target
After=local-fs.target nftables.service
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=%(nft)s -f %(rules)s

[Install]
WantedBy=sysinit.target
""" % {"table": TABLE, "nft": nft_path, "rules": rules_path}
