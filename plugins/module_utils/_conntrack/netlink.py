# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small ctnetlink client on the Python standard library (private to the collection).

No pyroute2, no conntrack-tools: ``socket.AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER (12)``.

Public API (other module_utils build on it; add to it, do not rename):

* constants: ``NETLINK_NETFILTER``, ``NLM_F_*``, ``NLMSG_ERROR``, ``NLMSG_DONE``, ``NFNL_SUBSYS_CTNETLINK``,
  ``IPCTNL_MSG_CT_*``, ``NLA_F_NESTED``, ``CTA_STATS_*`` and ``STATS_CPU_ATTRS`` (attribute -> counter name).
* errors: ``NetlinkError`` (``.errno``, ``.operation``) and its subclasses ``CtnetlinkPermissionError``
  (EPERM/EACCES: the caller lacks CAP_NET_ADMIN in this netns), ``CtnetlinkUnavailableError`` (no nfnetlink or
  no ctnetlink in this kernel), ``CtnetlinkNotFoundError`` (ENOENT, e.g. deleting an entry that is gone) and
  ``NetlinkParseError`` (a reply that is not well-formed netlink).
* ``nla_pack(attr_type, payload, nested=False)`` builds one attribute (padded to 4 bytes);
  ``nla_iter(buf, start, end)`` yields ``(type_without_flags, payload_start, payload_end)``.
* ``iter_nlmsgs(data)`` splits one received datagram into ``(msg_type, flags, seq, offset, length)``: pure, used
  by the socket and by unit tests on recorded bytes.
* ``CtnetlinkSocket``: a context manager (``with CtnetlinkSocket() as ct:``) or ``CtnetlinkSocket.open()``;
  ``.sock`` is the raw socket. ``send(msg_type, family=0, flags=NLM_F_REQUEST | NLM_F_ACK, payload=b"", res_id=0) -> seq``,
  ``messages(seq)`` yields ``(msg_type, nfgen_family, res_id, buffer, attrs_start, attrs_end)`` for every data
  reply until DONE/ACK and raises NetlinkError on an error reply; ``dump(msg_type, family=0, payload=b"")``;
  ``transact(msg_type, family=0, payload=b"", flags=NLM_F_REQUEST | NLM_F_ACK)`` returns the data replies of an
  acknowledged request. ``msg_type`` is the ctnetlink message (``IPCTNL_MSG_CT_GET``); the subsystem is added.
* stats: ``get_stats_cpu()`` -> list of per-CPU dicts (``cpu`` plus the ten counter names; a counter the kernel
  does not report is ``None``), ``get_stats()`` -> ``{"entries": this netns, "max_entries": global}``.
  ``parse_stats_cpu(buf, start, end)`` and ``parse_stats(buf, start, end)`` are the pure halves.

