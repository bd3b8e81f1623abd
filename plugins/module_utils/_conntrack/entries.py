# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Conntrack entries: decode ctnetlink dump messages, filter, group and describe NAT (private to the collection).

Pure: bytes in, data out; no host I/O. ``_ct_dump`` feeds it what the kernel sends.

The hot path is ``EntryScan.feed``: it walks a whole received buffer of netlink messages with
``struct.unpack_from`` and decodes, per entry, only the attributes the filter and ``group_by`` need.
Addresses stay integers until they are printed; a dict is built only for an entry that is returned.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno as _errno
import ipaddress
import struct

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import InputError, KernelError, NodeguardError, ParseError

AF_INET = 2
AF_INET6 = 10
FAMILY_NAMES = {AF_INET: "ipv4", AF_INET6: "ipv6"}
FAMILY_NUMBERS = {"ipv4": (AF_INET,), "ipv6": (AF_INET6,), "both": (AF_INET, AF_INET6)}

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_DUMP_INTR = 0x10
CT_NEW_MSG_TYPE = (1 << 8) | 0  # NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW: what a dump sends

# top-level entry attributes (enum ctattr_type)
CTA_TUPLE_ORIG = 1
CTA_TUPLE_REPLY = 2
CTA_STATUS = 3
CTA_PROTOINFO = 4
CTA_TIMEOUT = 7
CTA_MARK = 8
CTA_USE = 11
CTA_ID = 12
CTA_ZONE = 18
CTA_MARK_MASK = 21
CTA_FILTER = 25
CTA_STATUS_MASK = 26
# tuple
CTA_TUPLE_IP = 1
CTA_TUPLE_PROTO = 2
CTA_TUPLE_ZONE = 3
CTA_IP_V4_SRC = 1
CTA_IP_V4_DST = 2
CTA_IP_V6_SRC = 3
CTA_IP_V6_DST = 4
CTA_PROTO_NUM = 1
CTA_PROTO_SRC_PORT = 2
CTA_PROTO_DST_PORT = 3
CTA_PROTO_ICMP_ID = 4
CTA_PROTO_ICMP_TYPE = 5
CTA_PROTO_ICMP_CODE = 6
CTA_PROTO_ICMPV6_ID = 7
CTA_PROTO_ICMPV6_TYPE = 8
CTA_PROTO_ICMPV6_CODE = 9
CTA_PROTOINFO_TCP = 1
CTA_PROTOINFO_TCP_STATE = 1
# CTA_FILTER (kernel >= 5.8)
CTA_FILTER_ORIG_FLAGS = 1
CTA_FILTER_REPLY_FLAGS = 2
FILTER_F_IP_SRC = 1 << 0
FILTER_F_IP_DST = 1 << 1
FILTER_F_PROTO_NUM = 1 << 3
FILTER_F_SRC_PORT = 1 << 4
FILTER_F_DST_PORT = 1 << 5

PROTO_NAMES = {1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 33: "dccp", 47: "gre", 58: "icmpv6", 132: "sctp",
               136: "udplite"}
PROTO_NUMBERS = dict((name, num) for num, name in PROTO_NAMES.items())
PORT_PROTOS = frozenset((6, 17, 33, 132, 136))

# kernel names (conntrack -L prints SYN_SENT2 as it is stored); index = CTA_PROTOINFO_TCP_STATE value
TCP_STATES = ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT",
              "CLOSE", "SYN_SENT2")
TCP_STATE_NUMBERS = dict((name, num) for num, name in enumerate(TCP_STATES))

# enum ip_conntrack_status bit numbers
STATUS_BITS = {
    "expected": 0, "seen_reply": 1, "assured": 2, "confirmed": 3, "snat": 4, "dnat": 5, "seq_adjust": 6,
    "snat_done": 7, "dnat_done": 8, "dying": 9, "fixed_timeout": 10, "template": 11, "nat_clash": 12,
    "helper": 13, "offload": 14, "hw_offload": 15,
}
_STATUS_ORDER = sorted(STATUS_BITS.items(), key=lambda item: item[1])
# pseudo flag: what conntrack -L prints as [UNREPLIED]
UNREPLIED = "unreplied"
STATUS_FLAG_NAMES = tuple(sorted(list(STATUS_BITS) + [UNREPLIED]))

GROUP_FIELDS = ("family", "proto", "state", "orig_src", "orig_dst", "orig_sport", "orig_dport",
                "reply_src", "reply_dst", "reply_sport", "reply_dport", "mark", "zone", "assured")
ADDRESS_FIELDS = ("orig_src", "orig_dst", "reply_src", "reply_dst")
PORT_FIELDS = ("orig_sport", "orig_dport", "reply_sport", "reply_dport")

