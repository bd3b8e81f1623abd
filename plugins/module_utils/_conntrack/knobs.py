# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Catalogue of the conntrack knobs this collection reads and writes.

Private to the collection. Pure data and name resolution: no host I/O here.

A knob has a short name (``max``, ``tcp_timeout_established``), a sysctl key
(``net.netfilter.nf_conntrack_max``) and a /proc path. ``scope`` says where the kernel lets it be
written: ``host`` knobs are one global value writable only from the init network namespace,
``netns`` knobs are per network namespace (writable in any netns with CAP_NET_ADMIN), ``readonly``
knobs are never writable. ``hashsize`` is the nf_conntrack module parameter, not a sysctl.
"""

import re

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import InputError

SYSCTL_PREFIX = "net.netfilter.nf_conntrack_"
PROC_SYS_DIR = "/proc/sys/net/netfilter"
HASHSIZE_PATH = "/sys/module/nf_conntrack/parameters/hashsize"

SCOPE_HOST = "host"
SCOPE_NETNS = "netns"
SCOPE_READONLY = "readonly"

# short name -> (scope, kind); kind "timeout" values are seconds, "bool" 0/1, "int" plain integers.
KNOBS = {
    "max": (SCOPE_HOST, "int"),
    "buckets": (SCOPE_HOST, "int"),
    "expect_max": (SCOPE_HOST, "int"),
    "count": (SCOPE_READONLY, "int"),
    "tcp_timeout_syn_sent": (SCOPE_NETNS, "timeout"),
    "tcp_timeout_syn_recv": (SCOPE_NETNS, "timeout"),
    "tcp_timeout_established": (SCOPE_NETNS, "timeout"),
    "tcp_timeout_fin_wait": (SCOPE_NETNS, "timeout"),
    "tcp_timeout_close_wait": (SCOPE_NETNS, "timeout"),
    "tcp_timeout_last_ack": (SCOPE_NETNS, "timeout"),
    "tcp_timeout_time_wait": (SCOPE_NETNS, "timeout"),
    "tcp_timeout_close": (SCOPE_NETNS, "timeout"),
    "tcp_timeout_max_retrans": (SCOPE_NETNS, "timeout"),
    "tcp_timeout_unacknowledged": (SCOPE_NETNS, "timeout"),
    "udp_timeout": (SCOPE_NETNS, "timeout"),
    "udp_timeout_stream": (SCOPE_NETNS, "timeout"),
    "icmp_timeout": (SCOPE_NETNS, "timeout"),
    "icmpv6_timeout": (SCOPE_NETNS, "timeout"),
    "generic_timeout": (SCOPE_NETNS, "timeout"),
    "sctp_timeout_closed": (SCOPE_NETNS, "timeout"),
    "sctp_timeout_cookie_wait": (SCOPE_NETNS, "timeout"),
    "sctp_timeout_cookie_echoed": (SCOPE_NETNS, "timeout"),
    "sctp_timeout_established": (SCOPE_NETNS, "timeout"),
    "sctp_timeout_shutdown_sent": (SCOPE_NETNS, "timeout"),
    "sctp_timeout_shutdown_recd": (SCOPE_NETNS, "timeout"),
    "sctp_timeout_shutdown_ack_sent": (SCOPE_NETNS, "timeout"),
    "sctp_timeout_heartbeat_sent": (SCOPE_NETNS, "timeout"),
    "gre_timeout": (SCOPE_NETNS, "timeout"),
    "gre_timeout_stream": (SCOPE_NETNS, "timeout"),
    "tcp_be_liberal": (SCOPE_NETNS, "bool"),
    "tcp_loose": (SCOPE_NETNS, "bool"),
    "tcp_ignore_invalid_rst": (SCOPE_NETNS, "bool"),
    "tcp_max_retrans": (SCOPE_NETNS, "int"),
    "acct": (SCOPE_NETNS, "bool"),
    "timestamp": (SCOPE_NETNS, "bool"),
    "checksum": (SCOPE_NETNS, "bool"),
    "log_invalid": (SCOPE_NETNS, "int"),
    "events": (SCOPE_NETNS, "int"),
}
# ``helper`` (automatic helper assignment) is deliberately not on the list: the kernel removed the knob in 6.0 and
# turning it on is the security anti-pattern that removal ended (assign helpers with explicit CT rules instead).

TIMEOUT_KNOBS = tuple(sorted(name for name, (_scope, kind) in KNOBS.items() if kind == "timeout"))
HOST_KNOBS = tuple(sorted(name for name, (scope, _kind) in KNOBS.items() if scope == SCOPE_HOST))
# kernel defaults measured on 6.x (see docs); used for "kernel default" profiles and reports
KERNEL_DEFAULT_TIMEOUTS = {
    "tcp_timeout_syn_sent": 120,
    "tcp_timeout_syn_recv": 60,
    "tcp_timeout_established": 432000,
    "tcp_timeout_fin_wait": 120,
    "tcp_timeout_close_wait": 60,
    "tcp_timeout_last_ack": 30,
    "tcp_timeout_time_wait": 120,
    "tcp_timeout_close": 10,
    "tcp_timeout_max_retrans": 300,
    "tcp_timeout_unacknowledged": 300,
    "udp_timeout": 30,
    "udp_timeout_stream": 120,
    "icmp_timeout": 30,
    "icmpv6_timeout": 30,
    "generic_timeout": 600,
}

# The kernel stores the limits as C ints (proc_dointvec): a larger write is EINVAL.
INT_MAX = 2 ** 31 - 1
# Timeouts are seconds the kernel converts to jiffies (proc_dointvec_jiffies) and refuses above INT_MAX / HZ:
# 2,147,483 s (about 24.8 days) at HZ=1000, the highest HZ a distribution kernel uses; the bound for every HZ.
MAX_TIMEOUT_SECONDS = INT_MAX // 1000
# nf_ct_alloc_hashtable refuses more than INT_MAX / sizeof(struct hlist_nulls_head) buckets
MAX_BUCKETS = (INT_MAX // 8) // 512 * 512
_INT_RANGES = {
    "max": (0, INT_MAX),
    "buckets": (1, MAX_BUCKETS),
    "expect_max": (1, INT_MAX),
    "tcp_max_retrans": (0, 255),
    "log_invalid": (0, 255),
    "events": (0, 2),
}


def value_range(short):
    """(minimum, maximum) the kernel accepts for a knob (timeouts: seconds, at least 1)."""
    kind = KNOBS[short][1]
    if kind == "timeout":
        return 1, MAX_TIMEOUT_SECONDS
    if kind == "bool":
        return 0, 1
    return _INT_RANGES.get(short, (0, INT_MAX))


def check_value(short, value):
    """None when the kernel accepts ``value`` for ``short``, else why not (for an error naming the field)."""
    low, high = value_range(short)
    if low <= value <= high:
        return None
    kind = KNOBS[short][1]
    if kind == "timeout" and value > high:
        return ("must be <= %d s (the kernel refuses timeouts above INT_MAX / HZ: %d s at HZ=1000), got %d"
                % (high, high, value))
    if kind == "timeout":
        return "must be >= 1 s (a timeout of 0 would expire entries at once), got %d" % value
    return "must be between %d and %d, got %d" % (low, high, value)


_SHORT_RE = re.compile(r"^[a-z0-9_]+$")


class UnknownKnobError(InputError):
    """A knob name that is not on the allow-list (or tries to escape it); the caller names the field."""

    def __init__(self, message):
        super(UnknownKnobError, self).__init__(None, message)


def short_name(name):
    """Resolve a short name, a sysctl key or a /proc path to the short name on the allow-list.

    Accepts ``max``, ``nf_conntrack_max``, ``net.netfilter.nf_conntrack_max`` and
    ``net/netfilter/nf_conntrack_max``. Anything else (other prefixes, ``..``, unknown names)
    raises UnknownKnobError naming the value.
    """
    if not isinstance(name, str):
        raise UnknownKnobError("knob name must be a string, got %r" % (name,))
    candidate = name.strip()
    for prefix in (SYSCTL_PREFIX, SYSCTL_PREFIX.replace(".", "/"), "nf_conntrack_"):
        if candidate.startswith(prefix):
            candidate = candidate[len(prefix):]
            break
    if not _SHORT_RE.match(candidate) or candidate not in KNOBS:
        raise UnknownKnobError("unknown conntrack knob %r (allowed: %s)" % (name, ", ".join(sorted(KNOBS))))
    return candidate


def sysctl_key(short):
    return SYSCTL_PREFIX + short


def proc_path(short):
    return PROC_SYS_DIR + "/nf_conntrack_" + short


def scope(short):
    return KNOBS[short][0]
