# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lockout guard: would the controller's SSH connection survive the rules about to be applied?

Private to the collection. Pure: takes the live rule set (parsed iptables-save), the owned state now and the owned
state wanted, builds the filter table as it will be right after the apply (foreign rules, the new owned chains and
jumps, the resulting policies) and follows the packets of the SSH connection through INPUT and OUTPUT, jumps,
returns and policies included. A rule whose matches cannot be decided here (an unknown interface, ``-m recent``,
...) may or may not match: the walk keeps both outcomes, so the answer is the set of possible verdicts.
"""

import ipaddress

from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import save_parser as save

TERMINAL = {"ACCEPT": "accept", "DROP": "drop", "REJECT": "drop", "RETURN": "return"}
# targets that decide a packet's fate somewhere else: the outcome is unknown
UNDECIDED = ("NFQUEUE", "QUEUE", "TARPIT", "SYNPROXY")
_IGNORED_MATCHES = ("comment", "limit", "hashlimit", "mark", "connmark", "pkttype")


def resulting_filter(live, current, desired):
    """The filter table right after the apply: {"policies", "chains", "rules"} like parse_save's tables."""
    table = live.get("filter", {"policies": {}, "chains": [], "rules": {}})
    cur = current.get("filter", {"chains": {}, "jumps": [], "policies": {}})
    des = desired.get("filter", {"chains": {}, "jumps": [], "policies": {}})
    rules = {}
    for chain in table["chains"]:
        if chain in cur["chains"]:
            continue
        specs = list(table["rules"].get(chain, []))
        for jump_chain, _position, spec in cur["jumps"]:
            if jump_chain == chain and spec in specs:
                specs.remove(spec)
        rules[chain] = specs
    for chain, specs in des["chains"].items():
        rules[chain] = list(specs)
    for chain, position, spec in des["jumps"]:
        specs = rules.setdefault(chain, [])
        if position == -1:
            specs.append(spec)
        else:
            specs.insert(position - 1, spec)
    policies = dict(table["policies"])
    policies.update(des["policies"])
    for chain in ("INPUT", "FORWARD", "OUTPUT"):
        policies.setdefault(chain, "ACCEPT")
    return {"policies": policies, "chains": list(rules), "rules": rules}


def _network_match(value, address):
    if address is None:
        return None
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None


def _port_in(spec, port):
    for item in spec.split(","):
        if ":" in item:
            low, high = item.split(":", 1)
            if int(low or 0) <= port <= int(high or 65535):
                return True
        elif int(item) == port:
            return True
    return False


def _flags(packet):
    return {"SYN"} if packet["state"] == "NEW" else {"ACK"}


def _iface_match(value, iface):
    """iface is 'lo' or None (a remote packet: not loopback, otherwise unknown)."""
    wildcard = value.endswith("+")
    stem = value[:-1] if wildcard else value
    if iface == "lo":
        return "lo".startswith(stem) if wildcard else value == "lo"
    if value == "lo" or value == "+":
        return value == "+"
    return None


def rule_match(spec, packet):
    """True, False or None (cannot be decided here) for one rule spec and one packet."""
    words = save.tokens(spec)
    result = True
    negate = False
    module = None
    index = 0
    while index < len(words):
        word = words[index]
        arg = words[index + 1] if index + 1 < len(words) else ""
        step = 2
        outcome = True
        if word == "!":
            negate = True
            index += 1
            continue
        if word in ("-j", "--jump", "-g", "--goto"):
            break
        if word == "-m":
            module = arg
            if arg not in ("tcp", "udp", "multiport", "conntrack", "state", "addrtype") + _IGNORED_MATCHES:
                result = None if result is not False else False
        elif word in ("-s", "--source"):
            outcome = _network_match(arg, packet["src"])
        elif word in ("-d", "--destination"):
            outcome = _network_match(arg, packet["dst"])
        elif word in ("-i", "--in-interface"):
            outcome = _iface_match(arg, packet.get("in_iface"))
        elif word in ("-o", "--out-interface"):
            outcome = _iface_match(arg, packet.get("out_iface"))
        elif word in ("-p", "--protocol"):
            outcome = arg in (packet["proto"], "all")
        elif word in ("--dport", "--destination-port", "--dports", "--destination-ports"):
            outcome = _port_in(arg, packet["dport"])
        elif word in ("--sport", "--source-port", "--sports", "--source-ports"):
            outcome = _port_in(arg, packet["sport"])
        elif word == "--ports":
            outcome = _port_in(arg, packet["dport"]) or _port_in(arg, packet["sport"])
        elif word == "--syn":
            outcome = _flags(packet) == {"SYN"}
            step = 1
        elif word == "--tcp-flags":
            mask, comp = set(arg.split(",")), set((words[index + 2] if index + 2 < len(words) else "").split(","))
            comp.discard("NONE")
            if "ALL" in mask:
                mask = {"FIN", "SYN", "RST", "PSH", "ACK", "URG"}
            outcome = (_flags(packet) & mask) == comp
            step = 3
        elif word in ("--ctstate", "--state"):
            outcome = packet["state"] in arg.split(",")
        elif word == "--dst-type" and module == "addrtype":
            outcome = ("LOCAL" in arg.split(",")) if packet.get("dst_local") is not None else None
            if packet.get("dst_local") is False:
                outcome = not outcome
        elif word.startswith("-") and module not in _IGNORED_MATCHES:
            # an option this walk does not model: the rule may or may not match
            outcome = None
        elif not word.startswith("-"):
            step = 1  # a stray value (comment text split by shlex, a second --tcp-flags word)
            outcome = True
        if outcome is not None and negate:
            outcome = not outcome
        negate = False
        if outcome is False:
            return False
        if outcome is None:
            result = None
        index += step
    return result


