# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Conntrack entries, part 4 of 5: the streaming scan (``EntryScan``), the hot path of conntrack_info/flush.

Private to the collection. ``EntryScan.feed`` walks a whole received buffer of netlink messages with
``struct.unpack_from`` and decodes, per entry, only the attributes the filter and ``group_by`` need; the
layouts it learns (``entry_layout``) turn most entries into one unpack and one tuple comparison. Addresses stay
integers until they are printed; a dict is built only for an entry that is returned. Every name the loop uses
is a module global of this file on purpose (no attribute lookups in the loop).
"""

import struct

from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.netlink import NLM_F_DUMP_INTR, NLMSG_DONE, NLMSG_ERROR
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.entry_types import (
    _BE16,
    _BE32,
    CT_NEW_MSG_TYPE,
    CTA_PROTOINFO,
    CTA_TUPLE_ORIG,
    CTA_TUPLE_REPLY,
    CtDecodeError,
    CtKernelError,
    _ERRNO,
    _FAMILY,
    _NLA,
    _NLMSG,
    PORT_PROTOS,
    STATUS_BITS,
    _U8,
)
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.entry_decode import (
    decode_entry,
    _tcp_state,
    _tuple,
)
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.entry_filter import (
    _group_getter,
    _group_text,
)
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.entry_layout import (
    delete_key,
    _learn_layout,
    _read_tuple,
)


# ---------------------------------------------------------------------------------------------------------
# the streaming scan

_DNAT_BIT = 1 << STATUS_BITS["dnat"]
_SNAT_BIT = 1 << STATUS_BITS["snat"]


def _group_key(fields):
    """One function (family, orig, reply, state, status, mark, zone) -> the group key of an entry, or None.

    Called once per matching entry, so it is built without a per-entry loop: one getter, explicit tuples of two
    to four getters, and one function for the fleet audit's statistics (proto, state, dnat, snat)."""
    if list(fields) == ["proto", "state", "dnat", "snat"]:
        return lambda family, orig, reply, state, status, mark, zone: (
            orig[0], state, status & _DNAT_BIT == _DNAT_BIT, status & _SNAT_BIT == _SNAT_BIT)
    getters = [_group_getter(field) for field in fields]
    if not getters:
        return None
    if len(getters) == 1:
        return getters[0]
    if len(getters) == 2:
        first, second = getters
        return lambda *values: (first(*values), second(*values))
    if len(getters) == 3:
        first, second, third = getters
        return lambda *values: (first(*values), second(*values), third(*values))
    if len(getters) == 4:
        first, second, third, fourth = getters
        return lambda *values: (first(*values), second(*values), third(*values), fourth(*values))
    return lambda *values: tuple(getter(*values) for getter in getters)


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
        self._need_status = bool(flt.status_set or flt.status_clear or fields & {"assured", "dnat", "snat"})
        self._need_state = bool(flt.states or "state" in fields)
        self._need_mark = flt.mark is not None or "mark" in fields
        self._need_zone = flt.zone is not None or "zone" in fields
        self._group_key = _group_key(self.group_by)
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
