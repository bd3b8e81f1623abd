# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Conntrack entries, part 3 of 5: decoding one ctnetlink entry into the dict a module returns (tuples,
TCP state, status flags, NAT view).

Private to the collection. Pure: bytes in, data out. Used for entries that are returned, and by unit tests;
the scan reads only what it needs (``entry_scan``).
"""

import ipaddress
import struct

from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.entry_types import (
    AF_INET,
    AF_INET6,
    _BE16,
    _BE32,
    _BE64X2,
    CTA_ID,
    CTA_IP_V4_DST,
    CTA_IP_V4_SRC,
    CTA_IP_V6_DST,
    CTA_IP_V6_SRC,
    CTA_MARK,
    CTA_PROTO_DST_PORT,
    CTA_PROTO_ICMP_CODE,
    CTA_PROTO_ICMP_ID,
    CTA_PROTO_ICMP_TYPE,
    CTA_PROTO_ICMPV6_CODE,
    CTA_PROTO_ICMPV6_ID,
    CTA_PROTO_ICMPV6_TYPE,
    CTA_PROTO_NUM,
    CTA_PROTO_SRC_PORT,
    CTA_PROTOINFO,
    CTA_PROTOINFO_TCP,
    CTA_PROTOINFO_TCP_STATE,
    CTA_STATUS,
    CTA_TIMEOUT,
    CTA_TUPLE_IP,
    CTA_TUPLE_ORIG,
    CTA_TUPLE_PROTO,
    CTA_TUPLE_REPLY,
    CTA_USE,
    CTA_ZONE,
    CtDecodeError,
    FAMILY_NAMES,
    _NLA,
    PORT_PROTOS,
    PROTO_NAMES,
    STATUS_BITS,
    _STATUS_ORDER,
    TCP_STATES,
    _U8,
    UNREPLIED,
    _V4_PORT_TUPLE,
    _V4_PORT_TUPLE_HDRS,
)


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