_NLMSG = struct.Struct("=IHH")  # len, type, flags
_NLA = struct.Struct("=HH")
_ERRNO = struct.Struct("=i")
_FAMILY = struct.Struct("=B")
_BE16 = struct.Struct(">H")
_BE32 = struct.Struct(">I")
_BE64X2 = struct.Struct(">QQ")
_U8 = struct.Struct("B")
# the tuple payload the kernel writes for TCP/UDP/SCTP/UDPlite over IPv4, all headers included, read in one call:
# IP nest, V4_SRC, V4_DST, PROTO nest, NUM (+3 pad), SRC_PORT (+2 pad), DST_PORT (+2 pad)
_V4_PORT_TUPLE = struct.Struct(">4s4sI4sI4s4sB3x4sH2x4sH2x")
_V4_PORT_TUPLE_HDRS = tuple(struct.pack("=HH", length, kind) for length, kind in (
    (20, 0x8000 | CTA_TUPLE_IP), (8, CTA_IP_V4_SRC), (8, CTA_IP_V4_DST), (28, 0x8000 | CTA_TUPLE_PROTO),
    (5, CTA_PROTO_NUM), (6, CTA_PROTO_SRC_PORT), (6, CTA_PROTO_DST_PORT)))


class CtError(NodeguardError):
    """Base class of the errors this module raises."""


class CtDecodeError(ParseError, CtError):
    """Bytes from the kernel (or a recording) that are not a well-formed ctnetlink entry dump."""


class CtFilterError(InputError, CtError):
    """A filter, group_by or limit option with a bad value; ``field`` names the option."""


class CtKernelError(KernelError, CtError):
    """The kernel answered a request with an error; ``errno`` is positive."""

    def __init__(self, errno, message=None):
        super(CtKernelError, self).__init__(message or "kernel error %d (%s)" % (
            errno, _errno.errorcode.get(errno, "?")), errno=errno)


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
            attrs.append(_nla(CTA_MARK, _BE32.pack(self.mark)))
            attrs.append(_nla(CTA_MARK_MASK, _BE32.pack(self.mark_mask)))
        if self.zone is not None and self.zone != 0:
            attrs.append(_nla(CTA_ZONE, _BE16.pack(self.zone)))
        if self.status_set or self.status_clear:
            attrs.append(_nla(CTA_STATUS, _BE32.pack(self.status_set)))
            attrs.append(_nla(CTA_STATUS_MASK, _BE32.pack(self.status_set | self.status_clear)))
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
                filt = _nla(CTA_FILTER_ORIG_FLAGS, struct.pack("=I", orig_flags))
                filt += _nla(CTA_FILTER_REPLY_FLAGS, struct.pack("=I", reply_flags))
                attrs.append(_nla(CTA_FILTER, filt, nested=True))
                if orig_flags:
                    attrs.append(_nla(CTA_TUPLE_ORIG, orig_tuple, nested=True))
                if reply_flags:
                    attrs.append(_nla(CTA_TUPLE_REPLY, reply_tuple, nested=True))
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
                ip_attrs.append(_nla(attr_type, nets[0].value.to_bytes(size, "big")))
        proto_attrs = []
        if self.proto is not None:
            flags |= FILTER_F_PROTO_NUM
            proto_attrs.append(_nla(CTA_PROTO_NUM, _U8.pack(self.proto)))
            if self.proto in (6, 17):  # the kernel compares ports for TCP and UDP only
                for key, flag, attr_type in (("sport", FILTER_F_SRC_PORT, CTA_PROTO_SRC_PORT),
                                             ("dport", FILTER_F_DST_PORT, CTA_PROTO_DST_PORT)):
                    port = self.ports.get("%s_%s" % (direction, key))
                    if port is not None:
                        flags |= flag
                        proto_attrs.append(_nla(attr_type, _BE16.pack(port)))
        payload = b""
        if ip_attrs:
            payload += _nla(CTA_TUPLE_IP, b"".join(ip_attrs), nested=True)
        if proto_attrs:
            payload += _nla(CTA_TUPLE_PROTO, b"".join(proto_attrs), nested=True)
        if flags == FILTER_F_PROTO_NUM and direction == "reply":
            flags = 0  # the protocol is the same in both directions: the orig part carries it
        return flags, payload


def _nla(attr_type, payload, nested=False):
    length = 4 + len(payload)
    return _NLA.pack(length, attr_type | (0x8000 if nested else 0)) + payload + b"\0" * ((4 - length % 4) % 4)


# ---------------------------------------------------------------------------------------------------------
# decoding


