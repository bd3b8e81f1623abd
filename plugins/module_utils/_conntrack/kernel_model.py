# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the kernel does with a table size: its own default, and how its hash chains drop inserts.

Private to the collection. Pure: numbers in, numbers out. The rules come from the kernel source
(net/netfilter/nf_conntrack_core.c), summarised with the commits in the project's kernel reference:

* Default size (nf_conntrack_init_start), 64-bit, RAM = totalram (MemTotal): buckets = RAM / 16384 / 8, then
  5.15 and later: 262,144 above 4 GiB, 65,536 above 1 GiB, at least 1,024; max = buckets.
  before 5.15: 65,536 above 4 GiB, 16,384 above 1 GiB, at least 32; max = 4 x buckets.
  The table is allocated in whole pages: buckets round up to a multiple of 512 (4 KiB pages).
* Every entry is hashed twice (original and reply tuple): a full table holds 2 x max / buckets nodes per bucket.
* Since 5.15 an insert walks both chains and fails (chaintoolong, insert_failed, the packet is dropped) when a chain
  is longer than a limit drawn at random for each insert: 8-31 on 5.15-6.2, 50-79 since 6.3 (commit c77737b736ce,
  also in the stable trees).
"""

import math
import re

GIB = 1024 * 1024 * 1024
# buckets are allocated in whole pages: 4096-byte page / 8-byte bucket (the one copy of this figure)
BUCKET_GRANULARITY = 512
PAGE_BUCKETS = BUCKET_GRANULARITY
# the ten conntrack statistics counters the collection reports, in the order `conntrack -S` prints them
# (netlink, /proc/net/stat/nf_conntrack and the fleet audit all use this tuple)
COUNTER_NAMES = ("found", "invalid", "insert", "insert_failed", "drop", "early_drop", "error",
                 "search_restart", "clash_resolve", "chaintoolong")
# per-insert random chain limit (inclusive range) by kernel version
CHAIN_LIMITS = (
    ((6, 3), (50, 79)),
    ((5, 15), (8, 31)),
)


def parse_release(release):
    """'6.1.0-18-amd64' -> (6, 1); None when it does not start with a version."""
    if not isinstance(release, str):
        return None
    match = re.match(r"^\s*(\d+)\.(\d+)", release)
    if not match:
        return None
    return int(match.group(1)), int(match.group(2))


def _round_pages(buckets):
    return -(-buckets // PAGE_BUCKETS) * PAGE_BUCKETS


def default_size(memory_bytes, version):
    """The kernel's own {"max", "buckets"} for a host of ``memory_bytes`` on kernel ``version`` ((major, minor)).

    ``version`` None (unknown): the higher of the old and the new rule for each value, so a floor built on it is
    never below what the host's kernel would pick itself.
    """
    if version is None:
        new = default_size(memory_bytes, (5, 15))
        old = default_size(memory_bytes, (5, 14))
        return {"max": max(new["max"], old["max"]), "buckets": max(new["buckets"], old["buckets"])}
    buckets = memory_bytes // 16384 // 8
    if version >= (5, 15):
        if memory_bytes > 4 * GIB:
            buckets = 262144
        elif memory_bytes > GIB:
            buckets = 65536
        buckets = max(buckets, 1024)
        factor = 1
    else:
        if memory_bytes > 4 * GIB:
            buckets = 65536
        elif memory_bytes > GIB:
            buckets = 16384
        buckets = max(buckets, 32)
        factor = 4
    buckets = _round_pages(buckets)
    return {"max": factor * buckets, "buckets": buckets}


def chain_limit(version):
    """(low, high) of the random chain limit on ``version``; None before 5.15 (no limit: long chains cost CPU).

    ``version`` None (unknown): the strictest limit (5.15-6.2)."""
    if version is None:
        return CHAIN_LIMITS[1][1]
    for since, limits in CHAIN_LIMITS:
        if version >= since:
            return limits
    return None


def _poisson_tail(mean, k):
    """P(X >= k) for X ~ Poisson(mean), without cancellation for small tails."""
    if k <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    log_term = -mean + k * math.log(mean) - math.lgamma(k + 1)
    total = 0.0
    i = k
    while True:
        term = math.exp(log_term)
        total += term
        if term < 1e-300 or (i > mean and term < total * 1e-17):
            break
        i += 1
        log_term += math.log(mean) - math.log(i)
    return min(1.0, total)


def nodes_per_bucket(max_entries, buckets):
    """Average chain length at a full table: each entry is in two chains."""
    return 2.0 * max_entries / buckets


def insert_failure(max_entries, buckets, limits):
    """Expected share of inserts that fail at a full table of ``max_entries`` in ``buckets`` under ``limits``.

    The chains an insert walks hold Poisson(2 x max / buckets) nodes (a uniform hash); the insert fails when either
    of its two chains is longer than the limit drawn for it (counted conservatively: more than ``limit`` nodes).
    """
    if limits is None or not max_entries or buckets <= 0:
        return 0.0
    mean = nodes_per_bucket(max_entries, buckets)
    low, high = limits
    per_chain = sum(_poisson_tail(mean, limit + 1) for limit in range(low, high + 1)) / float(high - low + 1)
    return 1.0 - (1.0 - per_chain) ** 2


def describe_limits(limits):
    if limits is None:
        return "no chain limit (kernel before 5.15)"
    return "random chain limit %d-%d" % limits