Every request needs CAP_NET_ADMIN in the caller's network namespace (the kernel answers EPERM otherwise).
"""

import errno as _errno
import os
import socket
import struct

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import KernelError, ParseError
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.kernel_model import COUNTER_NAMES

NETLINK_NETFILTER = 12

NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_ECHO = 0x08
NLM_F_DUMP_INTR = 0x10
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4

NFNL_SUBSYS_CTNETLINK = 1
NFNETLINK_V0 = 0

IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
IPCTNL_MSG_CT_GET_CTRZERO = 3
IPCTNL_MSG_CT_GET_STATS_CPU = 4
IPCTNL_MSG_CT_GET_STATS = 5
IPCTNL_MSG_CT_GET_DYING = 6
IPCTNL_MSG_CT_GET_UNCONFIRMED = 7

MSG_NAMES = {
    IPCTNL_MSG_CT_NEW: "CT_NEW",
    IPCTNL_MSG_CT_GET: "CT_GET",
    IPCTNL_MSG_CT_DELETE: "CT_DELETE",
    IPCTNL_MSG_CT_GET_CTRZERO: "CT_GET_CTRZERO",
    IPCTNL_MSG_CT_GET_STATS_CPU: "CT_GET_STATS_CPU",
    IPCTNL_MSG_CT_GET_STATS: "CT_GET_STATS",
    IPCTNL_MSG_CT_GET_DYING: "CT_GET_DYING",
    IPCTNL_MSG_CT_GET_UNCONFIRMED: "CT_GET_UNCONFIRMED",
}

NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF

# per-CPU statistics (CTA_STATS_*); 1, 3, 5, 6 and 7 are unused on current kernels
CTA_STATS_FOUND = 2
CTA_STATS_INVALID = 4
CTA_STATS_INSERT = 8
CTA_STATS_INSERT_FAILED = 9
CTA_STATS_DROP = 10
CTA_STATS_EARLY_DROP = 11
CTA_STATS_ERROR = 12
CTA_STATS_SEARCH_RESTART = 13
CTA_STATS_CLASH_RESOLVE = 14
CTA_STATS_CHAIN_TOOLONG = 15
# global statistics (CTA_STATS_GLOBAL_*)
CTA_STATS_GLOBAL_ENTRIES = 1
CTA_STATS_GLOBAL_MAX_ENTRIES = 2

STATS_CPU_ATTRS = {
    CTA_STATS_FOUND: "found",
    CTA_STATS_INVALID: "invalid",
    CTA_STATS_INSERT: "insert",
    CTA_STATS_INSERT_FAILED: "insert_failed",
    CTA_STATS_DROP: "drop",
    CTA_STATS_EARLY_DROP: "early_drop",
    CTA_STATS_ERROR: "error",
    CTA_STATS_SEARCH_RESTART: "search_restart",
    CTA_STATS_CLASH_RESOLVE: "clash_resolve",
    CTA_STATS_CHAIN_TOOLONG: "chaintoolong",
}

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (big endian, swapped by hand)
_NLATTR = struct.Struct("=HH")
_NLMSGERR = struct.Struct("=i")
_BE16 = struct.Struct("!H")
_BE32 = struct.Struct("!I")
_BE64 = struct.Struct("!Q")

_PERMISSION_ERRNOS = (_errno.EPERM, _errno.EACCES)
_UNAVAILABLE_ERRNOS = (_errno.EPROTONOSUPPORT, _errno.EAFNOSUPPORT, _errno.EOPNOTSUPP)


class NetlinkError(KernelError):
    """A netlink request failed. ``errno`` is the positive errno (or None), ``operation`` what was asked."""

    def __init__(self, errno=None, operation=None, message=None):
        self.operation = operation
        if message is None:
            if errno is not None:
                message = "%s (%s)" % (os.strerror(errno), _errno.errorcode.get(errno, "errno %d" % errno))
            else:
                message = "netlink error"
        self.message = message
        text = "ctnetlink %s failed: %s" % (operation, message) if operation else message
        super(NetlinkError, self).__init__(text, errno=errno)


class CtnetlinkPermissionError(NetlinkError):
    """EPERM/EACCES: ctnetlink needs CAP_NET_ADMIN in the caller's network namespace."""


class CtnetlinkUnavailableError(NetlinkError):
    """This kernel has no nfnetlink or no ctnetlink (nf_conntrack_netlink) available."""


class CtnetlinkNotFoundError(NetlinkError):
    """ENOENT: the object asked for (e.g. one entry) does not exist."""


class NetlinkParseError(NetlinkError, ParseError):
    """Bytes that are not a well-formed netlink message or attribute stream."""

    def __init__(self, message, operation=None):
        super(NetlinkParseError, self).__init__(_errno.EBADMSG, operation, message)


def error_for(err, operation=None):
    """The NetlinkError subclass matching a positive errno."""
    if err in _PERMISSION_ERRNOS:
        return CtnetlinkPermissionError(err, operation,
                                        "%s: ctnetlink needs CAP_NET_ADMIN in this network namespace"
                                        % os.strerror(err))
    if err in _UNAVAILABLE_ERRNOS:
        return CtnetlinkUnavailableError(err, operation, "%s: ctnetlink is not available in this kernel"
                                         % os.strerror(err))
    if err == _errno.ENOENT:
        return CtnetlinkNotFoundError(err, operation)
    return NetlinkError(err, operation)


def _align4(length):
    return (length + 3) & ~3


def nla_pack(attr_type, payload=b"", nested=False):
    """One netlink attribute: header, payload, zero padding to 4 bytes."""
    payload = bytes(payload)
    length = _NLATTR.size + len(payload)
    if length > 0xFFFF:
        raise ValueError("netlink attribute %d too long (%d bytes)" % (attr_type, length))
    attr_type = int(attr_type) & NLA_TYPE_MASK
    if nested:
        attr_type |= NLA_F_NESTED
    return _NLATTR.pack(length, attr_type) + payload + b"\0" * (_align4(length) - length)


def nla_iter(buf, start, end):
    """Yield ``(type_without_flags, payload_start, payload_end)`` for each attribute in ``buf[start:end]``.

    Raises NetlinkParseError when an attribute header is truncated or claims more bytes than there are.
    """
    offset = start
    if end > len(buf):
        raise NetlinkParseError("attribute area ends at %d beyond the %d-byte buffer" % (end, len(buf)))
    while offset + _NLATTR.size <= end:
        length, attr_type = _NLATTR.unpack_from(buf, offset)
        if length < _NLATTR.size or offset + length > end:
            raise NetlinkParseError("malformed netlink attribute at offset %d (length %d, %d bytes left)"
                                    % (offset, length, end - offset))
        yield attr_type & NLA_TYPE_MASK, offset + _NLATTR.size, offset + length
        offset += _align4(length)
    if offset < end and end - offset >= 1 and any(bytearray(buf[offset:end])):
        raise NetlinkParseError("%d trailing bytes after the last netlink attribute" % (end - offset))