def _tuple(buf, start, end):
    """(proto, src, dst, p1, p2) of a CTA_TUPLE_* payload; addresses as ints.

    p1/p2 are the ports for port protocols, (icmp type << 8 | code, id) for ICMP, None otherwise.
    """
    proto = src = dst = p1 = p2 = None
    if end - start == 48:  # the usual IPv4 TCP/UDP layout: one unpack instead of a walk
        (h_ip, h_src, src, h_dst, dst, h_proto, h_num, proto, h_sport, p1, h_dport, p2
         ) = _V4_PORT_TUPLE.unpack_from(buf, start)
        if (h_ip, h_src, h_dst, h_proto, h_num, h_sport, h_dport) == _V4_PORT_TUPLE_HDRS:
            return proto, src, dst, p1, p2
        proto = src = dst = p1 = p2 = None
    icmp_type = icmp_code = icmp_id = None
    pos = start
    while pos + 4 <= end:
        length, kind = _NLA.unpack_from(buf, pos)
        if length < 4 or pos + length > end:
            raise CtDecodeError("malformed tuple attribute at offset %d" % pos)
        kind &= 0x3FFF
        inner_end = pos + length
        if kind == CTA_TUPLE_IP:
            ipos = pos + 4
            while ipos + 4 <= inner_end:
                ilen, ikind = _NLA.unpack_from(buf, ipos)
                if ilen < 4 or ipos + ilen > inner_end:
                    raise CtDecodeError("malformed address attribute at offset %d" % ipos)
                ikind &= 0x3FFF
                if ikind in (CTA_IP_V4_SRC, CTA_IP_V4_DST):
                    if ilen != 8:
                        raise CtDecodeError("IPv4 address attribute of %d bytes" % (ilen - 4))
                    value = _BE32.unpack_from(buf, ipos + 4)[0]
                elif ikind in (CTA_IP_V6_SRC, CTA_IP_V6_DST):
                    if ilen != 20:
                        raise CtDecodeError("IPv6 address attribute of %d bytes" % (ilen - 4))
                    high, low = _BE64X2.unpack_from(buf, ipos + 4)
                    value = high << 64 | low
                else:
                    value = None
                if ikind in (CTA_IP_V4_SRC, CTA_IP_V6_SRC):
                    src = value
                elif ikind in (CTA_IP_V4_DST, CTA_IP_V6_DST):
                    dst = value
                ipos += (ilen + 3) & ~3
        elif kind == CTA_TUPLE_PROTO:
            ppos = pos + 4
            while ppos + 4 <= inner_end:
                plen, pkind = _NLA.unpack_from(buf, ppos)
                if plen < 4 or ppos + plen > inner_end:
                    raise CtDecodeError("malformed protocol attribute at offset %d" % ppos)
                pkind &= 0x3FFF
                if pkind in (CTA_PROTO_NUM, CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMP_CODE, CTA_PROTO_ICMPV6_TYPE,
                             CTA_PROTO_ICMPV6_CODE):
                    if plen < 5:
                        raise CtDecodeError("empty protocol attribute %d" % pkind)
                    value = _U8.unpack_from(buf, ppos + 4)[0]
                    if pkind == CTA_PROTO_NUM:
                        proto = value
                    elif pkind in (CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMPV6_TYPE):
                        icmp_type = value
                    else:
                        icmp_code = value
                elif pkind in (CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT, CTA_PROTO_ICMP_ID, CTA_PROTO_ICMPV6_ID):
                    if plen < 6:
                        raise CtDecodeError("short port attribute %d" % pkind)
                    value = _BE16.unpack_from(buf, ppos + 4)[0]
                    if pkind == CTA_PROTO_SRC_PORT:
                        p1 = value
                    elif pkind == CTA_PROTO_DST_PORT:
                        p2 = value
                    else:
                        icmp_id = value
                ppos += (plen + 3) & ~3
        pos += (length + 3) & ~3
    if icmp_type is not None:
        p1 = icmp_type << 8 | (icmp_code or 0)
        p2 = icmp_id
    return proto, src, dst, p1, p2


def _int_attr(buf, start, end, what):
    size = end - start
    if size == 4:
        return _BE32.unpack_from(buf, start)[0]
    if size == 2:
        return _BE16.unpack_from(buf, start)[0]
    if size == 8:
        return struct.unpack_from(">Q", buf, start)[0]
    if size == 1:
        return _U8.unpack_from(buf, start)[0]
    raise CtDecodeError("%s attribute of %d bytes" % (what, size))


