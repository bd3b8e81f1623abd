# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The path evaluator behind iptables_audit: rule parsing, one condition against what is known about the packets,
and the walk of a packet class through the chain graph (``evaluate``, ``fates``). See ``audit`` for how the
findings use it.

Private to the collection. Pure: a parsed rule set in, verdicts out.
"""

import ipaddress

from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import save_parser as fw_save


TERMINAL_TARGETS = ("ACCEPT", "DROP", "REJECT", "QUEUE", "NFQUEUE", "DNAT", "SNAT", "MASQUERADE", "REDIRECT",
                    "TPROXY", "NETMAP", "SYNPROXY")
BUILTIN_TARGETS = TERMINAL_TARGETS + ("RETURN", "LOG", "NFLOG", "ULOG", "MARK", "CONNMARK", "CT", "NOTRACK", "TRACE",
                                      "AUDIT", "SET", "TCPMSS", "CLASSIFY", "DSCP", "TOS", "TTL", "HL")
PORT_MODULES = ("tcp", "udp", "udplite", "sctp", "dccp")
MAX_DEPTH = 16
IFACE_KEYS = ("-i", "-o")
ADDR_KEYS = ("-s", "-d")
PORT_KEYS = ("--sport", "--dport")
REVERSE = {"-i": "-o", "-o": "-i", "-s": "-d", "-d": "-s", "--sport": "--dport", "--dport": "--sport", "-p": "-p"}
PROTOCOLS = {"1": "icmp", "6": "tcp", "17": "udp", "58": "ipv6-icmp", "icmpv6": "ipv6-icmp", "ipv6-icmp": "ipv6-icmp"}


# ---------------------------------------------------------------------------------------------------------------
# rule parsing


def _is_option(word):
    return len(word) > 1 and word.startswith("-") and not word[1:2].isdigit()


def _proto(value):
    value = (value or "").lower()
    return PROTOCOLS.get(value, value)


def parse_rule(spec):
    """What a rule matches and does, from its iptables-save text.

    Returns {"atoms": [(key, value, negated)], "states": None or (set, negated), "target", "goto", "target_args",
    "matches": [module names], "to_destination", "notrack"}. Keys are ``-i -o -s -d -p --sport --dport`` or, for
    any other match option, ``"<module> <option>"`` (compared as opaque text).
    """
    words = fw_save.tokens(spec)
    rule = {"atoms": [], "states": None, "target": None, "goto": False, "target_args": [], "matches": [],
            "to_destination": None, "notrack": False, "uses_state_module": False}
    short = {"--source": "-s", "--src": "-s", "--destination": "-d", "--dst": "-d", "--in-interface": "-i",
             "--out-interface": "-o", "--protocol": "-p"}
    index, negate, module = 0, False, None
    while index < len(words):
        word = words[index]
        if word == "!":
            negate = True
            index += 1
            continue
        word = short.get(word, word)
        if word in ("-j", "--jump", "-g", "--goto"):
            rule["target"] = words[index + 1] if index + 1 < len(words) else None
            rule["goto"] = word in ("-g", "--goto")
            rule["target_args"] = words[index + 2:]
            args = rule["target_args"]
            if "--to-destination" in args and args.index("--to-destination") + 1 < len(args):
                rule["to_destination"] = args[args.index("--to-destination") + 1]
            rule["notrack"] = rule["target"] == "NOTRACK" or (rule["target"] == "CT" and "--notrack" in args)
            break
        if word in ("-m", "--match"):
            module = words[index + 1] if index + 1 < len(words) else None
            rule["matches"].append(module)
            index += 2
            negate = False
            continue
        if word in ("-s", "-d", "-i", "-o", "-p"):
            value = words[index + 1] if index + 1 < len(words) else ""
            if word == "-p":
                value = _proto(value)
            if not (word == "-p" and value == "all"):
                rule["atoms"].append((word, value, negate))
            index += 2
            negate = False
            continue
        values = []
        cursor = index + 1
        while cursor < len(words) and words[cursor] != "!" and not _is_option(words[cursor]):
            values.append(words[cursor])
            cursor += 1
        value = " ".join(values)
        if module is None:  # restore syntax: "-p tcp --dport 22" loads the protocol's match implicitly
            module = next((v for k, v, n in rule["atoms"] if k == "-p" and not n), None)
        if module == "comment" or word in ("-c", "--set-counters"):
            pass
        elif word in ("--ctstate", "--state") and module in ("conntrack", "state"):
            rule["states"] = (set(value.split(",")), negate)
            rule["uses_state_module"] = rule["uses_state_module"] or module == "state"
        elif module in PORT_MODULES and word in ("--dport", "--destination-port", "--sport", "--source-port"):
            rule["atoms"].append(("--dport" if "d" in word[2:4] else "--sport", value, negate))
        elif module == "multiport" and word in ("--dports", "--destination-ports", "--sports", "--source-ports"):
            rule["atoms"].append(("--dport" if "d" in word[2:4] else "--sport", value, negate))
        else:
            rule["atoms"].append(("%s %s" % (module or "", word), value, negate))
        index = cursor
        negate = False
    return rule


def analyse(spec):
    """Backwards-compatible summary of a rule (used by tests): target, protocol, scoping conditions."""
    rule = parse_rule(spec)
    conds = set("%s%s %s" % ("! " if neg else "", key, value) for key, value, neg in rule["atoms"]
                if key in IFACE_KEYS + ADDR_KEYS)
    proto = [value for key, value, neg in rule["atoms"] if key == "-p" and not neg]
    return {"target": rule["target"], "proto": proto[0] if proto else None, "conds": conds, "scoped": bool(conds),
            "states": rule["states"][0] if rule["states"] and not rule["states"][1] else None,
            "matches": rule["matches"], "to_destination": rule["to_destination"]}


# ---------------------------------------------------------------------------------------------------------------
# one condition against what is known about the packets

SAT, CONTRA, UNKNOWN = "sat", "contra", "unknown"


def _iface_covers(pattern, name):
    """Whether interface pattern (``eth+`` wildcard) matches every interface ``name`` can be."""
    if pattern.endswith("+"):
        base = name[:-1] if name.endswith("+") else name
        return base.startswith(pattern[:-1])
    return not name.endswith("+") and name == pattern


def _iface_disjoint(pattern, name):
    if pattern.endswith("+") or name.endswith("+"):
        a, b = pattern.rstrip("+"), name.rstrip("+")
        if pattern.endswith("+") and name.endswith("+"):
            return not (a.startswith(b) or b.startswith(a))
        if pattern.endswith("+"):
            return not name.startswith(a)
        return not pattern.startswith(b)
    return pattern != name


def _network(text):
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _net_relation(inner, outer):
    """SAT when ``inner`` lies in ``outer``, CONTRA when they do not overlap, else UNKNOWN."""
    a, b = _network(inner), _network(outer)
    if a is None or b is None or a.version != b.version:
        return SAT if inner == outer else UNKNOWN
    if a.subnet_of(b):
        return SAT
    if not a.overlaps(b):
        return CONTRA
    return UNKNOWN


def _ports(text):
    out = []
    for part in (text or "").split(","):
        bounds = part.split(":")
        try:
            low = int(bounds[0]) if bounds[0] else 0
            high = int(bounds[1]) if len(bounds) > 1 and bounds[1] else (65535 if len(bounds) > 1 else low)
        except ValueError:
            return None
        out.append((low, high))
    return out


def _port_relation(inner, outer):
    a, b = _ports(inner), _ports(outer)
    if a is None or b is None:
        return SAT if inner == outer else UNKNOWN
    if all(any(bl <= al and ah <= bh for bl, bh in b) for al, ah in a):
        return SAT
    if all(ah < bl or bh < al for al, ah in a for bl, bh in b):
        return CONTRA
    return UNKNOWN


def _relation(key, known, wanted):
    """Relation of the known value to the rule's value for one key (both positive)."""
    if key in IFACE_KEYS:
        if _iface_covers(wanted, known):
            return SAT
        return CONTRA if _iface_disjoint(wanted, known) else UNKNOWN
    if key in ADDR_KEYS:
        return _net_relation(known, wanted)
    if key in PORT_KEYS:
        return _port_relation(known, wanted)
    if key == "-p":
        return SAT if known == wanted else CONTRA
    return SAT if known == wanted else UNKNOWN