def nla_uint(buf, start, end):
    """A big-endian unsigned attribute payload of 1, 2, 4 or 8 bytes."""
    size = end - start
    if size == 4:
        return _BE32.unpack_from(buf, start)[0]
    if size == 8:
        return _BE64.unpack_from(buf, start)[0]
    if size == 2:
        return _BE16.unpack_from(buf, start)[0]
    if size == 1:
        return bytearray(buf[start:end])[0]
    raise NetlinkParseError("integer attribute of %d bytes" % size)


def nfgen_unpack(buf, offset):
    """(family, version, res_id) of the nfgenmsg at offset; res_id is converted from big endian."""
    family, version, res_id = _NFGENMSG.unpack_from(buf, offset)
    return family, version, _BE16.unpack(struct.pack("=H", res_id))[0]


def build_request(msg_type, seq, family=0, flags=NLM_F_REQUEST, payload=b"", res_id=0,
                  subsys=NFNL_SUBSYS_CTNETLINK):
    """The bytes of one nfnetlink request (nlmsghdr + nfgenmsg + payload)."""
    payload = bytes(payload)
    length = _NLMSGHDR.size + _NFGENMSG.size + len(payload)
    header = _NLMSGHDR.pack(length, (subsys << 8) | msg_type, flags, seq, 0)
    nfgen = struct.pack("=BB", family, NFNETLINK_V0) + _BE16.pack(res_id)
    return header + nfgen + payload


def iter_nlmsgs(data):
    """Split one datagram into ``(msg_type, flags, seq, offset, length)`` (offset of the nlmsghdr)."""
    offset = 0
    total = len(data)
    while offset + _NLMSGHDR.size <= total:
        length, msg_type, flags, seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > total:
            raise NetlinkParseError("malformed netlink message at offset %d (length %d, %d bytes left)"
                                    % (offset, length, total - offset))
        yield msg_type, flags, seq, offset, length
        offset += _align4(length)
    if offset < total and any(bytearray(data[offset:total])):
        raise NetlinkParseError("%d trailing bytes after the last netlink message" % (total - offset))


def parse_error_payload(data, offset, length):
    """The positive errno of an NLMSG_ERROR message (0 means ACK)."""
    if length < _NLMSGHDR.size + _NLMSGERR.size:
        raise NetlinkParseError("truncated netlink error message")
    return -_NLMSGERR.unpack_from(data, offset + _NLMSGHDR.size)[0]


def parse_stats_cpu(buf, start, end):
    """Counter dict of one IPCTNL_MSG_CT_GET_STATS_CPU reply (attributes in buf[start:end])."""
    counters = dict.fromkeys(COUNTER_NAMES)
    for attr_type, pstart, pend in nla_iter(buf, start, end):
        name = STATS_CPU_ATTRS.get(attr_type)
        if name is not None:
            counters[name] = nla_uint(buf, pstart, pend)
    return counters


def parse_stats(buf, start, end):
    """{entries, max_entries} of one IPCTNL_MSG_CT_GET_STATS reply."""
    stats = {"entries": None, "max_entries": None}
    for attr_type, pstart, pend in nla_iter(buf, start, end):
        if attr_type == CTA_STATS_GLOBAL_ENTRIES:
            stats["entries"] = nla_uint(buf, pstart, pend)
        elif attr_type == CTA_STATS_GLOBAL_MAX_ENTRIES:
            stats["max_entries"] = nla_uint(buf, pstart, pend)
    return stats


def decode_replies(datagrams, seq=None, operation=None):
    """Pure core of CtnetlinkSocket.messages over already-received datagrams.

    Yields ``(msg_type, nfgen_family, res_id, buffer, attrs_start, attrs_end)``; stops at DONE or ACK; raises the
    NetlinkError subclass for an error reply. ``msg_type`` is the ctnetlink message without the subsystem.
    """
    for data in datagrams:
        for msg_type, flags, msg_seq, offset, length in iter_nlmsgs(data):
            if seq is not None and msg_seq != seq:
                continue
            if msg_type == NLMSG_ERROR:
                err = parse_error_payload(data, offset, length)
                if err:
                    raise error_for(err, operation)
                return
            if msg_type == NLMSG_DONE:
                if length >= _NLMSGHDR.size + _NLMSGERR.size:
                    err = parse_error_payload(data, offset, length)
                    if err:
                        raise error_for(err, operation)
                if flags & NLM_F_DUMP_INTR:
                    raise NetlinkError(_errno.EINTR, operation, "dump interrupted by a table change; retry")
                return
            if msg_type in (NLMSG_NOOP, NLMSG_OVERRUN):
                continue
            if length < _NLMSGHDR.size + _NFGENMSG.size:
                raise NetlinkParseError("netlink message of %d bytes has no nfgenmsg" % length, operation)
            family, _version, res_id = nfgen_unpack(data, offset + _NLMSGHDR.size)
            attrs_start = offset + _NLMSGHDR.size + _NFGENMSG.size
            yield msg_type & 0xFF, family, res_id, data, attrs_start, offset + length