def _tcp_state(buf, start, end):
    """TCP state number inside a CTA_PROTOINFO payload, or None."""
    pos = start
    while pos + 4 <= end:
        length, kind = _NLA.unpack_from(buf, pos)
        if length < 4 or pos + length > end:
            raise CtDecodeError("malformed protoinfo attribute at offset %d" % pos)
        if kind & 0x3FFF == CTA_PROTOINFO_TCP:
            ipos, inner_end = pos + 4, pos + length
            while ipos + 4 <= inner_end:
                ilen, ikind = _NLA.unpack_from(buf, ipos)
                if ilen < 4 or ipos + ilen > inner_end:
                    raise CtDecodeError("malformed TCP protoinfo attribute at offset %d" % ipos)
                if ikind & 0x3FFF == CTA_PROTOINFO_TCP_STATE:
                    if ilen < 5:
                        raise CtDecodeError("empty TCP state attribute")
                    return _U8.unpack_from(buf, ipos + 4)[0]
                ipos += (ilen + 3) & ~3
        pos += (length + 3) & ~3
    return None


def address_text(family, value):
    if value is None:
        return None
    if family == AF_INET:
        return str(ipaddress.IPv4Address(value))
    return str(ipaddress.IPv6Address(value))


def _endpoint(family, address, port):
    text = address_text(family, address)
    if port is None:
        return text
    if family == AF_INET6:
        return "[%s]:%d" % (text, port)
    return "%s:%d" % (text, port)


def _tuple_dict(family, tup):
    proto, src, dst, p1, p2 = tup
    out = {"src": address_text(family, src), "dst": address_text(family, dst)}
    if proto in (1, 58):
        out["type"] = None if p1 is None else p1 >> 8
        out["code"] = None if p1 is None else p1 & 0xFF
        out["id"] = p2
    else:
        out["sport"] = p1
        out["dport"] = p2
    return out


def status_flags(status):
    flags = [name for name, bit in _STATUS_ORDER if status >> bit & 1]
    if not status >> STATUS_BITS["seen_reply"] & 1:
        flags.append(UNREPLIED)
    return flags


def nat_view(family, orig, reply):
    """What NAT rewrote, from the two tuples: the reply of an untranslated flow is the exact inverse.

    DNAT: the original destination became the reply source (the real backend).
    SNAT: the original source became the reply destination.
    """
    proto, osrc, odst, osport, odport = orig
    _rproto, rsrc, rdst, rsport, rdport = reply
    ports = proto in PORT_PROTOS
    view = {"dnat": None, "snat": None, "summary": None}
    parts = []
    if (rsrc, rsport if ports else None) != (odst, odport if ports else None):
        before = _endpoint(family, odst, odport if ports else None)
        after = _endpoint(family, rsrc, rsport if ports else None)
        view["dnat"] = {"from": before, "to": after, "address": address_text(family, rsrc),
                        "port": rsport if ports else None}
        parts.append("dst %s -> %s" % (before, after))
    if (rdst, rdport if ports else None) != (osrc, osport if ports else None):
        before = _endpoint(family, osrc, osport if ports else None)
        after = _endpoint(family, rdst, rdport if ports else None)
        view["snat"] = {"from": before, "to": after, "address": address_text(family, rdst),
                        "port": rdport if ports else None}
        parts.append("src %s -> %s" % (before, after))
    view["summary"] = "; ".join(parts) if parts else None
    return view


def decode_entry(buf, start, end, family):
    """The full structured entry of one dump message's attributes ``buf[start:end]``."""
    orig = reply = None
    status = 0
    state = timeout = entry_id = use = None
    mark = zone = 0
    pos = start
    while pos + 4 <= end:
        length, kind = _NLA.unpack_from(buf, pos)
        if length < 4 or pos + length > end:
            raise CtDecodeError("malformed entry attribute at offset %d" % pos)
        kind &= 0x3FFF
        pstart, pend = pos + 4, pos + length
        if kind == CTA_TUPLE_ORIG:
            orig = _tuple(buf, pstart, pend)
        elif kind == CTA_TUPLE_REPLY:
            reply = _tuple(buf, pstart, pend)
        elif kind == CTA_STATUS:
            status = _int_attr(buf, pstart, pend, "status")
        elif kind == CTA_PROTOINFO:
            state = _tcp_state(buf, pstart, pend)
        elif kind == CTA_TIMEOUT:
            timeout = _int_attr(buf, pstart, pend, "timeout")
        elif kind == CTA_MARK:
            mark = _int_attr(buf, pstart, pend, "mark")
        elif kind == CTA_ZONE:
            zone = _int_attr(buf, pstart, pend, "zone")
        elif kind == CTA_ID:
            entry_id = _int_attr(buf, pstart, pend, "id")
        elif kind == CTA_USE:
            use = _int_attr(buf, pstart, pend, "use")
        pos += (length + 3) & ~3
    if orig is None or reply is None:
        raise CtDecodeError("entry without both tuples")
    proto = orig[0]
    return {
        "family": FAMILY_NAMES.get(family, str(family)),
        "proto": PROTO_NAMES.get(proto, str(proto)),
        "proto_num": proto,
        "original": _tuple_dict(family, orig),
        "reply": _tuple_dict(family, reply),
        "state": TCP_STATES[state] if state is not None and state < len(TCP_STATES) else state,
        "timeout": timeout,
        "mark": mark,
        "zone": zone,
        "status": status,
        "flags": status_flags(status),
        "id": entry_id,
        "use": use,
        "nat": nat_view(family, orig, reply),
    }


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


