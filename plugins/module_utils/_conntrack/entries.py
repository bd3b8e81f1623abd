# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Conntrack entries: decode ctnetlink dump messages, filter, group and describe NAT (private to the collection).

Pure: bytes in, data out; no host I/O. ``dump`` feeds it what the kernel sends. This file is the public face of
five parts split at their seams; import from here:

* ``entry_types``: attribute numbers, name tables, errors (``CtError`` and its subclasses);
* ``entry_filter``: ``EntryFilter`` (options -> userspace match and kernel CTA_FILTER), ``validate_query``;
* ``entry_decode``: ``decode_entry`` and the per-attribute decoders (the dict a module returns);
* ``entry_scan``: ``EntryScan``, the streaming hot loop;
* ``entry_layout``: the scan's layout cache and ``delete_key``.
"""

from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.netlink import NLM_F_DUMP_INTR, NLMSG_DONE, NLMSG_ERROR  # noqa: F401
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.entry_types import (  # noqa: F401 - re-exported
    ADDRESS_FIELDS,
    AF_INET,
    AF_INET6,
    CT_NEW_MSG_TYPE,
    CTA_FILTER,
    CTA_FILTER_ORIG_FLAGS,
    CTA_FILTER_REPLY_FLAGS,
    CTA_ID,
    CTA_IP_V4_DST,
    CTA_IP_V4_SRC,
    CTA_IP_V6_DST,
    CTA_IP_V6_SRC,
    CTA_MARK,
    CTA_MARK_MASK,
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
    CTA_STATUS_MASK,
    CTA_TIMEOUT,
    CTA_TUPLE_IP,
    CTA_TUPLE_ORIG,
    CTA_TUPLE_PROTO,
    CTA_TUPLE_REPLY,
    CTA_TUPLE_ZONE,
    CTA_USE,
    CTA_ZONE,
    CtDecodeError,
    CtError,
    CtFilterError,
    CtKernelError,
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
    TCP_STATE_NUMBERS,
    TCP_STATES,
    UNREPLIED,
)
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.entry_filter import (  # noqa: F401 - re-exported
    EntryFilter,
    Network,
    parse_network,
    validate_query,
)
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.entry_decode import (  # noqa: F401 - re-exported
    address_text,
    decode_entry,
    nat_view,
    status_flags,
    _tuple,
)
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.entry_scan import (  # noqa: F401 - re-exported
    EntryScan,
)
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.entry_layout import (  # noqa: F401 - re-exported
    delete_key,
)
