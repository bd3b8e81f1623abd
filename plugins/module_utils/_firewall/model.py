# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Validate and normalise the structured firewall baseline model.

Private to the collection. Pure: takes the user's model (module arguments or role variables) and returns a
normalised dict with every default filled in, or raises :class:`FirewallModelError` naming the field.
Nothing here touches the host, so bad input fails before any rule is read or written.
"""

import ipaddress
import re
import socket

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import InputError

FAMILIES = ("ipv4", "ipv6")
PROTOS = ("tcp", "udp", "sctp", "udplite")
FINAL_ACTIONS = ("return", "drop", "reject")
POLICIES = ("ACCEPT", "DROP")
DEFAULT_PREFIX = "NG-CT-"
# iptables chain names are at most 28 characters; the longest suffix used is "FORWARD-INVALID" (15).
MAX_PREFIX_LEN = 12
_PREFIX_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
# Linux interface names: up to 15 bytes, no '/', no whitespace; iptables allows a trailing '+' wildcard.
_IFACE_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}\+?$|^\+$")
# Comments are limited to a safe set so iptables-save prints them back exactly as rendered.
_COMMENT_RE = re.compile(r"^[A-Za-z0-9 _.,:;/=+()\[\]#@%-]{1,200}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_RATE_RE = re.compile(r"^([1-9][0-9]{0,5})/(sec|second|min|minute|hour|day|s|m|h|d)$")
_LOG_PREFIX_RE = re.compile(r"^[A-Za-z0-9 _.:=-]{1,29}$")
MULTIPORT_MAX = 15


class FirewallModelError(InputError):
    """Invalid model; the message starts with the dotted path of the offending field."""


def _as_list(value, field):
    if value is None:
        return []
    if isinstance(value, (str, int)):
        return [value]
    if not isinstance(value, (list, tuple)):
        raise FirewallModelError(field, "must be a list, got %s" % type(value).__name__)
    return list(value)


def _bool(value, field, default):
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("yes", "true", "on", "1"):
        return True
    if isinstance(value, str) and value.lower() in ("no", "false", "off", "0"):
        return False
    raise FirewallModelError(field, "must be a boolean, got %r" % (value,))


def _check_keys(data, allowed, field):
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FirewallModelError(field, "must be a mapping, got %s" % type(data).__name__)
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise FirewallModelError(field, "unknown key(s) %s; allowed: %s" % (", ".join(unknown), ", ".join(sorted(allowed))))
    return data


def normalise_prefix(prefix, field="prefix"):
    if prefix is None:
        prefix = DEFAULT_PREFIX
    if not isinstance(prefix, str) or not _PREFIX_RE.match(prefix) or len(prefix) > MAX_PREFIX_LEN:
        raise FirewallModelError(field, "must start with a letter, use only letters, digits, '-' and '_' and be at most "
                                        "%d characters, got %r" % (MAX_PREFIX_LEN, prefix))
    if prefix.upper() in ("INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING", "DOCKER", "KUBE-", "F2B-"):
        raise FirewallModelError(field, "%r would claim chains owned by the kernel or other software" % prefix)
    for foreign in ("DOCKER", "KUBE-", "f2b-", "CNI-", "cali-", "FLANNEL", "WEAVE", "ufw", "LIBVIRT", "fw-", "IN_", "FWD"):
        if prefix.lower().startswith(foreign.lower()) or foreign.lower().startswith(prefix.lower()):
            raise FirewallModelError(field, "%r overlaps chains of other software (%s*)" % (prefix, foreign))
    return prefix


def normalise_port(value, field):
    """A port or range -> 'N' or 'A:B' (the form iptables-save prints)."""
    if isinstance(value, bool):
        raise FirewallModelError(field, "must be a port number or range, got %r" % (value,))
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise FirewallModelError(field, "must be a port number or range, got %r" % (value,))
    parts = re.split(r"[:-]", text) if re.match(r"^\d+[:-]\d+$", text) else [text]
    numbers = []
    for part in parts:
        if not re.match(r"^\d{1,5}$", part):
            raise FirewallModelError(field, "invalid port %r (use 1-65535 or a range like 8000:8100)" % (value,))
        number = int(part)
        if not 1 <= number <= 65535:
            raise FirewallModelError(field, "port %d out of range 1-65535" % number)
        numbers.append(number)
    if len(numbers) == 2:
        if numbers[0] >= numbers[1]:
            raise FirewallModelError(field, "range %r must be low:high" % (value,))
        return "%d:%d" % tuple(numbers)
    return str(numbers[0])


def normalise_network(value, field):
    """A CIDR or address -> (family, text as iptables-save prints it)."""
    if not isinstance(value, str) or not value.strip():
        raise FirewallModelError(field, "must be an address or CIDR string, got %r" % (value,))
    try:
        network = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError as exc:
        raise FirewallModelError(field, "invalid address or CIDR %r (%s)" % (value, exc))
    family = "ipv4" if network.version == 4 else "ipv6"
    if family == "ipv6":
        # inet_ntop's text, as iptables-save prints it (IPv4-mapped addresses as ::ffff:192.0.2.1, not
        # ::ffff:c000:201 as some Python versions write them)
        return family, "%s/%d" % (socket.inet_ntop(socket.AF_INET6, network.network_address.packed), network.prefixlen)
    return family, "%s/%d" % (network.network_address.compressed, network.prefixlen)


def normalise_interface(value, field):
    if not isinstance(value, str) or not _IFACE_RE.match(value):
        raise FirewallModelError(field, "invalid interface name %r (1-15 characters of letters, digits, '_.:@-', "
                                        "optional trailing '+' wildcard)" % (value,))
    return value


def normalise_comment(value, field):
    if value is None:
        return None
    if not isinstance(value, str) or not _COMMENT_RE.match(value):
        raise FirewallModelError(field, "comment %r must be 1-200 characters of letters, digits, spaces and "
                                        "_.,:;/=+()[]#@%%- (no quotes or backslashes)" % (value,))
    return value


def _networks(values, field):
    out = []
    for index, value in enumerate(_as_list(values, field)):
        out.append(normalise_network(value, "%s[%d]" % (field, index)))
    return out


def _interfaces(values, field):
    """Interface names; a bare '+' matches every interface, which iptables-save prints as no match at all, so a list
    holding it means "any" (the empty list)."""
    names = [normalise_interface(value, "%s[%d]" % (field, index)) for index, value in enumerate(_as_list(values, field))]
    return [] if "+" in names else names


def _ports(values, field, required):
    ports = [normalise_port(value, "%s[%d]" % (field, index)) for index, value in enumerate(_as_list(values, field))]
    if required and not ports:
        raise FirewallModelError(field, "at least one port is required")
    seen = []
    for port in ports:
        if port not in seen:
            seen.append(port)
    return seen


def _proto(value, field):
    if value is None:
        value = "tcp"
    if not isinstance(value, str) or value.lower() not in PROTOS:
        raise FirewallModelError(field, "unknown protocol %r (one of %s)" % (value, ", ".join(PROTOS)))
    return value.lower()


def _name(value, field, default):
    if value is None:
        return default
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise FirewallModelError(field, "name %r must be 1-64 characters of letters, digits, '_.-'" % (value,))
    return value


def _invalid_drop(data, field, default_enabled, forward):
    allowed = ["enabled", "in_interfaces", "sources", "exempt_sources", "exempt_interfaces", "log", "log_rate",
               "log_prefix"]
    if forward:
        allowed.append("out_interfaces")
    data = _check_keys(data, allowed, field)
    log_rate = normalise_rate(data.get("log_rate") or "5/min", field + ".log_rate")
    log_prefix = data.get("log_prefix") or "ngct-invalid: "
    if not isinstance(log_prefix, str) or not _LOG_PREFIX_RE.match(log_prefix):
        raise FirewallModelError(field + ".log_prefix", "must be 1-29 characters of letters, digits, ' _.:=-', "
                                                        "got %r" % (log_prefix,))
    return {
        "enabled": _bool(data.get("enabled"), field + ".enabled", default_enabled),
        "in_interfaces": _interfaces(data.get("in_interfaces"), field + ".in_interfaces"),
        "out_interfaces": _interfaces(data.get("out_interfaces"), field + ".out_interfaces") if forward else [],
        "sources": _networks(data.get("sources"), field + ".sources"),
        "exempt_sources": _networks(data.get("exempt_sources"), field + ".exempt_sources"),
        "exempt_interfaces": _interfaces(data.get("exempt_interfaces"), field + ".exempt_interfaces"),
        "log": _bool(data.get("log"), field + ".log", False),
        "log_rate": log_rate,
        "log_prefix": log_prefix,
    }


# libxt_limit: a rate is stored as the period between two packets in units of 1/10000 s, and printed back in the
# largest unit that still represents it exactly enough (so 60/min reads back as 1/sec, 24/day as 1/hour)
XT_LIMIT_SCALE = 10000
_RATE_UNITS = (("day", XT_LIMIT_SCALE * 24 * 60 * 60), ("hour", XT_LIMIT_SCALE * 60 * 60),
               ("min", XT_LIMIT_SCALE * 60), ("sec", XT_LIMIT_SCALE))
LOG_BURST = 10
# xt_limit refuses a rule when period x burst, turned into credits (x HZ x CREDITS_PER_JIFFY / 10000), overflows 32
# bits; HZ x CREDITS_PER_JIFFY is at most 300 x 128 over the usual HZ values (100, 250, 300, 1000)
_MAX_PERIOD_X_BURST = 0xFFFFFFFF * XT_LIMIT_SCALE // (300 * 128)


def normalise_rate(value, field, burst=LOG_BURST):
    """A limit rate like '60/min' -> the text iptables-save prints for it ('1/sec'); refuses rates iptables or the
    kernel reject (faster than 10000/sec, or so slow that period x burst overflows 32 bits)."""
    if not isinstance(value, str) or not _RATE_RE.match(value):
        raise FirewallModelError(field, "must look like 5/min (N/sec|min|hour|day), got %r" % (value,))
    number, unit = _RATE_RE.match(value).groups()
    multiplier = dict((name[0], mult // XT_LIMIT_SCALE) for name, mult in _RATE_UNITS)[unit[0]]
    count = int(number)
    period = XT_LIMIT_SCALE * multiplier // count
    if period == 0:
        raise FirewallModelError(field, "%r is faster than iptables' limit match can represent (at most 10000/sec)"
                                 % (value,))
    if period * burst > _MAX_PERIOD_X_BURST:
        raise FirewallModelError(field, "%r is too slow for a burst of %d (the kernel's limit match refuses it); use "
                                        "at least 8/day" % (value, burst))
    index = 1
    while index < len(_RATE_UNITS):
        mult = _RATE_UNITS[index][1]
        if period > mult or mult // period < mult % period:
            break
        index += 1
    name, mult = _RATE_UNITS[index - 1]
    return "%d/%s" % (mult // period, name)


def _flow(data, field):
    """The match fields a service and a NOTRACK rule share (name, proto, ports, sources, interfaces, comment);
    the comment defaults to the name."""
    name = _name(data.get("name"), field + ".name", None)
    comment = normalise_comment(data.get("comment"), field + ".comment")
    return {
        "name": name,
        "proto": _proto(data.get("proto"), field + ".proto"),
        "ports": _ports(data.get("ports"), field + ".ports", required=True),
        "sources": _networks(data.get("sources"), field + ".sources"),
        "interfaces": _interfaces(data.get("interfaces"), field + ".interfaces"),
        "comment": name if comment is None else comment,
    }


def _service(data, field, forward):
    allowed = ["name", "proto", "ports", "sources", "interfaces", "comment"]
    if forward:
        allowed += ["destinations", "out_interfaces"]
    data = _check_keys(data, allowed, field)
    flow = _flow(data, field)
    flow["destinations"] = _networks(data.get("destinations"), field + ".destinations") if forward else []
    flow["out_interfaces"] = _interfaces(data.get("out_interfaces"), field + ".out_interfaces") if forward else []
    return flow


def _final(value, field):
    if value is None:
        return "return"
    if not isinstance(value, str) or value.lower() not in FINAL_ACTIONS:
        raise FirewallModelError(field, "must be one of %s, got %r" % (", ".join(FINAL_ACTIONS), value))
    return value.lower()


def _section(data, field, forward):
    allowed = ["enabled", "loopback", "icmp", "icmp_echo", "invalid_drop", "services", "final_action",
               "untracked_services"]
    if forward:
        allowed = ["enabled", "invalid_drop", "services", "final_action", "accept_dnat"]
    data = _check_keys(data, allowed, field)
    services = _as_list(data.get("services"), field + ".services")
    section = {
        "enabled": _bool(data.get("enabled"), field + ".enabled", not forward),
        "invalid_drop": _invalid_drop(data.get("invalid_drop"), field + ".invalid_drop", not forward, forward),
        "services": [_service(item, "%s.services[%d]" % (field, index), forward) for index, item in enumerate(services)],
        "final_action": _final(data.get("final_action"), field + ".final_action"),
    }
    if forward:
        section["accept_dnat"] = _bool(data.get("accept_dnat"), field + ".accept_dnat", False)
    else:
        untracked = _as_list(data.get("untracked_services"), field + ".untracked_services")
        section["untracked_services"] = [_service(item, "%s.untracked_services[%d]" % (field, index), False)
                                         for index, item in enumerate(untracked)]
        section["loopback"] = _bool(data.get("loopback"), field + ".loopback", True)
        section["icmp"] = _bool(data.get("icmp"), field + ".icmp", True)
        section["icmp_echo"] = _bool(data.get("icmp_echo"), field + ".icmp_echo", True)
    return section


# Linux's default net.ipv4.ip_local_port_range: the source ports a local client uses unless told otherwise.
DEFAULT_LOCAL_PORTS = "32768:60999"


def _notrack(data, field):
    data = _check_keys(data, ["name", "proto", "ports", "sources", "destinations", "interfaces", "direction",
                              "accept", "comment", "local_ports", "forwarded"], field)
    direction = data.get("direction") or "in"
    if direction not in ("in", "out", "both"):
        raise FirewallModelError(field + ".direction", "must be in, out or both, got %r" % (direction,))
    flow = _flow(data, field)
    flow["destinations"] = _networks(data.get("destinations"), field + ".destinations")
    flow["direction"] = direction
    flow["accept"] = _bool(data.get("accept"), field + ".accept", True)
    # the local ports the replies of an outgoing flow arrive at (the client's source ports): the stateless
    # accept of those replies is bounded to them, never "any local port from source port N"
    local_ports = data.get("local_ports")
    if local_ports is not None and direction == "in":
        raise FirewallModelError(field + ".local_ports", "only applies to direction out or both")
    flow["local_ports"] = (_ports(local_ports, field + ".local_ports", required=True) if local_ports is not None
                           else ([DEFAULT_LOCAL_PORTS] if direction != "in" else []))
    flow["forwarded"] = _bool(data.get("forwarded"), field + ".forwarded", False)
    if flow["forwarded"] and not flow["destinations"]:
        raise FirewallModelError(field + ".destinations", "a forwarded NOTRACK flow needs the addresses of the hosts "
                                                          "behind this router that it concerns")
    return flow


def _policies(data, field):
    data = _check_keys(data, ["input", "forward", "output"], field)
    out = {}
    for key in ("input", "forward", "output"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or value.upper() not in POLICIES:
            raise FirewallModelError("%s.%s" % (field, key), "must be ACCEPT or DROP (or unset), got %r" % (value,))
        out[key.upper()] = value.upper()
    return out


def normalise_model(params):
    """Validate the whole model; returns a new dict. ``params`` uses the module's option names."""
    families = _as_list(params.get("families") if params.get("families") is not None else list(FAMILIES), "families")
    for index, family in enumerate(families):
        if family not in FAMILIES:
            raise FirewallModelError("families[%d]" % index, "must be ipv4 or ipv6, got %r" % (family,))
    if not families:
        raise FirewallModelError("families", "at least one family is required")
    notrack = _as_list(params.get("notrack"), "notrack")
    model = {
        "prefix": normalise_prefix(params.get("prefix")),
        "families": [f for f in FAMILIES if f in families],
        "input": _section(params.get("input"), "input", forward=False),
        "forward": _section(params.get("forward"), "forward", forward=True),
        "notrack": [_notrack(item, "notrack[%d]" % index) for index, item in enumerate(notrack)],
        "policies": _policies(params.get("policies"), "policies"),
    }
    for index, item in enumerate(model["notrack"]):
        if item["forwarded"] and not model["forward"]["enabled"]:
            raise FirewallModelError("notrack[%d].forwarded" % index, "needs forward.enabled: the untracked "
                                     "forwarded packets are accepted in the FORWARD section")
    return model