# ---------------------------------------------------------------------------------------------------------
# the streaming scan


class EntryScan:
    """Consumes dump buffers, keeps only counts, groups, the first ``limit`` entries and (for flush) the
    delete keys of matching entries. Memory grows with what is returned, never with the table."""

    def __init__(self, entry_filter, group_by=None, limit=0, collect_delete_keys=False):
        self.filter = entry_filter
        self.group_by = list(group_by or [])
        self.limit = limit
        self.collect = collect_delete_keys
        self.scanned = 0
        self.matched = 0
        self.entries = []
        self.groups = {}
        self.delete_keys = []
        self.dump_interrupted = False
        self._layouts = {}
        flt = entry_filter
        fields = set(self.group_by)
        self._need_orig = bool(flt.proto is not None or any(f.startswith("orig_") for f in flt.nets)
                               or any(f.startswith("orig_") for f in flt.ports)
                               or fields & {"proto", "orig_src", "orig_dst", "orig_sport", "orig_dport"})
        self._need_reply = bool(any(f.startswith("reply_") for f in flt.nets)
                                or any(f.startswith("reply_") for f in flt.ports)
                                or fields & {"reply_src", "reply_dst", "reply_sport", "reply_dport"})
        self._need_status = bool(flt.status_set or flt.status_clear or "assured" in fields)
        self._need_state = bool(flt.states or "state" in fields)
        self._need_mark = flt.mark is not None or "mark" in fields
        self._need_zone = flt.zone is not None or "zone" in fields
        getters = [_group_getter(field) for field in self.group_by]
        if not getters:
            self._group_key = None
        elif len(getters) == 1:
            self._group_key = getters[0]
        elif len(getters) == 2:
            first, second = getters
            self._group_key = lambda *values: (first(*values), second(*values))
        else:
            self._group_key = lambda *values: tuple(getter(*values) for getter in getters)
        nests = ((CTA_TUPLE_ORIG, self._need_orig), (CTA_TUPLE_REPLY, self._need_reply),
                 (CTA_PROTOINFO, self._need_state))
        self._descend = frozenset(kind for kind, needed in nests if needed)
        self._decode_any = (self._need_orig or self._need_reply or self._need_status or self._need_state
                            or self._need_mark or self._need_zone)
        # (field, [(mask, value)]) for address checks, grouped per tuple side
        self._orig_checks = self._address_checks("orig")
        self._reply_checks = self._address_checks("reply")

    def _address_checks(self, side):
        checks = []
        for key, index in (("src", 1), ("dst", 2)):
            nets = self.filter.nets.get("%s_%s" % (side, key))
            if nets:
                checks.append((index, [(net.family, net.mask, net.value) for net in nets]))
        ports = []
        for key, index in (("sport", 3), ("dport", 4)):
            port = self.filter.ports.get("%s_%s" % (side, key))
            if port is not None:
                ports.append((index, port))
        return checks, ports

    def feed(self, buf, end):
        """Process the netlink messages in ``buf[:end]``. Returns True when the dump is complete (DONE).

        Raises CtKernelError for an error reply, CtDecodeError for malformed bytes.
        """
        try:
            return self._feed(buf, end)
        except (struct.error, IndexError, ValueError, OverflowError) as exc:
            raise CtDecodeError("malformed ctnetlink data: %s" % exc)

    def _feed(self, buf, end):  # noqa: C901 - one hot loop on purpose
        nlmsg = _NLMSG.unpack_from
        nla = _NLA.unpack_from
        be32 = _BE32.unpack_from
        be16 = _BE16.unpack_from
        family_of = _FAMILY.unpack_from
        decode_any = self._decode_any
        need_orig, need_reply = self._need_orig, self._need_reply
        need_status, need_state = self._need_status, self._need_state
        need_mark, need_zone = self._need_mark, self._need_zone
        flt = self.filter
        proto_want, states = flt.proto, flt.states
        status_set, status_clear = flt.status_set, flt.status_clear
        mark_want, mark_mask, zone_want = flt.mark, flt.mark_mask, flt.zone
        families = flt.families
        orig_addr, orig_ports = self._orig_checks
        reply_addr, reply_ports = self._reply_checks
        group_key = self._group_key
        groups = self.groups
        limit = self.limit
        collect = self.collect
        entries = self.entries
        layouts = self._layouts
        layouts_get = layouts.get
        descend = self._descend
        u8 = _U8.unpack_from
        pos = 0
        scanned = matched = 0
        done = False
        try:
            while pos + 16 <= end:
                mlen, mtype, mflags = nlmsg(buf, pos)
                if mlen < 16 or pos + mlen > end:
                    raise CtDecodeError("malformed netlink message at offset %d (length %d, %d bytes left)"
                                        % (pos, mlen, end - pos))
                mend = pos + mlen
                if mtype != CT_NEW_MSG_TYPE:
                    if mtype == NLMSG_DONE:
                        if mflags & NLM_F_DUMP_INTR:
                            self.dump_interrupted = True
                        if mlen >= 20:
                            err = -_ERRNO.unpack_from(buf, pos + 16)[0]
                            if err > 0:
                                raise CtKernelError(err)
                        done = True
                        break
                    if mtype == NLMSG_ERROR:
                        if mlen < 20:
                            raise CtDecodeError("truncated netlink error message")
                        err = -_ERRNO.unpack_from(buf, pos + 16)[0]
                        if err:
                            raise CtKernelError(err)
                        done = True
                        break
                    pos += (mlen + 3) & ~3
                    continue
                if mlen < 20:
                    raise CtDecodeError("conntrack message of %d bytes has no nfgenmsg" % mlen)
                scanned += 1
                family = family_of(buf, pos + 16)[0]
                if family not in families:
                    pos += (mlen + 3) & ~3
                    continue
                # positions (relative to the message) of the attributes this query may need
                if decode_any or collect:
                    layout = layouts_get(mlen)
                    if layout is None or layout[0](buf, pos) != layout[1]:
                        layout = _learn_layout(buf, pos, mend, layouts, descend)
                    offs = layout[2]
                orig = reply = None
                if need_orig:
                    if layout[3] is not None:
                        orig = _read_tuple(layout[3], buf, pos)
                    else:
                        orig_at = offs[0]
                        if orig_at < 0:
                            raise CtDecodeError("entry without an original tuple")
                        orig_at += pos
                        orig = _tuple(buf, orig_at + 4, orig_at + nla(buf, orig_at)[0])
                    if proto_want is not None and orig[0] != proto_want:
                        pos += (mlen + 3) & ~3
                        continue
                    ok = True
                    for index, nets in orig_addr:
                        value = orig[index]
                        ok = False
                        for fam, mask, want in nets:
                            if fam == family and value is not None and value & mask == want:
                                ok = True
                                break
                        if not ok:
                            break
                    if ok:
                        for index, port in orig_ports:
                            if orig[0] not in PORT_PROTOS or orig[index] != port:
                                ok = False
                                break
                    if not ok:
                        pos += (mlen + 3) & ~3
                        continue
                if need_reply:
                    if layout[4] is not None:
                        reply = _read_tuple(layout[4], buf, pos)
                    else:
                        reply_at = offs[1]
                        if reply_at < 0:
                            raise CtDecodeError("entry without a reply tuple")
                        reply_at += pos
                        reply = _tuple(buf, reply_at + 4, reply_at + nla(buf, reply_at)[0])
                    ok = True
                    for index, nets in reply_addr:
                        value = reply[index]
                        ok = False
                        for fam, mask, want in nets:
                            if fam == family and value is not None and value & mask == want:
                                ok = True
                                break
                        if not ok:
                            break
                    if ok:
                        for index, port in reply_ports:
                            if reply[0] not in PORT_PROTOS or reply[index] != port:
                                ok = False
                                break
                    if not ok:
                        pos += (mlen + 3) & ~3
                        continue
                status = 0
                if need_status:
                    if offs[2] >= 0:
                        status = be32(buf, pos + offs[2] + 4)[0]
                    if status & status_set != status_set or status & status_clear:
                        pos += (mlen + 3) & ~3
                        continue
                state = None
                if need_state:
                    state_at = layout[5]
                    if state_at >= 0:
                        state = u8(buf, pos + state_at)[0]
                    elif state_at == -2:
                        proto_at = pos + offs[3]
                        state = _tcp_state(buf, proto_at + 4, proto_at + nla(buf, proto_at)[0])
                    if states is not None and state not in states:
                        pos += (mlen + 3) & ~3
                        continue
                mark = 0
                if need_mark:
                    if offs[4] >= 0:
                        mark = be32(buf, pos + offs[4] + 4)[0]
                    if mark_want is not None and mark & mark_mask != mark_want:
                        pos += (mlen + 3) & ~3
                        continue
                zone = 0
                if need_zone:
                    if offs[5] >= 0:
                        zone = be16(buf, pos + offs[5] + 4)[0]
                    if zone_want is not None and zone != zone_want:
                        pos += (mlen + 3) & ~3
                        continue
                matched += 1
                if group_key is not None:
                    key = group_key(family, orig, reply, state, status, mark, zone)
                    groups[key] = groups.get(key, 0) + 1
                if limit > len(entries):
                    entries.append(decode_entry(buf, pos + 20, mend, family))
                if collect:
                    parts = layout[6]
                    if parts is None:
                        self.delete_keys.append(delete_key(buf, pos + 20, mend, family))
                    else:
                        key = b"".join([buf[pos + rel:pos + rel + size] for rel, size in parts])
                        self.delete_keys.append((family, key))
                pos += (mlen + 3) & ~3
        finally:
            # counted even when an error ends the buffer, so a retry can tell whether anything was consumed
            self.scanned += scanned
            self.matched += matched
        return done

    def group_list(self, top=0):
        """[{key: {field: value}, count}] sorted by count (then key), the first ``top`` when top > 0."""
        single = len(self.group_by) == 1

        def order(item):
            values = (item[0],) if single else item[0]
            return (-item[1],) + tuple((value is None, value or 0) for value in values)

        items = sorted(self.groups.items(), key=order)
        if top:
            items = items[:top]
        out = []
        for key, count in items:
            values = (key,) if len(self.group_by) == 1 else key
            out.append({"key": dict((field, _group_text(field, value)) for field, value in zip(self.group_by, values)),
                        "count": count})
        return out