def atom_against(atom, ctx):
    """SAT when every packet described by ``ctx`` meets ``atom``, CONTRA when none does, else UNKNOWN."""
    key, value, neg = atom
    result = UNKNOWN
    for ckey, cvalue, cneg in ctx:
        if ckey != key:
            if key in PORT_KEYS and ckey == "-p" and not cneg and cvalue not in ("tcp", "udp", "udplite", "sctp", "dccp"):
                return CONTRA if not neg else SAT
            continue
        if not cneg:
            rel = _relation(key, cvalue, value)
            if rel == SAT:
                return CONTRA if neg else SAT
            if rel == CONTRA:
                if neg:
                    return SAT
                result = CONTRA
        else:
            # ctx says "not cvalue": it decides the atom only when the atom's set lies inside cvalue's
            rel = _relation(key, value, cvalue)
            if rel == SAT:
                return SAT if neg else CONTRA
    return result


def _state_against(states, klass):
    if states is None:
        return SAT
    names, neg = states
    state, dnat = klass
    hit = state in names
    if not hit and "DNAT" in names:
        if dnat is None:
            return UNKNOWN
        hit = dnat
    if not hit and "SNAT" in names and state not in ("INVALID", "UNTRACKED"):
        return UNKNOWN
    return (CONTRA if hit else SAT) if neg else (SAT if hit else CONTRA)


