# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Conntrack entries, part 5 of 5: the layout cache of the scan and the delete key of an entry.

Private to the collection. Entries of one kind share one attribute layout; ``_learn_layout`` describes it once
so the scan can verify and read later messages of the same length at fixed offsets.
"""

import struct

from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.entry_types import (
    CTA_ID,
    CTA_IP_V4_DST,
    CTA_IP_V4_SRC,
    CTA_IP_V6_DST,
    CTA_IP_V6_SRC,
    CTA_MARK,
    CTA_PROTO_DST_PORT,
    CTA_PROTO_NUM,
    CTA_PROTO_SRC_PORT,
    CTA_PROTOINFO,
    CTA_PROTOINFO_TCP,
    CTA_PROTOINFO_TCP_STATE,
    CTA_STATUS,
    CTA_TUPLE_IP,
    CTA_TUPLE_ORIG,
    CTA_TUPLE_PROTO,
    CTA_TUPLE_REPLY,
    CTA_ZONE,
    CtDecodeError,
    _NLA,
)


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