# attribute kinds whose position a scan may need, in the order of a layout's offset tuple
_LAYOUT_KINDS = (CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS, CTA_PROTOINFO, CTA_MARK, CTA_ZONE)
_LAYOUT_CACHE_MAX = 256
_HEADER = struct.Struct("=I")


class _LayoutWalk:
    """Collects the headers of one message while it is walked (see _learn_layout)."""

    def __init__(self, buf, pos):
        self.buf = buf
        self.pos = pos
        self.headers = []  # (absolute offset, raw header)

    def attrs(self, start, end, what):
        a = start
        while a + 4 <= end:
            alen, kind = _NLA.unpack_from(self.buf, a)
            if alen < 4 or a + alen > end:
                raise CtDecodeError("malformed %s attribute at offset %d" % (what, a))
            self.headers.append((a, _HEADER.unpack_from(self.buf, a)[0]))
            yield kind & 0x3FFF, a, alen
            a += (alen + 3) & ~3

    def tuple_leaves(self, start, end):
        """Relative offsets (src, dst, proto, sport, dport) and address size of a plain TCP/UDP-like tuple,
        or None for anything else (ICMP, GRE, ...), which the generic decoder handles."""
        leaves = {}
        for kind, a, alen in self.attrs(start, end, "tuple"):
            if kind == CTA_TUPLE_IP:
                for ikind, ia, ilen in self.attrs(a + 4, a + alen, "address"):
                    if ikind in (CTA_IP_V4_SRC, CTA_IP_V4_DST) and ilen == 8:
                        leaves["src" if ikind == CTA_IP_V4_SRC else "dst"] = (ia + 4, 4)
                    elif ikind in (CTA_IP_V6_SRC, CTA_IP_V6_DST) and ilen == 20:
                        leaves["src" if ikind == CTA_IP_V6_SRC else "dst"] = (ia + 4, 16)
            elif kind == CTA_TUPLE_PROTO:
                for pkind, pa, plen in self.attrs(a + 4, a + alen, "protocol"):
                    if pkind == CTA_PROTO_NUM and plen >= 5:
                        leaves["proto"] = (pa + 4, 1)
                    elif pkind == CTA_PROTO_SRC_PORT and plen >= 6:
                        leaves["sport"] = (pa + 4, 2)
                    elif pkind == CTA_PROTO_DST_PORT and plen >= 6:
                        leaves["dport"] = (pa + 4, 2)
        names = ("src", "dst", "proto", "sport", "dport")
        if any(name not in leaves for name in names) or leaves["src"][1] != leaves["dst"][1]:
            return None
        offsets = [leaves[name][0] - self.pos for name in names]
        if offsets != sorted(offsets):
            return None
        codes = {1: "B", 2: "H", 4: "I", 16: "QQ"}
        fmt = [">"]
        cursor = 0
        for name, rel in zip(names, offsets):
            size = leaves[name][1]
            fmt.append("%dx%s" % (rel - cursor, codes[size]))
            cursor = rel + size
        return struct.Struct("".join(fmt)).unpack_from, leaves["src"][1] == 16

    def state_leaf(self, start, end):
        """Relative offset of the TCP state byte inside CTA_PROTOINFO, or -2 when it is not there."""
        for kind, a, alen in self.attrs(start, end, "protoinfo"):
            if kind == CTA_PROTOINFO_TCP:
                for ikind, ia, ilen in self.attrs(a + 4, a + alen, "TCP protoinfo"):
                    if ikind == CTA_PROTOINFO_TCP_STATE and ilen >= 5:
                        return ia + 4 - self.pos
        return -2


