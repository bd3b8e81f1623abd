# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read what ``nft -j list ruleset`` prints into tables, chains, maps and analysed rules (private).

Pure: JSON text (or the decoded object) in, data out. Nothing here runs nft.

Each rule is analysed into what the audits need: the match conditions (normalised strings, so two rules that
match the same field the same way compare equal), the conntrack states it is limited to, the address families it
can apply to (an inet table carries both; ``ip saddr`` or ``meta nfproto ipv4`` limit it), its verdict and the
chains a jump, goto or verdict map can send the packet to.
"""

import json

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import ParseError

ALL_STATES = frozenset(["new", "established", "related", "invalid", "untracked"])
FAMILY_NFPROTO = {"ip": ("ipv4",), "ip6": ("ipv6",), "inet": ("ipv4", "ipv6")}
VERDICTS = ("accept", "drop", "reject", "jump", "goto", "return", "queue", "continue")
SCOPE_KEYS = ("iifname", "oifname", "iif", "oif", "iifgroup", "oifgroup", "ip saddr", "ip daddr", "ip6 saddr",
              "ip6 daddr")
PROTO_PAYLOADS = ("tcp", "udp", "udplite", "sctp", "dccp", "th", "icmp", "icmpv6")
EXPENSIVE = ("limit", "quota", "meter", "log", "numgen", "osf", "synproxy", "connlimit")
IPV4_PAYLOADS = ("ip", "icmp", "arp")
IPV6_PAYLOADS = ("ip6", "icmpv6")
MAX_DEPTH = 32


class NftParseError(ParseError):
    """The text is not the JSON ``nft -j list ruleset`` prints."""


# ---- expressions ----

def describe(expr):
    """A short text for the left-hand side of a match (``tcp dport``, ``iifname``, ``ct state``)."""
    if isinstance(expr, dict):
        if "meta" in expr:
            return expr["meta"].get("key")
        if "payload" in expr:
            payload = expr["payload"]
            if "protocol" in payload:
                return "%s %s" % (payload["protocol"], payload.get("field"))
            return "@%s,%s,%s" % (payload.get("base"), payload.get("offset"), payload.get("len"))
        if "ct" in expr:
            ct = expr["ct"]
            return "ct %s%s" % ((ct["dir"] + " ") if ct.get("dir") else "", ct.get("key"))
        if "fib" in expr:
            return "fib %s %s" % (".".join(expr["fib"].get("flags") or []), expr["fib"].get("result"))
        if "concat" in expr:
            return " . ".join(describe(item) for item in expr["concat"])
        if "&" in expr or "|" in expr:
            op = "&" if "&" in expr else "|"
            return (" %s " % op).join(value_text(item) for item in expr[op])
        if "exthdr" in expr:
            return "exthdr %s %s" % (expr["exthdr"].get("name"), expr["exthdr"].get("field"))
        if "socket" in expr:
            return "socket %s" % expr["socket"].get("key")
        if "rt" in expr:
            return "rt %s" % expr["rt"].get("key")
    return value_text(expr)


def value_text(value):
    """A value as nft would roughly print it: sets in braces, prefixes with /len, ranges with a dash."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "{ %s }" % ", ".join(value_text(item) for item in value)
    if isinstance(value, dict):
        if "set" in value:
            items = value["set"]
            return value_text(items if isinstance(items, list) else [items])
        if "prefix" in value:
            return "%s/%s" % (value["prefix"].get("addr"), value["prefix"].get("len"))
        if "range" in value:
            return "%s-%s" % tuple(value_text(item) for item in value["range"])
        if "concat" in value:
            return " . ".join(value_text(item) for item in value["concat"])
        if "elem" in value:
            return value_text(value["elem"].get("val"))
        for key in ("meta", "payload", "ct", "fib", "&", "|", "exthdr"):
            if key in value:
                return describe(value)
        if "jump" in value or "goto" in value:
            kind = "jump" if "jump" in value else "goto"
            return "%s %s" % (kind, value[kind].get("target"))
        if len(value) == 1:
            key = list(value)[0]
            return key if value[key] is None else "%s %s" % (key, value_text(value[key]))
    return json.dumps(value, sort_keys=True)