class CtnetlinkSocket:
    """A NETLINK_NETFILTER socket speaking ctnetlink. Open it with ``with`` or ``CtnetlinkSocket.open()``."""

    RCVBUF = 1 << 20
    RECV_SIZE = 1 << 16

    def __init__(self, rcvbuf=None):
        self.sock = None
        # set to a list to keep every received datagram (used to record unit-test data)
        self.recorder = None
        self._seq = 0
        self._rcvbuf = rcvbuf or self.RCVBUF

    @classmethod
    def open(cls, rcvbuf=None):
        ct = cls(rcvbuf=rcvbuf)
        ct._connect()
        return ct

    def _connect(self):
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        except (OSError, AttributeError) as exc:
            err = getattr(exc, "errno", None) or _errno.EAFNOSUPPORT
            if err in _PERMISSION_ERRNOS:
                raise error_for(err, "socket")
            raise CtnetlinkUnavailableError(err, "socket", "cannot open a NETLINK_NETFILTER socket: %s" % exc)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf)
            sock.bind((0, 0))
        except OSError as exc:
            sock.close()
            raise error_for(exc.errno or _errno.EIO, "bind")
        self.sock = sock
        self._seq = int.from_bytes(os.urandom(2), "big") + 1

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self):
        if self.sock is None:
            self._connect()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False

    def send(self, msg_type, family=0, flags=NLM_F_REQUEST | NLM_F_ACK, payload=b"", res_id=0):
        """Send one ctnetlink request; returns its sequence number.

        ``messages(seq)`` ends at DONE or ACK, so a request read through it needs NLM_F_DUMP or NLM_F_ACK
        (the default asks for an ACK).
        """
        if self.sock is None:
            raise NetlinkError(_errno.EBADF, MSG_NAMES.get(msg_type, msg_type), "socket is not open")
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        data = build_request(msg_type, self._seq, family=family, flags=flags | NLM_F_REQUEST,
                             payload=payload, res_id=res_id)
        try:
            self.sock.sendto(data, (0, 0))
        except OSError as exc:
            raise error_for(exc.errno or _errno.EIO, MSG_NAMES.get(msg_type, msg_type))
        return self._seq

    def _datagrams(self, operation):
        while True:
            try:
                data = self.sock.recv(self.RECV_SIZE)
            except OSError as exc:
                if exc.errno == _errno.EINTR:
                    continue
                raise error_for(exc.errno or _errno.EIO, operation)
            if not data:
                raise NetlinkError(_errno.EPIPE, operation, "netlink socket closed")
            if self.recorder is not None:
                self.recorder.append(data)
            yield data

    def messages(self, seq, operation=None):
        """Data replies to request ``seq`` until DONE/ACK; NetlinkError on an error reply."""
        return decode_replies(self._datagrams(operation), seq=seq, operation=operation)

    def dump(self, msg_type, family=0, payload=b""):
        operation = MSG_NAMES.get(msg_type, str(msg_type))
        seq = self.send(msg_type, family=family, flags=NLM_F_REQUEST | NLM_F_DUMP, payload=payload)
        return self.messages(seq, operation=operation)

    def transact(self, msg_type, family=0, payload=b"", flags=NLM_F_REQUEST | NLM_F_ACK):
        """Send an acknowledged request; returns the list of data replies (often empty)."""
        operation = MSG_NAMES.get(msg_type, str(msg_type))
        seq = self.send(msg_type, family=family, flags=flags | NLM_F_ACK, payload=payload)
        return list(self.messages(seq, operation=operation))

    def get_stats_cpu(self):
        """Per-CPU counters: a list of dicts with ``cpu`` and the ten counter names."""
        result = []
        for _type, _family, res_id, buf, start, end in self.dump(IPCTNL_MSG_CT_GET_STATS_CPU):
            counters = parse_stats_cpu(buf, start, end)
            counters["cpu"] = res_id
            result.append(counters)
        return result

    def get_stats(self):
        """{entries: count in this netns, max_entries: the global nf_conntrack_max}."""
        replies = self.transact(IPCTNL_MSG_CT_GET_STATS)
        if not replies:
            raise NetlinkParseError("no reply to CT_GET_STATS", "CT_GET_STATS")
        _type, _family, _res, buf, start, end = replies[0]
        return parse_stats(buf, start, end)
