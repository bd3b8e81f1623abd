# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render the normalised baseline model to owned states and ``iptables-restore`` input.

Private to the collection. Pure: data in, text out. Every rule is rendered in the exact form iptables-save prints
it back (``-s``/``-d``/``-i``/``-o``/``-p`` first, the implicit protocol match made explicit, ``RELATED,ESTABLISHED``
in that order, host addresses with their prefix length, comments quoted only when needed), so the live state read
back with iptables-save compares equal to the desired state and a second run changes nothing.
"""

JUMP_COMMENT = "nodeguard.conntrack baseline"
# position of a jump rule appended at the end of its chain (owned_state reports a last, not first, jump so)
LAST = -1
_NO_QUOTE = set("_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
MULTIPORT_SLOTS = 15
ICMP4_ESSENTIAL = (3, 11, 12)
ICMP6_ERRORS = (1, 2, 3, 4)
ICMP6_NDP = (133, 134, 135, 136)
ICMP6_MLD = (130, 131, 132, 143)


def save_string(value):
    """Quote a string argument the way iptables-save does (xtables_save_string)."""
    if value and all(char in _NO_QUOTE for char in value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("'", "\\'")
    return '"%s"' % escaped


def chain_names(prefix):
    """The only chains the baseline owns: exactly these names (``loader.SUFFIXES``), never "anything that starts
    with the prefix" (a foreign ``SSH-GUARD`` chain is not owned by the prefix ``SSH-``)."""
    return {
        "input": prefix + "INPUT",
        "input_invalid": prefix + "INPUT-INVALID",
        "forward": prefix + "FORWARD",
        "forward_invalid": prefix + "FORWARD-INVALID",
        "forward_dnat": prefix + "FORWARD-DNAT",
        "raw_prerouting": prefix + "PREROUTING",
        "raw_output": prefix + "OUTPUT",
    }


def jump_spec(chain):
    return "-m comment --comment %s -j %s" % (save_string(JUMP_COMMENT), chain)


def _family_nets(nets, family):
    """([addresses of this family], skip) -- skip when the list is non-empty but has none of this family."""
    mine = [text for fam, text in nets if fam == family]
    if nets and not mine:
        return [], True
    return mine or [None], False


def _port_groups(ports):
    groups, current, slots = [], [], 0
    for port in ports:
        cost = 2 if ":" in port else 1
        if slots + cost > MULTIPORT_SLOTS:
            groups.append(current)
            current, slots = [], 0
        current.append(port)
        slots += cost
    if current:
        groups.append(current)
    return groups


def _port_match(proto, ports, direction):
    """Port match text for one group of destination or source ports (see _flow_ports)."""
    return _flow_ports(proto, **{direction + "s": ports})


def _head(source=None, destination=None, in_iface=None, out_iface=None, proto=None):
    parts = []
    if source:
        parts += ["-s", source]
    if destination:
        parts += ["-d", destination]
    if in_iface:
        parts += ["-i", in_iface]
    if out_iface:
        parts += ["-o", out_iface]
    if proto:
        parts += ["-p", proto]
    return parts


def _comment(comment):
    return ["-m", "comment", "--comment", save_string(comment)] if comment else []


def _join(parts):
    return " ".join(part for part in parts if part)


def _product(*lists):
    out = [()]
    for values in lists:
        out = [prev + (value,) for prev in out for value in values]
    return out


def _invalid_rules(spec, family, chain, target):
    """Jump rules into the INVALID chain and the chain's own rules; ([jumps], [chain rules])."""
    if not spec["enabled"]:
        return [], []
    sources, skip = _family_nets(spec["sources"], family)
    if skip:
        return [], []
    jumps = []
    for source, in_iface, out_iface in _product(sources, spec["in_interfaces"] or [None],
                                                spec["out_interfaces"] or [None]):
        jumps.append(_join(_head(source, None, in_iface, out_iface)
                           + ["-m conntrack --ctstate INVALID -j", target]))
    body = []
    for fam, text in spec["exempt_sources"]:
        if fam == family:
            body.append("-s %s -j RETURN" % text)
    for iface in spec["exempt_interfaces"]:
        body.append("-i %s -j RETURN" % iface)
    if spec["log"]:
        number, unit = spec["log_rate"].split("/")
        body.append("-m limit --limit %s/%s --limit-burst 10 -j LOG --log-prefix %s"
                    % (number, unit, save_string(spec["log_prefix"])))
    body.append("-j DROP")
    return jumps, body