def _values(right):
    """The plain values of a match's right-hand side (strings for states), or None for a named set."""
    if isinstance(right, str) and right.startswith("@"):
        return None
    if isinstance(right, dict) and "set" in right:
        right = right["set"]
    if not isinstance(right, list):
        right = [right]
    return list(right)


def _nfprotos_of(left, right, op):
    """The families a single match limits the rule to, or None when it does not."""
    if isinstance(left, dict) and "payload" in left:
        protocol = left["payload"].get("protocol")
        if protocol in IPV4_PAYLOADS:
            return set(["ipv4"])
        if protocol in IPV6_PAYLOADS:
            return set(["ipv6"])
    if isinstance(left, dict) and "meta" in left and left["meta"].get("key") == "nfproto" and op in ("==", "in"):
        values = _values(right) or []
        return set(v for v in values if v in ("ipv4", "ipv6"))
    if isinstance(left, dict) and "meta" in left and left["meta"].get("key") == "l4proto" and op in ("==", "in"):
        values = set(_values(right) or [])
        if values and values <= set(["icmp", 1]):
            return set(["ipv4"])
        if values and values <= set(["ipv6-icmp", "icmpv6", 58]):
            return set(["ipv6"])
    return None


def analyse_rule(rule):
    """What one rule (the ``rule`` object of nft's JSON) matches and does."""
    info = {"conds": [], "states": None, "nfprotos": set(["ipv4", "ipv6"]), "scoped": False, "proto": False,
            "verdict": None, "target": None, "targets": [], "vmap_key": None, "notrack": False, "dnat": None,
            "ct_status": None, "log": False, "expensive": False, "other": False, "negated": False,
            "nexthdr_icmpv6": False}
    for expr in rule.get("expr") or []:
        if not isinstance(expr, dict) or len(expr) != 1:
            info["other"] = True
            continue
        kind = list(expr)[0]
        body = expr[kind]
        if kind == "match":
            _analyse_match(info, body)
        elif kind in ("accept", "drop", "return", "continue", "queue"):
            info["verdict"] = info["verdict"] or kind
        elif kind == "reject":
            info["verdict"] = info["verdict"] or "reject"
            reject_type = (body or {}).get("type") if isinstance(body, dict) else None
            if reject_type == "icmp":  # in an inet table: a hidden meta nfproto ipv4
                info["nfprotos"] &= set(["ipv4"])
            elif reject_type == "icmpv6":
                info["nfprotos"] &= set(["ipv6"])
        elif kind in ("jump", "goto"):
            info["verdict"] = info["verdict"] or kind
            info["target"] = body.get("target")
            info["targets"] = [(kind, body.get("target"), None)]
        elif kind == "vmap":
            info["verdict"] = info["verdict"] or "vmap"
            info["vmap_key"] = describe(body.get("key"))
            info["vmap_data"] = body.get("data")
        elif kind == "notrack":
            info["notrack"] = True
        elif kind in ("dnat", "snat", "masquerade", "redirect"):
            info["nat"] = kind
            if kind == "dnat":
                info["dnat"] = body if isinstance(body, dict) else {}
            if kind in ("dnat", "redirect"):
                info["verdict"] = info["verdict"] or "accept"  # a nat statement is terminal
        elif kind == "log":
            info["log"] = True
            info["expensive"] = True
        elif kind in EXPENSIVE:
            info["expensive"] = True
            info["other"] = True
        elif kind in ("counter", "comment", "mangle", "set", "ct count"):
            continue
        else:
            info["other"] = True
    return info