def _walk(table, chain, packet, start=0, depth=0):
    """Possible outcomes of a packet entering ``chain`` at rule ``start``: a set of 'accept', 'drop', 'return',
    'unknown'."""
    if depth > 32:
        return {"unknown"}
    specs = table["rules"].get(chain, [])
    for index in range(start, len(specs)):
        spec = specs[index]
        kind, target = save.rule_target(spec)
        if target is None:
            continue
        matched = rule_match(spec, packet)
        if matched is False:
            continue
        if target in TERMINAL:
            here = {TERMINAL[target]}
        elif target in UNDECIDED:
            here = {"unknown"}
        elif target in table["rules"]:
            sub = _walk(table, target, packet, 0, depth + 1)
            here = sub - {"return"}
            if "return" in sub:
                here = here | ({"return"} if kind == "g" else _walk(table, chain, packet, index + 1, depth))
        else:
            continue  # LOG, MARK, CT and other non-terminating targets
        if matched is True:
            return here
        return here | _walk(table, chain, packet, index + 1, depth)
    return {"return"}


def outcomes(table, chain, packet):
    """Possible verdicts of a built-in chain, its policy applied when the packet falls off its end."""
    result = _walk(table, chain, packet)
    if "return" in result:
        result = (result - {"return"}) | {"accept" if table["policies"].get(chain, "ACCEPT") == "ACCEPT" else "drop"}
    return result


def ssh_packets(client, client_port, server, server_port):
    """The packets an SSH session needs: (label, chain, packet)."""
    base = {"proto": "tcp"}
    inbound = dict(base, src=client, dst=server, sport=client_port, dport=server_port, dst_local=True)
    outbound = dict(base, src=server, dst=client, sport=server_port, dport=client_port, dst_local=None)
    return [
        ("replies to the controller (OUTPUT, ESTABLISHED)", "OUTPUT", dict(outbound, state="ESTABLISHED")),
        ("packets of this session (INPUT, ESTABLISHED)", "INPUT", dict(inbound, state="ESTABLISHED")),
        ("new connections from the controller (INPUT, NEW)", "INPUT", dict(inbound, state="NEW")),
    ]


def check(live, current, desired, endpoint):
    """None when the SSH session survives, else (chain, sentence) saying what would be cut.

    Refuses when a needed packet would surely be dropped afterwards, or when it was surely accepted before and can no
    longer be shown to be accepted (a rule the walk cannot decide now stands between it and an accept).
    """
    client, client_port, server, server_port = endpoint
    before = live.get("filter", {"policies": {}, "chains": [], "rules": {}})
    before = dict(before, policies=dict({"INPUT": "ACCEPT", "FORWARD": "ACCEPT", "OUTPUT": "ACCEPT"},
                                        **before["policies"]))
    after = resulting_filter(live, current, desired)
    for label, chain, packet in ssh_packets(client, client_port, server, server_port):
        if chain == "INPUT" and ipaddress.ip_address(client).is_loopback:
            packet = dict(packet, in_iface="lo")
        now, then = outcomes(before, chain, packet), outcomes(after, chain, packet)
        if "accept" not in then:
            return chain, "%s would be dropped" % label
        if then != {"accept"} and now == {"accept"}:
            return chain, "%s can no longer be shown to be accepted (a rule the guard cannot evaluate decides)" % label
    return None


def find_ssh_connection(environ, read_environ, read_ppid, pid):
    """SSH_CONNECTION of this process, or of the nearest ancestor that has it (sudo and su drop it from the
    environment of the command they run, but the login shell above them still holds it).

    ``read_environ(pid)`` returns the NUL-separated environment bytes of a process or None; ``read_ppid(pid)`` its
    parent pid or None.
    """
    value = environ.get("SSH_CONNECTION")
    seen = set()
    while not value and pid and pid > 1 and pid not in seen:
        seen.add(pid)
        pid = read_ppid(pid)
        if not pid or pid <= 1:
            break
        data = read_environ(pid) or b""
        for item in data.split(b"\0"):
            if item.startswith(b"SSH_CONNECTION="):
                value = item[len(b"SSH_CONNECTION="):].decode("ascii", "replace")
                break
    parts = (value or "").split()
    if len(parts) == 4 and parts[1].isdigit() and parts[3].isdigit():
        try:
            client, server = ipaddress.ip_address(parts[0]), ipaddress.ip_address(parts[2])
        except ValueError:
            return None
        if client.version == 6 and client.ipv4_mapped:
            client = client.ipv4_mapped
        if server.version == 6 and server.ipv4_mapped:
            server = server.ipv4_mapped
        return str(client), int(parts[1]), str(server), int(parts[3])
    return None
