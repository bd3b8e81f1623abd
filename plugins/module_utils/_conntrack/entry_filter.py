# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Conntrack entries, part 2 of 5: the filter model (``EntryFilter``, the kernel-side CTA_FILTER attributes)
and ``group_by``/``validate_query``.

Private to the collection. Pure: option values in, a filter out; raises CtFilterError naming the option.
"""

import ipaddress
import struct

from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.netlink import nla_pack
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.entry_types import (
    ADDRESS_FIELDS,
    AF_INET,
    AF_INET6,
    _BE16,
    _BE32,
    CTA_FILTER,
    CTA_FILTER_ORIG_FLAGS,
    CTA_FILTER_REPLY_FLAGS,
    CTA_IP_V4_DST,
    CTA_IP_V4_SRC,
    CTA_IP_V6_DST,
    CTA_IP_V6_SRC,
    CTA_MARK,
    CTA_MARK_MASK,
    CTA_PROTO_DST_PORT,
    CTA_PROTO_NUM,
    CTA_PROTO_SRC_PORT,
    CTA_STATUS,
    CTA_STATUS_MASK,
    CTA_TUPLE_IP,
    CTA_TUPLE_ORIG,
    CTA_TUPLE_PROTO,
    CTA_TUPLE_REPLY,
    CTA_ZONE,
    CtFilterError,
    FAMILY_NAMES,
    FAMILY_NUMBERS,
    FILTER_F_DST_PORT,
    FILTER_F_IP_DST,
    FILTER_F_IP_SRC,
    FILTER_F_PROTO_NUM,
    FILTER_F_SRC_PORT,
    GROUP_FIELDS,
    PORT_FIELDS,
    PORT_PROTOS,
    PROTO_NAMES,
    PROTO_NUMBERS,
    STATUS_BITS,
    STATUS_FLAG_NAMES,
    _STATUS_ORDER,
    TCP_STATE_NUMBERS,
    TCP_STATES,
    _U8,
    UNREPLIED,
)
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.entry_decode import address_text


# ---------------------------------------------------------------------------------------------------------
# filter model


class Network:
    """An address or CIDR as integers, so matching an entry address is one AND and one compare."""

    __slots__ = ("family", "value", "mask", "prefixlen", "text")

    def __init__(self, family, value, mask, prefixlen, text):
        self.family = family
        self.value = value
        self.mask = mask
        self.prefixlen = prefixlen
        self.text = text

    @property
    def is_host(self):
        return self.prefixlen == (32 if self.family == AF_INET else 128)


def parse_network(field, text):
    try:
        net = ipaddress.ip_network(str(text).strip(), strict=False)
    except ValueError:
        raise CtFilterError(field, "%r is not an IP address or CIDR" % (text,))
    family = AF_INET if net.version == 4 else AF_INET6
    return Network(family, int(net.network_address), int(net.netmask), net.prefixlen, str(net))


def _as_list(value):
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _port(field, value):
    if value is None:
        return None
    if isinstance(value, bool):
        raise CtFilterError(field, "%r is not a port number" % (value,))
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise CtFilterError(field, "%r is not a port number" % (value,))
    if not 0 <= port <= 65535:
        raise CtFilterError(field, "%d is not a port number (0-65535)" % port)
    return port


def _uint(field, value, bits):
    if value is None:
        return None
    if isinstance(value, bool):
        raise CtFilterError(field, "%r is not an integer" % (value,))
    try:
        number = int(value, 0) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise CtFilterError(field, "%r is not an integer" % (value,))
    if not 0 <= number < (1 << bits):
        raise CtFilterError(field, "%d is out of range (0-%d)" % (number, (1 << bits) - 1))
    return number


class EntryFilter:
    """What an entry must look like. Every field None/empty means "any". Built by ``EntryFilter.from_params``."""

    FILTER_OPTIONS = ("family", "proto", "orig_src", "orig_dst", "reply_src", "reply_dst", "orig_sport",
                      "orig_dport", "reply_sport", "reply_dport", "state", "status", "mark", "mark_mask", "zone")

    def __init__(self):
        self.families = (AF_INET, AF_INET6)
        self.proto = None
        self.nets = {}  # field -> [Network]; only fields with criteria
        self.ports = {}  # field -> int
        self.states = None  # frozenset of TCP state numbers
        self.status_set = 0
        self.status_clear = 0
        self.mark = None
        self.mark_mask = 0xFFFFFFFF
        self.zone = None

    @classmethod
    def from_params(cls, params):
        """Validate module options (a dict with the FILTER_OPTIONS keys, missing = any); raise CtFilterError."""
        self = cls()
        family = params.get("family") or "both"
        if family not in FAMILY_NUMBERS:
            raise CtFilterError("family", "%r is not one of ipv4, ipv6, both" % (family,))
        self.families = FAMILY_NUMBERS[family]

        proto = params.get("proto")
        if proto is not None and proto != "":
            text = str(proto).strip().lower()
            if text in PROTO_NUMBERS:
                self.proto = PROTO_NUMBERS[text]
            elif text.isdigit() and 0 <= int(text) <= 255:
                self.proto = int(text)
            else:
                raise CtFilterError("proto", "%r is not a protocol name (%s) or number 0-255"
                                    % (proto, ", ".join(sorted(PROTO_NUMBERS))))

        for field in ADDRESS_FIELDS:
            nets = [parse_network(field, item) for item in _as_list(params.get(field))]
            if nets:
                self.nets[field] = nets
        for field in PORT_FIELDS:
            port = _port(field, params.get(field))
            if port is not None:
                self.ports[field] = port
        if self.ports and self.proto is not None and self.proto not in PORT_PROTOS:
            raise CtFilterError(sorted(self.ports)[0], "protocol %s has no ports" % PROTO_NAMES.get(
                self.proto, self.proto))

        states = _as_list(params.get("state"))
        if states:
            numbers = set()
            for state in states:
                name = str(state).strip().upper()
                if name not in TCP_STATE_NUMBERS:
                    raise CtFilterError("state", "%r is not a TCP state (%s)" % (state, ", ".join(TCP_STATES)))
                numbers.add(TCP_STATE_NUMBERS[name])
            if self.proto is None:
                self.proto = 6
            elif self.proto != 6:
                raise CtFilterError("state", "TCP states only apply to proto tcp")
            self.states = frozenset(numbers)

        for flag in _as_list(params.get("status")):
            text = str(flag).strip().lower()
            negate = text.startswith("!")
            name = text[1:] if negate else text
            if name == UNREPLIED:
                name, negate = "seen_reply", not negate
            if name not in STATUS_BITS:
                raise CtFilterError("status", "%r is not a status flag (%s; prefix ! to negate)"
                                    % (flag, ", ".join(STATUS_FLAG_NAMES)))
            bit = 1 << STATUS_BITS[name]
            if negate:
                self.status_clear |= bit
            else:
                self.status_set |= bit
        if self.status_set & self.status_clear:
            raise CtFilterError("status", "a flag is both required and excluded")

        self.mark = _uint("mark", params.get("mark"), 32)
        mask = _uint("mark_mask", params.get("mark_mask"), 32)
        if mask is not None:
            if self.mark is None:
                raise CtFilterError("mark_mask", "needs mark")
            self.mark_mask = mask
            self.mark &= mask
        self.zone = _uint("zone", params.get("zone"), 16)

        # an address filter of one family rules the other family out entirely
        for nets in self.nets.values():
            wanted = set(net.family for net in nets)
            self.families = tuple(fam for fam in self.families if fam in wanted)
        if not self.families:
            raise CtFilterError("family", "the address filters and family select no address family")
        return self

    def is_empty(self):
        """True when nothing but the address family narrows the match (flush refuses that without all)."""
        return not (self.proto is not None or self.nets or self.ports or self.states or self.status_set
                    or self.status_clear or self.mark is not None or self.zone is not None)

    def describe(self):
        """The criteria as a plain dict (returned by the modules)."""
        out = {"family": [FAMILY_NAMES[fam] for fam in self.families]}
        if self.proto is not None:
            out["proto"] = PROTO_NAMES.get(self.proto, str(self.proto))
        for field, nets in self.nets.items():
            out[field] = [net.text for net in nets]
        out.update(self.ports)
        if self.states:
            out["state"] = sorted(TCP_STATES[num] for num in self.states)
        if self.status_set or self.status_clear:
            out["status"] = (["%s" % name for name, bit in _STATUS_ORDER if self.status_set >> bit & 1]
                             + ["!%s" % name for name, bit in _STATUS_ORDER if self.status_clear >> bit & 1])
        if self.mark is not None:
            out["mark"] = self.mark
            out["mark_mask"] = self.mark_mask
        if self.zone is not None:
            out["zone"] = self.zone
        return out

    # kernel-side filtering --------------------------------------------------------------------------------

    def kernel_filter_attrs(self, family, with_tuple_filter=True):
        """Attributes for a dump request of one family that let the kernel skip what cannot match.

        Mark/mask and zone are understood by every supported kernel (older ones ignore what they do not
        know), CTA_STATUS + CTA_STATUS_MASK from 5.19 on, CTA_FILTER with exact IPv4 addresses, protocol and
        ports from 5.8 on. The kernel's answer is re-checked in userspace anyway, so a kernel that ignores an
        attribute only costs speed. Returns (payload bytes, used_tuple_filter).
        """
        attrs = []
        if self.mark is not None:
            attrs.append(nla_pack(CTA_MARK, _BE32.pack(self.mark)))
            attrs.append(nla_pack(CTA_MARK_MASK, _BE32.pack(self.mark_mask)))
        if self.zone is not None and self.zone != 0:
            attrs.append(nla_pack(CTA_ZONE, _BE16.pack(self.zone)))
        if self.status_set or self.status_clear:
            attrs.append(nla_pack(CTA_STATUS, _BE32.pack(self.status_set)))
            attrs.append(nla_pack(CTA_STATUS_MASK, _BE32.pack(self.status_set | self.status_clear)))
        used = False
        if with_tuple_filter:
            orig_flags, orig_tuple = self._tuple_filter(family, "orig")
            reply_flags, reply_tuple = self._tuple_filter(family, "reply")
            # Kernels 5.8-5.13 parse the reply tuple with the *orig* flags: push the reply part down only when
            # both flag sets agree, so no kernel drops an entry that matches.
            if reply_flags and reply_flags != orig_flags:
                reply_flags = 0
            if orig_flags or reply_flags:
                used = True
                filt = nla_pack(CTA_FILTER_ORIG_FLAGS, struct.pack("=I", orig_flags))
                filt += nla_pack(CTA_FILTER_REPLY_FLAGS, struct.pack("=I", reply_flags))
                attrs.append(nla_pack(CTA_FILTER, filt, nested=True))
                if orig_flags:
                    attrs.append(nla_pack(CTA_TUPLE_ORIG, orig_tuple, nested=True))
                if reply_flags:
                    attrs.append(nla_pack(CTA_TUPLE_REPLY, reply_tuple, nested=True))
        return b"".join(attrs), used

    def _tuple_filter(self, family, direction):
        flags = 0
        ip_attrs = []
        src_type, dst_type, size = ((CTA_IP_V4_SRC, CTA_IP_V4_DST, 4) if family == AF_INET
                                    else (CTA_IP_V6_SRC, CTA_IP_V6_DST, 16))
        for key, flag, attr_type in (("src", FILTER_F_IP_SRC, src_type), ("dst", FILTER_F_IP_DST, dst_type)):
            nets = self.nets.get("%s_%s" % (direction, key))
            # IPv4 only: the kernel's IPv6 address comparison in ctnetlink_filter_match_tuple is inverted
            # (``!ipv6_addr_cmp()``, measured on 6.18: an exact IPv6 address filter drops the very entries
            # that match), so IPv6 addresses are always matched in userspace.
            if family == AF_INET and nets and len(nets) == 1 and nets[0].is_host and nets[0].family == family:
                flags |= flag
                ip_attrs.append(nla_pack(attr_type, nets[0].value.to_bytes(size, "big")))
        proto_attrs = []
        if self.proto is not None:
            flags |= FILTER_F_PROTO_NUM
            proto_attrs.append(nla_pack(CTA_PROTO_NUM, _U8.pack(self.proto)))
            if self.proto in (6, 17):  # the kernel compares ports for TCP and UDP only
                for key, flag, attr_type in (("sport", FILTER_F_SRC_PORT, CTA_PROTO_SRC_PORT),
                                             ("dport", FILTER_F_DST_PORT, CTA_PROTO_DST_PORT)):
                    port = self.ports.get("%s_%s" % (direction, key))
                    if port is not None:
                        flags |= flag
                        proto_attrs.append(nla_pack(attr_type, _BE16.pack(port)))
        payload = b""
        if ip_attrs:
            payload += nla_pack(CTA_TUPLE_IP, b"".join(ip_attrs), nested=True)
        if proto_attrs:
            payload += nla_pack(CTA_TUPLE_PROTO, b"".join(proto_attrs), nested=True)
        if flags == FILTER_F_PROTO_NUM and direction == "reply":
            flags = 0  # the protocol is the same in both directions: the orig part carries it
        return flags, payload


# ---------------------------------------------------------------------------------------------------------
# group_by


_V6_KEY = 1 << 128  # IPv6 address keys are offset so they never collide with IPv4 ones


def _group_getter(field):
    """A function (family, orig, reply, state, status, mark, zone) -> hashable raw value of ``field``."""
    if field == "family":
        return lambda family, orig, reply, state, status, mark, zone: family
    if field == "proto":
        return lambda family, orig, reply, state, status, mark, zone: orig[0]
    if field == "state":
        return lambda family, orig, reply, state, status, mark, zone: state
    if field == "mark":
        return lambda family, orig, reply, state, status, mark, zone: mark
    if field == "zone":
        return lambda family, orig, reply, state, status, mark, zone: zone
    if field == "assured":
        return lambda family, orig, reply, state, status, mark, zone: status & 4 == 4
    if field in ("dnat", "snat"):
        bit = 1 << STATUS_BITS[field]
        return lambda family, orig, reply, state, status, mark, zone: status & bit == bit
    side, key = field.split("_", 1)
    index = {"src": 1, "dst": 2, "sport": 3, "dport": 4}[key]
    if key in ("src", "dst"):
        # a tuple without an address attribute (malformed message) groups under None, like a missing port
        if side == "orig":
            return lambda family, orig, reply, state, status, mark, zone: (
                orig[index] if family == AF_INET or orig[index] is None else orig[index] | _V6_KEY)
        return lambda family, orig, reply, state, status, mark, zone: (
            reply[index] if family == AF_INET or reply[index] is None else reply[index] | _V6_KEY)
    if side == "orig":
        return lambda family, orig, reply, state, status, mark, zone: (
            orig[index] if orig[0] in PORT_PROTOS else None)
    return lambda family, orig, reply, state, status, mark, zone: (
        reply[index] if reply[0] in PORT_PROTOS else None)


def _group_text(field, value):
    if value is None:
        return None
    if field == "family":
        return FAMILY_NAMES.get(value, str(value))
    if field == "proto":
        return PROTO_NAMES.get(value, str(value))
    if field == "state":
        return TCP_STATES[value] if value < len(TCP_STATES) else str(value)
    if field in ADDRESS_FIELDS:
        if value >= _V6_KEY:
            return address_text(AF_INET6, value - _V6_KEY)
        return address_text(AF_INET, value)
    return value


def validate_query(group_by, top, limit, max_limit):
    fields = []
    for field in _as_list(group_by):
        name = str(field).strip().lower()
        if name not in GROUP_FIELDS:
            raise CtFilterError("group_by", "%r is not a groupable field (%s)" % (field, ", ".join(GROUP_FIELDS)))
        if name not in fields:
            fields.append(name)
    top = _uint("top", top, 31) if top is not None else 0
    limit = _uint("limit", limit, 31) if limit is not None else 0
    if limit > max_limit:
        raise CtFilterError("limit", "%d is above the maximum of %d" % (limit, max_limit))
    return fields, top, limit