def _analyse_match(info, body):
    left, right, op = body.get("left"), body.get("right"), body.get("op", "==")
    name = describe(left)
    if name == "ct state":
        values = _values(right)
        states = set(str(v) for v in values) if values is not None else set(ALL_STATES)
        if op == "!=":
            states = set(ALL_STATES) - states
            info["negated"] = True
        info["states"] = states if info["states"] is None else (info["states"] & states)
        return
    if name == "ct status" and op in ("==", "in"):
        info["ct_status"] = set(str(v) for v in (_values(right) or []))
    if op == "!=":
        info["negated"] = True
    families = _nfprotos_of(left, right, op)
    if families is not None and op != "!=":
        info["nfprotos"] &= families
    if name == "ip6 nexthdr" and op in ("==", "in") and set(_values(right) or []) & set(["ipv6-icmp", "icmpv6", 58]):
        info["nexthdr_icmpv6"] = True
    if name in SCOPE_KEYS:
        info["scoped"] = True
    elif (isinstance(left, dict) and "payload" in left and left["payload"].get("protocol") in PROTO_PAYLOADS) \
            or name in ("l4proto", "ip protocol", "ip6 nexthdr"):
        info["proto"] = True
    elif name not in ("nfproto", "ct status", "ct state"):
        info["other"] = True
    if name != "nfproto":  # a family limit, kept in info["nfprotos"]
        info["conds"].append("%s %s %s" % (name, op, value_text(right)))


def rule_text(rule):
    """The rule roughly as ``nft list`` prints it (for reports; not meant to be loaded back)."""
    words = []
    for expr in rule.get("expr") or []:
        if not isinstance(expr, dict) or len(expr) != 1:
            continue
        kind = list(expr)[0]
        body = expr[kind]
        if kind == "match":
            op = body.get("op", "==")
            words.append("%s%s %s" % (describe(body.get("left")), "" if op in ("==", "in") else " " + op,
                                      value_text(body.get("right"))))
        elif kind == "counter":
            words.append("counter")
        elif kind in ("jump", "goto"):
            words.append("%s %s" % (kind, body.get("target")))
        elif kind == "vmap":
            words.append("%s vmap %s" % (describe(body.get("key")), value_text(body.get("data"))))
        elif kind == "reject":
            words.append("reject" + (" with %s %s" % (body.get("type"), body.get("expr")) if isinstance(body, dict)
                                     and body.get("type") else ""))
        elif kind == "log":
            words.append("log" + (' prefix "%s"' % body.get("prefix") if isinstance(body, dict)
                                  and body.get("prefix") else ""))
        elif kind == "dnat":
            words.append("dnat to %s%s" % (value_text(body.get("addr")), (":%s" % body["port"]) if body.get("port")
                                           is not None else ""))
        elif body is None:
            words.append(kind)
        else:
            words.append("%s %s" % (kind, value_text(body)) if not isinstance(body, dict) else kind)
    if rule.get("comment"):
        words.append('comment "%s"' % rule["comment"])
    return " ".join(words)


# ---- the rule set ----

def parse(text):
    """Rule set dict from nft's JSON: {"tables", "chains", "maps", "sets", "metainfo"}.

    ``chains`` maps (family, table, name) to the chain object plus ``rules`` (the raw rule objects, in order).
    """
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8", "replace")
    if isinstance(text, str):
        if not text.strip():
            return {"tables": [], "chains": {}, "maps": {}, "sets": {}, "metainfo": None}
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise NftParseError("not JSON: %s" % exc)
    else:
        data = text
    if not isinstance(data, dict) or not isinstance(data.get("nftables"), list):
        raise NftParseError("no top-level 'nftables' list (is this the output of nft -j list ruleset?)")
    ruleset = {"tables": [], "chains": {}, "maps": {}, "sets": {}, "metainfo": None}
    for item in data["nftables"]:
        if not isinstance(item, dict) or len(item) != 1:
            raise NftParseError("unexpected element %r" % (item,))
        kind = list(item)[0]
        body = item[kind]
        if kind == "metainfo":
            ruleset["metainfo"] = body
        elif kind == "table":
            ruleset["tables"].append(dict(body))
        elif kind == "chain":
            chain = dict(body)
            chain["rules"] = []
            ruleset["chains"][(body["family"], body["table"], body["name"])] = chain
        elif kind == "rule":
            key = (body["family"], body["table"], body["chain"])
            if key not in ruleset["chains"]:
                raise NftParseError("rule for unknown chain %s %s %s" % key)
            ruleset["chains"][key]["rules"].append(body)
        elif kind == "map":
            ruleset["maps"][(body["family"], body["table"], body["name"])] = body
        elif kind == "set":
            ruleset["sets"][(body["family"], body["table"], body["name"])] = body
    return ruleset


