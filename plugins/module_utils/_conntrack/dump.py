# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Streaming conntrack dump and delete over ctnetlink (private to the collection).

The thin I/O half of entry queries: ``_ct_entries`` does the decoding. A dump is read with ``recv_into`` into
one reusable buffer and handed to ``EntryScan.feed`` datagram by datagram, so nothing accumulates.
"""

import errno as _errno
import struct

from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.netlink import (
    IPCTNL_MSG_CT_DELETE,
    IPCTNL_MSG_CT_GET,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NFNL_SUBSYS_CTNETLINK,
    NLMSG_ERROR,
    CtnetlinkSocket,
    error_for,
)
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.entries import (
    CtDecodeError,
    CtKernelError,
    EntryScan,
)

# the kernel sends dump datagrams of at most 32 KiB; a bigger buffer never truncates one
RECV_BUFFER_SIZE = 1 << 16
SOCKET_RCVBUF = 1 << 22
DELETE_BATCH = 128
DELETE_TIMEOUT = 30.0
_NLMSG = struct.Struct("=IHHI")
_DELETE_HEADER = struct.Struct("=IHHIIBBH")  # nlmsghdr + nfgenmsg (version 0, res_id 0)
_DELETE_TYPE = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE
_ERRNO = struct.Struct("=i")
# errors that mean "this kernel does not understand the filter attributes": retry without CTA_FILTER
_FILTER_UNSUPPORTED = (_errno.EINVAL, _errno.EOPNOTSUPP)


def _read_dump(ct, scan, operation):
    sock = ct.sock
    buf = bytearray(RECV_BUFFER_SIZE)
    recv_into = sock.recv_into
    feed = scan.feed
    while True:
        try:
            size = recv_into(buf)
        except InterruptedError:
            continue
        except OSError as exc:
            raise error_for(exc.errno or _errno.EIO, operation)
        if size <= 0:
            raise CtDecodeError("netlink socket closed during a dump")
        if feed(buf, size):
            return


def scan_table(scan, use_kernel_filter=True, socket_factory=CtnetlinkSocket):
    """Dump every family the filter allows into ``scan``. Returns info about how it was done.

    Kernel-side filtering (mark, zone, status, CTA_FILTER) is asked for when ``use_kernel_filter``; a kernel
    that rejects CTA_FILTER is asked again without it. ``scan`` re-checks every entry in any case.
    """
    info = {"families": [], "kernel_filter": False}
    with socket_factory(rcvbuf=SOCKET_RCVBUF) as ct:
        for family in scan.filter.families:
            with_tuple = use_kernel_filter
            while True:
                payload, used = (scan.filter.kernel_filter_attrs(family, with_tuple_filter=with_tuple)
                                 if use_kernel_filter else (b"", False))
                ct.send(IPCTNL_MSG_CT_GET, family=family, flags=NLM_F_REQUEST | NLM_F_DUMP, payload=payload)
                before = scan.scanned
                try:
                    _read_dump(ct, scan, "CT_GET")
                except CtKernelError as exc:
                    if used and exc.errno in _FILTER_UNSUPPORTED and scan.scanned == before:
                        with_tuple = False
                        continue
                    raise error_for(exc.errno, "CT_GET")
                break
            info["families"].append(family)
            info["kernel_filter"] = info["kernel_filter"] or bool(payload)
    return info


def delete_entries(keys, socket_factory=CtnetlinkSocket):
    """Delete entries by the keys ``EntryScan`` collected. Returns (deleted, vanished).

    Requests go out in batches of DELETE_BATCH messages in one datagram. Only the last request of a batch asks
    for an acknowledgement: the kernel handles the messages of a datagram in order and answers a request
    without NLM_F_ACK only when it fails, so once the last one is acknowledged every failure of the batch has
    been reported and the others were deleted. An entry that is gone by the time its delete arrives (expired,
    or removed by someone else) answers ENOENT: it is counted as vanished, not as an error.
    """
    deleted = vanished = 0
    with socket_factory(rcvbuf=SOCKET_RCVBUF) as ct:
        sock = ct.sock
        sock.settimeout(DELETE_TIMEOUT)
        buf = bytearray(RECV_BUFFER_SIZE)
        seq_base = 1
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start:start + DELETE_BATCH]
            last_seq = seq_base + len(batch) - 1
            # the same bytes as _netlink.build_request, packed in one call per entry (this loop runs per entry)
            requests = [_DELETE_HEADER.pack(_DELETE_HEADER.size + len(payload), _DELETE_TYPE,
                                            NLM_F_REQUEST | (NLM_F_ACK if seq == last_seq else 0), seq, 0,
                                            family, 0, 0) + payload
                        for seq, (family, payload) in enumerate(batch, seq_base)]
            sent = range(seq_base, last_seq + 1)
            seq_base = last_seq + 1
            try:
                sock.sendto(b"".join(requests), (0, 0))
            except OSError as exc:
                raise error_for(exc.errno or _errno.EIO, "CT_DELETE")
            failed = 0
            acknowledged = False
            while not acknowledged:
                try:
                    size = sock.recv_into(buf)
                except InterruptedError:
                    continue
                except OSError as exc:  # including the timeout: the kernel never answered
                    raise error_for(exc.errno or _errno.ETIMEDOUT, "CT_DELETE")
                pos = 0
                while pos + 16 <= size:
                    mlen, mtype, _flags, seq = _NLMSG.unpack_from(buf, pos)
                    if mlen < 16 or pos + mlen > size:
                        raise CtDecodeError("malformed netlink error message")
                    if mtype == NLMSG_ERROR and seq in sent:
                        if mlen < 20:
                            raise CtDecodeError("truncated netlink error message")
                        err = -_ERRNO.unpack_from(buf, pos + 16)[0]
                        if seq == last_seq:
                            acknowledged = True
                        if err == _errno.ENOENT:
                            vanished += 1
                            failed += 1
                        elif err:
                            raise error_for(err, "CT_DELETE")
                    pos += (mlen + 3) & ~3
            deleted += len(batch) - failed
    return deleted, vanished


def query(entry_filter, group_by=None, limit=0, collect_delete_keys=False, use_kernel_filter=True,
          socket_factory=CtnetlinkSocket):
    """Run one scan; returns the finished EntryScan and the dump info."""
    scan = EntryScan(entry_filter, group_by=group_by, limit=limit, collect_delete_keys=collect_delete_keys)
    info = scan_table(scan, use_kernel_filter=use_kernel_filter, socket_factory=socket_factory)
    return scan, info