def _service_rules(service, family, state_match="-m conntrack --ctstate NEW", forward=False):
    sources, skip_src = _family_nets(service["sources"], family)
    destinations, skip_dst = _family_nets(service["destinations"], family)
    if skip_src or skip_dst:
        return []
    rules = []
    for source, destination, in_iface, out_iface, ports in _product(
            sources, destinations, service["interfaces"] or [None],
            (service["out_interfaces"] or [None]) if forward else [None], _port_groups(service["ports"])):
        rules.append(_join(_head(source, destination, in_iface, out_iface, service["proto"])
                           + [_port_match(service["proto"], ports, "dport"), state_match]
                           + _comment(service["comment"]) + ["-j ACCEPT"]))
    return rules


def _final_rule(action, family):
    if action == "drop":
        return ["-j DROP"]
    if action == "reject":
        return ["-j REJECT --reject-with %s" % ("icmp-port-unreachable" if family == "ipv4" else "icmp6-port-unreachable")]
    return []


NOT_SYN = "! --tcp-flags FIN,SYN,RST,ACK SYN"
LOCAL_ONLY = "-m addrtype --dst-type LOCAL"


def _flow_ports(proto, sports=None, dports=None, not_syn=False):
    """Port match text for a flow: the protocol's own match for single ports (iptables-save prints both in one
    match), multiport for lists; udplite has no match of its own, so it always uses multiport. ``not_syn`` adds the
    TCP flags test that keeps a connection-opening SYN out (only replies of an outgoing flow are stateless)."""
    own, extra = [], []
    for option, ports in (("sport", sports), ("dport", dports)):
        if not ports:
            continue
        if len(ports) == 1 and proto != "udplite":
            own.append("--%s %s" % (option, ports[0]))
        else:
            extra.append("-m multiport --%ss %s" % (option, ",".join(ports)))
    if not_syn and proto == "tcp":
        own.append(NOT_SYN)
    parts = extra
    if own:
        parts = ["-m %s %s" % (proto, " ".join(own))] + extra
    return " ".join(parts)


def _notrack_rules(item, family):
    """{'raw_prerouting': [...], 'raw_output': [...], 'input': [...], 'forward': [...]} for one NOTRACK entry.

    Every stateless rule is bounded to the declared flow: the raw PREROUTING rules of a local flow match only packets
    addressed to this host (``addrtype LOCAL``), so forwarded and NATed packets keep their conntrack entry; the
    replies of an outgoing flow are matched by the remote service port AND the local client ports, never by the
    remote port alone, and TCP SYNs are left tracked, so "source port 443" opens no local port.
    """
    sources, skip_src = _family_nets(item["sources"], family)
    destinations, skip_dst = _family_nets(item["destinations"], family)
    out = {"raw_prerouting": [], "raw_output": [], "input": [], "forward": []}
    if skip_src or skip_dst:
        return out
    proto = item["proto"]
    ifaces = item["interfaces"] or [None]
    comment = _comment(item["comment"])
    notrack = comment + ["-j CT --notrack"]
    untracked = ["-m conntrack --ctstate UNTRACKED"] + comment + ["-j ACCEPT"]
    directions = ("in", "out") if item["direction"] == "both" else (item["direction"],)
    local_groups = _port_groups(item["local_ports"]) if item["local_ports"] else [None]
    for direction in directions:
        for source, destination, iface, ports, local_ports in _product(
                sources, destinations, ifaces, _port_groups(item["ports"]),
                local_groups if direction == "out" else [None]):
            remote, local = source, destination
            if direction == "in":
                # this side serves the ports: requests arrive with --dport, replies leave with --sport
                request = _flow_ports(proto, dports=ports)
                reply = _flow_ports(proto, sports=ports)
                towards_remote, towards_local = reply, request
            else:
                # this side is the client of the ports, using local_ports as its source ports
                request = _flow_ports(proto, sports=local_ports, dports=ports)
                reply = _flow_ports(proto, sports=ports, dports=local_ports, not_syn=True)
                towards_remote, towards_local = request, reply
            if item["forwarded"]:
                # hosts behind this router (destinations) talk to remote ones; both directions cross PREROUTING
                out["raw_prerouting"].append(_join(_head(remote, local, iface, None, proto) + [towards_local]
                                                   + notrack))
                out["raw_prerouting"].append(_join(_head(local, remote, None, None, proto) + [towards_remote]
                                                   + notrack))
                if item["accept"]:
                    out["forward"].append(_join(_head(remote, local, iface, None, proto) + [towards_local]
                                                + untracked))
                    out["forward"].append(_join(_head(local, remote, None, None, proto) + [towards_remote]
                                                + untracked))
                continue
            out["raw_prerouting"].append(_join(_head(remote, local, iface, None, proto) + [LOCAL_ONLY, towards_local]
                                               + notrack))
            out["raw_output"].append(_join(_head(local, remote, None, iface, proto) + [towards_remote] + notrack))
            if item["accept"]:
                out["input"].append(_join(_head(remote, local, iface, None, proto) + [towards_local] + untracked))
    return out