def match(rule, klass, ctx):
    """'none', 'some' or 'all' of the packets of ``klass`` described by ``ctx`` match ``rule``."""
    result = _state_against(rule["states"], klass)
    if result == CONTRA:
        return "none"
    for atom in rule["atoms"]:
        rel = atom_against(atom, ctx)
        if rel == CONTRA:
            return "none"
        if rel == UNKNOWN:
            result = UNKNOWN
    return "all" if result == SAT else "some"


def narrow(ctx, rule):
    """The context after a rule matched: what the rule's conditions add."""
    out = list(ctx)
    for atom in rule["atoms"]:
        if atom not in out:
            out.append(atom)
    return out


def reverse(ctx, keep_opaque=False):
    """The context of the reply direction: interfaces, addresses and ports swapped, other matches dropped."""
    out = []
    for key, value, neg in ctx:
        if key in REVERSE:
            out.append((REVERSE[key], value, neg))
        elif keep_opaque:
            out.append((key, value, neg))
    return out


def describe(ctx):
    parts = []
    for key, value, neg in ctx:
        bang = "! " if neg else ""
        if key in IFACE_KEYS + ADDR_KEYS + PORT_KEYS + ("-p",):
            parts.append("%s%s %s" % (bang, key, value))
        else:
            module, _sep, option = key.partition(" ")
            parts.append(("-m %s %s%s %s" % (module, bang, option, value)).strip())
    return " ".join(parts) if parts else "any"


# ---------------------------------------------------------------------------------------------------------------
# the path evaluator


def _rule_ref(event):
    return "-A %s %s (%s position %d)" % (event["chain"], event["spec"], event["chain"], event["position"])


class Walk(object):
    """Result of walking a built-in chain for one packet class: the events and where the packets end."""

    def __init__(self, table, builtin, klass, ctx):
        self.table, self.builtin, self.klass, self.ctx = table, builtin, klass, ctx
        self.events = []  # dicts: chain, position, spec, rule, ctx, all (matches every packet in its frame),
        #                   certain (every packet of the class reaching the built-in reaches and matches it), path
        self.stops = {}  # chain -> first event that ended a frame of it (terminal, RETURN, goto)
        self.visited = set()
        self.end = None  # event of the rule that decided the fate, None for the policy
        self.verdict = None  # ACCEPT / DROP / REJECT / ... or the policy

    def reached(self, chain, position):
        return any(ev["chain"] == chain and ev["position"] == position for ev in self.events)

    def where(self):
        if self.end is None:
            return "the %s policy %s" % (self.builtin, self.verdict)
        return _rule_ref(self.end)

    def accepts(self, exclude=None):
        return [ev for ev in self.events if ev["rule"]["target"] == "ACCEPT" and not (exclude and exclude(ev))]


def _rules(table, chain, cache):
    key = (id(table), chain)
    if key not in cache:
        cache[key] = [(pos, spec, parse_rule(spec)) for pos, spec in enumerate(table["rules"].get(chain, []), 1)]
    return cache[key]


def _is_chain(table, name):
    return name is not None and name not in BUILTIN_TARGETS and (name in table["rules"] or name in table["chains"])


def _walk_chain(walk, table, chain, klass, ctx, conditional, path, cache, via=()):
    walk.visited.add(chain)
    for position, spec, rule in _rules(table, chain, cache):
        found = match(rule, klass, ctx)
        if found == "none":
            continue
        full = found == "all"
        event = {"chain": chain, "position": position, "spec": spec, "rule": rule, "ctx": narrow(ctx, rule),
                 "all": full, "certain": full and not conditional, "path": path, "via": via}
        walk.events.append(event)
        target = rule["target"]
        if _is_chain(table, target):
            if target in path or len(path) > MAX_DEPTH:
                continue
            end = _walk_chain(walk, table, target, klass, event["ctx"], conditional or not full, path + (target,),
                              cache, via + (rule,))
            if full and end is not None and end[0] == "terminal":
                return end
            if full and rule["goto"]:
                walk.stops.setdefault(chain, event)
                return ("return", event)
            continue
        if not full:
            continue
        if target == "RETURN":
            walk.stops.setdefault(chain, event)
            return ("return", event)
        if target in TERMINAL_TARGETS:
            walk.stops.setdefault(chain, event)
            return ("terminal", event)
    return None