def base_chains(ruleset):
    """Base chains (those with a hook), sorted by family, hook, priority, table, name."""
    chains = [chain for chain in ruleset["chains"].values() if chain.get("hook")]
    return sorted(chains, key=lambda c: (c["family"], c["hook"], priority(c), c["table"], c["name"]))


def priority(chain):
    value = chain.get("prio", 0)
    return value if isinstance(value, int) else 0


def vmap_targets(ruleset, family, table, info):
    """(kind, chain, condition) for every chain a verdict map of the rule can send the packet to."""
    data = info.get("vmap_data")
    elements = []
    if isinstance(data, str) and data.startswith("@"):
        mapping = ruleset["maps"].get((family, table, data[1:])) or {}
        elements = mapping.get("elem") or []
    elif isinstance(data, dict) and "set" in data:
        elements = data["set"]
    out = []
    for element in elements:
        if not isinstance(element, list) or len(element) != 2 or not isinstance(element[1], dict):
            continue
        verdict = element[1]
        for kind in ("jump", "goto"):
            if kind in verdict:
                out.append((kind, verdict[kind].get("target"), "%s == %s" % (info["vmap_key"], value_text(element[0]))))
    return out


def walk(ruleset, chain):
    """The rules a packet can meet from ``chain``, in order, with jumps, gotos and verdict maps followed in place.

    Yields dicts: chain, position (1-based), handle, rule, info, path (list of the infos of the calls leading
    there, each with the call's own condition added) and site (tuple of (chain name, position) of those calls).
    """
    family, table = chain["family"], chain["table"]
    out = []
    _walk(ruleset, family, table, chain["name"], [], (), 0, out, ())
    return out


def _walk(ruleset, family, table, name, path, site, depth, out, seen):
    if depth > MAX_DEPTH or name in seen:
        return
    chain = ruleset["chains"].get((family, table, name))
    if chain is None:
        return
    for position, rule in enumerate(chain["rules"], 1):
        info = analyse_rule(rule)
        out.append({"chain": name, "position": position, "handle": rule.get("handle"), "rule": rule, "info": info,
                    "path": path, "site": site})
        calls = list(info["targets"])
        if info["verdict"] == "vmap":
            calls = vmap_targets(ruleset, family, table, info)
        for _kind, target, condition in calls:
            call = dict(info)
            call["kind"] = _kind
            call["conds"] = list(info["conds"]) + ([condition] if condition else [])
            if condition:
                call["scoped"] = call["scoped"] or info["vmap_key"] in SCOPE_KEYS or any(
                    key in (info["vmap_key"] or "") for key in ("saddr", "daddr", "ifname"))
                call["other"] = call["other"] or not call["scoped"]
            _walk(ruleset, family, table, target, path + [call], site + ((name, position),), depth + 1, out,
                  seen + (name,))


def path_states(entry):
    """The conntrack states a rule applies to along its path (None: any state)."""
    states = entry["info"]["states"]
    for call in entry["path"]:
        if call["states"] is not None:
            states = set(call["states"]) if states is None else (states & call["states"])
    return states


def path_nfprotos(entry):
    families = set(entry["info"]["nfprotos"])
    for call in entry["path"]:
        families &= call["nfprotos"]
    return families


def path_conds(entry):
    conds = set(entry["info"]["conds"])
    for call in entry["path"]:
        conds |= set(call["conds"])
    return conds


def unconditional(entry, nfproto=None):
    """True when the rule and every call leading to it match any packet (of family ``nfproto`` if given)."""
    if nfproto is not None and nfproto not in path_nfprotos(entry):
        return False
    for info in [entry["info"]] + list(entry["path"]):
        if info["conds"] or info["states"] is not None or info["other"]:
            return False
        if nfproto is None and info["nfprotos"] != set(["ipv4", "ipv6"]):
            return False
    return True
