# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Conntrack entries, part 1 of 5: the ctnetlink constants, name tables and errors the other parts share.

Private to the collection. Netlink framing constants come from ``netlink``; the entry attribute numbers
(enum ctattr_type and its nests) are declared here. ``entries`` re-exports everything.
"""

import errno as _errno
import struct

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import InputError, KernelError, NodeguardError, ParseError
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.netlink import IPCTNL_MSG_CT_NEW, NFNL_SUBSYS_CTNETLINK

AF_INET = 2
AF_INET6 = 10
FAMILY_NAMES = {AF_INET: "ipv4", AF_INET6: "ipv6"}
FAMILY_NUMBERS = {"ipv4": (AF_INET,), "ipv6": (AF_INET6,), "both": (AF_INET, AF_INET6)}

# what a dump sends: NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW (NLMSG_* and NLM_F_* come from netlink)
CT_NEW_MSG_TYPE = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW

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
                "reply_src", "reply_dst", "reply_sport", "reply_dport", "mark", "zone", "assured", "dnat", "snat")
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