def evaluate(ruleset, table_name, builtin, klass, ctx=None, cache=None):
    """Walk built-in chain ``builtin`` of ``table_name`` for packets of ``klass`` = (state, dnat) and ``ctx``."""
    ctx = list(ctx or [])
    cache = {} if cache is None else cache
    walk = Walk(table_name, builtin, klass, ctx)
    table = ruleset.get(table_name)
    if not table:
        walk.verdict = "ACCEPT"
        return walk
    end = _walk_chain(walk, table, builtin, klass, ctx, False, (builtin,), cache)
    if end is not None and end[0] == "terminal":
        walk.end = end[1]
        walk.verdict = end[1]["rule"]["target"]
    else:
        walk.verdict = table["policies"].get(builtin, "ACCEPT")
    return walk


FORKABLE = IFACE_KEYS + ADDR_KEYS + PORT_KEYS + ("-p",)
MAX_BRANCHES = 256


class Fate(object):
    """One branch of packets: the verdict, the rule that gave it (None: the policy) and what the branch knows."""

    def __init__(self, verdict, event, ctx, builtin, forked=False):
        self.verdict, self.event, self.ctx, self.builtin = verdict, event, ctx, builtin
        # forked: the branch was split off by the very rule that gave the verdict (a narrow rule about some of the
        # packets, e.g. a ban of one address), not caught by a rule or policy meant for all of them
        self.forked = forked

    def where(self):
        if self.event is None:
            return "the %s policy %s" % (self.builtin, self.verdict)
        return _rule_ref(self.event)


def _branch(ruleset, table, builtin, frames, klass, ctx, budget, out, cache):
    """Follow one branch; ``frames`` are [chain, next index, narrow] (narrow: entered by a split-off branch)."""
    while frames:
        chain, index, narrow_frame = frames[-1]
        rules = _rules(table, chain, cache)
        if index >= len(rules):
            frames.pop()
            continue
        frames[-1] = (chain, index + 1, narrow_frame)
        position, spec, rule = rules[index]
        found = match(rule, klass, ctx)
        if found == "none":
            continue
        forked = found == "some"
        if forked:
            unknown = [atom for atom in rule["atoms"] if atom_against(atom, ctx) == UNKNOWN]
            if len(unknown) != 1 or unknown[0][0] not in FORKABLE or budget[0] <= 0 or \
                    _state_against(rule["states"], klass) != SAT:
                continue  # undecidable here: these packets may or may not match; follow those that do not
            budget[0] -= 1
            key, value, neg = unknown[0]
            _branch(ruleset, table, builtin, list(frames), klass, ctx + [(key, value, not neg)], budget, out, cache)
            ctx = ctx + [unknown[0]]
        target = rule["target"]
        event = {"chain": chain, "position": position, "spec": spec, "rule": rule}
        if _is_chain(table, target):
            if len(frames) > MAX_DEPTH or any(frame[0] == target for frame in frames):
                continue
            entry = (target, 0, narrow_frame or forked)
            if rule["goto"]:
                frames[-1] = entry
            else:
                frames.append(entry)
            ctx = narrow(ctx, rule)
            continue
        if target == "RETURN":
            frames.pop()
            continue
        if target in TERMINAL_TARGETS:
            out.append(Fate(target, event, narrow(ctx, rule), builtin,
                            forked or any(frame[2] for frame in frames)))
            return
    out.append(Fate(table["policies"].get(builtin, "ACCEPT"), None, ctx, builtin))


def fates(ruleset, table_name, builtin, klass, ctx=None, cache=None):
    """Every branch the packets of ``klass``/``ctx`` split into on their way through ``builtin``.

    Where a rule's match depends on one interface, address, port or protocol the context does not fix, the packets
    split into the branch that matches and the one that does not; other undecidable rules are passed by (the
    packets that would match them are not followed).
    """
    table = ruleset.get(table_name)
    if not table:
        return [Fate("ACCEPT", None, list(ctx or []), builtin)]
    out = []
    _branch(ruleset, table, builtin, [(builtin, 0, False)], klass, list(ctx or []), [MAX_BRANCHES], out,
            {} if cache is None else cache)
    return out