def _table(state, name):
    return state.setdefault(name, {"chains": {}, "jumps": [], "policies": {}})


def desired_state(model, family):
    """The owned state the model asks for in one family (see _fw_save for the structure)."""
    names = chain_names(model["prefix"])
    state = {}
    notrack = {"raw_prerouting": [], "raw_output": [], "input": [], "forward": []}
    for item in model["notrack"]:
        for key, rules in _notrack_rules(item, family).items():
            notrack[key].extend(rules)

    section = model["input"]
    if section["enabled"]:
        rules = []
        if section["loopback"]:
            rules.append("-i lo -j ACCEPT")
        rules.append("-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
        if family == "ipv6":
            # what IPv6 needs to work at all, whatever the ICMP switches say. Neighbour discovery (hop limit 255)
            # is INVALID to conntrack (no ICMPv6 "new" type), so it comes before the INVALID jump.
            rules += ["-p ipv6-icmp -m icmp6 --icmpv6-type %d -m hl --hl-eq 255 -j ACCEPT" % t for t in ICMP6_NDP]
        if section["icmp"]:
            # ICMP errors before the INVALID jump: an error about a NOTRACK flow has no conntrack entry to be RELATED
            # to and is INVALID; dropping it would break path MTU discovery (fragmentation needed, packet too big)
            if family == "ipv4":
                rules += ["-p icmp -m icmp --icmp-type %d -j ACCEPT" % t for t in ICMP4_ESSENTIAL]
            else:
                rules += ["-p ipv6-icmp -m icmp6 --icmpv6-type %d -j ACCEPT" % t for t in ICMP6_ERRORS]
        jumps, body = _invalid_rules(section["invalid_drop"], family, "input", names["input_invalid"])
        rules += jumps
        if family == "ipv6":
            # MLD (hop limit 1) is UNTRACKED, DHCPv6 replies from a link-local server or relay to this link-local
            # client are NEW (the request went to a multicast address): neither is INVALID, both come after the jump
            rules += ["-p ipv6-icmp -m icmp6 --icmpv6-type %d -m hl --hl-eq 1 -j ACCEPT" % t for t in ICMP6_MLD]
            rules.append("-s fe80::/10 -d fe80::/10 -p udp -m udp --sport 547 --dport 546 -j ACCEPT")
        if section["icmp"] and section["icmp_echo"]:
            rules.append("-p icmp -m icmp --icmp-type 8 -j ACCEPT" if family == "ipv4"
                         else "-p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT")
        rules += notrack["input"]
        for service in section["untracked_services"]:
            # flows another tool exempts from conntrack (its own raw-table NOTRACK rules)
            rules += _service_rules(service, family, state_match="-m conntrack --ctstate UNTRACKED")
        for service in section["services"]:
            rules += _service_rules(service, family)
        rules += _final_rule(section["final_action"], family)
        table = _table(state, "filter")
        table["chains"][names["input"]] = rules
        table["jumps"].append(("INPUT", 1, jump_spec(names["input"])))
        if jumps:
            table["chains"][names["input_invalid"]] = body

    section = model["forward"]
    if section["enabled"]:
        rules = ["-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]
        if section["accept_dnat"]:
            # DNATed flows go on to the rest of FORWARD (DOCKER-USER, Docker's and CNI policy chains decide first);
            # only what nobody decided reaches the owned chain appended at the end of FORWARD, which accepts them
            rules.append("-m conntrack --ctstate DNAT -j RETURN")
        jumps, body = _invalid_rules(section["invalid_drop"], family, "forward", names["forward_invalid"])
        rules += jumps
        rules += notrack["forward"]
        for service in section["services"]:
            rules += _service_rules(service, family, forward=True)
        rules += _final_rule(section["final_action"], family)
        table = _table(state, "filter")
        table["chains"][names["forward"]] = rules
        table["jumps"].append(("FORWARD", 1, jump_spec(names["forward"])))
        if jumps:
            table["chains"][names["forward_invalid"]] = body
        if section["accept_dnat"]:
            table["chains"][names["forward_dnat"]] = ["-m conntrack --ctstate DNAT -j ACCEPT"]
            table["jumps"].append(("FORWARD", LAST, jump_spec(names["forward_dnat"])))

    if notrack["raw_prerouting"]:
        table = _table(state, "raw")
        table["chains"][names["raw_prerouting"]] = notrack["raw_prerouting"]
        table["jumps"].append(("PREROUTING", 1, jump_spec(names["raw_prerouting"])))
    if notrack["raw_output"]:
        table = _table(state, "raw")
        table["chains"][names["raw_output"]] = notrack["raw_output"]
        table["jumps"].append(("OUTPUT", 1, jump_spec(names["raw_output"])))

    if model["policies"]:
        table = _table(state, "filter")
        table["policies"] = dict(model["policies"])
    return state


def managed_policy_chains(model):
    return {"filter": sorted(model["policies"])} if model["policies"] else {}


def absent_state(model, current=None):
    """What ``state: absent`` leaves: nothing owned; a policy the model set goes back to ACCEPT only while it still
    has the value the model gave it (a policy another tool changed since is left as it is)."""
    if not model["policies"]:
        return {}
    live = ((current or {}).get("filter") or {}).get("policies", {})
    policies = {}
    for chain, value in model["policies"].items():
        now = live.get(chain, value)
        policies[chain] = "ACCEPT" if now == value else now
    return {"filter": {"chains": {}, "jumps": [], "policies": policies}}


def _canonical(state):
    out = {}
    for table, data in state.items():
        if not data["chains"] and not data["jumps"] and not data["policies"]:
            continue
        out[table] = (sorted((chain, tuple(rules)) for chain, rules in data["chains"].items()),
                      sorted(data["jumps"]), sorted(data["policies"].items()))
    return out


def states_equal(current, desired):
    return _canonical(current) == _canonical(desired)


def render_restore(state):
    """``iptables-restore --noflush`` input that creates ``state`` from nothing (the persisted rules file)."""
    lines = []
    for table in sorted(state):
        data = state[table]
        lines.append("*%s" % table)
        for chain, policy in sorted(data["policies"].items()):
            lines.append(":%s %s [0:0]" % (chain, policy))
        for chain in sorted(data["chains"]):
            lines.append(":%s - [0:0]" % chain)
        for chain in sorted(data["chains"]):
            lines += ["-A %s %s" % (chain, spec) for spec in data["chains"][chain]]
        for chain, position, spec in data["jumps"]:
            lines.append(_jump_line(chain, position, spec))
        lines.append("COMMIT")
    return "\n".join(lines) + "\n" if lines else ""


def _jump_line(chain, position, spec):
    if position == LAST:
        return "-A %s %s" % (chain, spec)
    return "-I %s %d %s" % (chain, position, spec)


def render_apply(current, desired):
    """One ``iptables-restore --noflush`` transaction per table turning ``current`` into ``desired``.

    Owned chains are declared (which creates or flushes them), old jump rules deleted by their exact text,
    desired rules and jumps added, and owned chains that are no longer wanted deleted. Nothing else is named.
    """
    lines = []
    for table in sorted(set(current) | set(desired)):
        empty = {"chains": {}, "jumps": [], "policies": {}}
        cur, des = current.get(table, empty), desired.get(table, empty)
        lines.append("*%s" % table)
        for chain, policy in sorted(des["policies"].items()):
            if cur["policies"].get(chain) != policy:
                lines.append(":%s %s [0:0]" % (chain, policy))
        for chain in sorted(set(cur["chains"]) | set(des["chains"])):
            lines.append(":%s - [0:0]" % chain)
        for chain, _position, spec in cur["jumps"]:
            lines.append("-D %s %s" % (chain, spec))
        for chain in sorted(des["chains"]):
            lines += ["-A %s %s" % (chain, spec) for spec in des["chains"][chain]]
        for chain, position, spec in des["jumps"]:
            lines.append(_jump_line(chain, position, spec))
        for chain in sorted(set(cur["chains"]) - set(des["chains"])):
            lines.append("-X %s" % chain)
        lines.append("COMMIT")
    return "\n".join(lines) + "\n" if lines else ""


def state_text(state):
    """Readable iptables-save style text of an owned state (diff before/after)."""
    lines = []
    for table in sorted(state):
        data = state[table]
        if not data["chains"] and not data["jumps"] and not data["policies"]:
            continue
        lines.append("*%s" % table)
        for chain, policy in sorted(data["policies"].items()):
            lines.append(":%s %s" % (chain, policy))
        for chain in sorted(data["chains"]):
            lines.append(":%s - [0:0]" % chain)
        for chain, position, spec in sorted(data["jumps"]):
            lines.append(_jump_line(chain, position, spec))
        for chain in sorted(data["chains"]):
            lines += ["-A %s %s" % (chain, spec) for spec in data["chains"][chain]]
        lines.append("COMMIT")
    return "\n".join(lines) + "\n" if lines else ""


def render_families(model):
    """{family: desired state} for the model's families."""
    return dict((family, desired_state(model, family)) for family in model["families"])