def _learn_layout(buf, pos, mend, layouts, descend):
    """Walk the message at ``pos`` and describe its layout; cache it under the message length.

    Entries of one kind (say IPv4 UDP, or IPv4 TCP in a zone) share one attribute layout: the same lengths
    and types in the same order. The layout is kept as a struct that unpacks every attribute header the
    query relies on (top level, and inside the nests it reads) in one call; the next message of the same
    length is checked against it with one unpack and one tuple comparison instead of a walk, and its values
    are read at the recorded offsets, a whole tuple with one more unpack. Every relied-on header is verified,
    so a message that only looks similar is walked again.

    Returns (verify, expected_headers, offsets, orig_reader, reply_reader, state_offset, delete_parts);
    delete_parts are the (offset, padded length) of the attributes a delete request copies (see delete_key).
    """
    walk = _LayoutWalk(buf, pos)
    found = [-1] * len(_LAYOUT_KINDS)
    readers = {CTA_TUPLE_ORIG: None, CTA_TUPLE_REPLY: None}
    state_rel = -1
    delete_parts = []
    delete_ok = True
    for kind, a, alen in walk.attrs(pos + 20, mend, "entry"):
        if kind in (CTA_TUPLE_ORIG, CTA_ZONE, CTA_ID):
            padded = (alen + 3) & ~3
            delete_ok = delete_ok and a + padded <= mend
            delete_parts.append((a - pos, padded))
        if kind in _LAYOUT_KINDS:
            found[_LAYOUT_KINDS.index(kind)] = a - pos
            if kind in descend:
                if kind == CTA_PROTOINFO:
                    state_rel = walk.state_leaf(a + 4, a + alen)
                else:
                    readers[kind] = walk.tuple_leaves(a + 4, a + alen)
    fmt = ["="]
    cursor = 0
    for offset, _raw in walk.headers:
        rel = offset - pos
        fmt.append("%dxI" % (rel - cursor) if rel > cursor else "I")
        cursor = rel + 4
    layout = (struct.Struct("".join(fmt)).unpack_from, tuple(raw for _off, raw in walk.headers), tuple(found),
              readers[CTA_TUPLE_ORIG], readers[CTA_TUPLE_REPLY], state_rel,
              tuple(delete_parts) if delete_ok and delete_parts else None)
    if len(walk.headers) <= 128:
        if len(layouts) >= _LAYOUT_CACHE_MAX:
            layouts.clear()
        layouts[mend - pos] = layout
    return layout


def _read_tuple(reader, buf, pos):
    unpack, v6 = reader
    if v6:
        sh, sl, dh, dl, proto, sport, dport = unpack(buf, pos)
        return proto, sh << 64 | sl, dh << 64 | dl, sport, dport
    src, dst, proto, sport, dport = unpack(buf, pos)
    return proto, src, dst, sport, dport


def delete_key(buf, start, end, family):
    """What IPCTNL_MSG_CT_DELETE needs to remove exactly this entry: (family, attribute bytes).

    The original tuple and zone as the kernel wrote them, plus CTA_ID so a newer entry that reuses the
    tuple is not removed by mistake.
    """
    parts = []
    pos = start
    while pos + 4 <= end:
        length, kind = _NLA.unpack_from(buf, pos)
        if length < 4 or pos + length > end:
            raise CtDecodeError("malformed entry attribute at offset %d" % pos)
        if kind & 0x3FFF in (CTA_TUPLE_ORIG, CTA_ZONE, CTA_ID):
            parts.append(bytes(buf[pos:pos + length]) + b"\0" * ((4 - length % 4) % 4))
        pos += (length + 3) & ~3
    return family, b"".join(parts)
