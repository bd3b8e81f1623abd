# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Recent conntrack kernel messages ("table full", "expectation table full") from /dev/kmsg (private).

``parse_kmsg_record`` and ``count_events`` are pure; ``read_kmsg`` is the adapter: it opens /dev/kmsg
non-blocking, reads at most ``max_records`` records / ``max_bytes`` bytes from the oldest one still in the
ring buffer and stops at the end of the buffer (EAGAIN), so it never waits for new messages.
"""

import errno
import os
import re
import time

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import ParseError

KMSG_PATH = "/dev/kmsg"
# the kernel truncates a record at about 1 KiB; a read buffer of 8 KiB always holds one record
_READ_SIZE = 8192

_TABLE_FULL_RE = re.compile(r"nf_conntrack: table full(?: in netns (\d+))?, dropping packet")
_EXPECT_FULL_RE = re.compile(r"nf_conntrack: expectation table full")


class KmsgParseError(ParseError):
    """A /dev/kmsg record that does not have the ``prio,seq,usec,flags;message`` shape."""


def parse_kmsg_record(record):
    """``(seq, usec since boot, message)`` of one /dev/kmsg record (bytes or text)."""
    if isinstance(record, bytes):
        record = record.decode("utf-8", "replace")
    head, sep, message = record.partition(";")
    fields = head.split(",")
    if not sep or len(fields) < 3:
        raise KmsgParseError("not a /dev/kmsg record: %r" % record[:80])
    try:
        seq = int(fields[1])
        usec = int(fields[2])
    except ValueError:
        raise KmsgParseError("not a /dev/kmsg record: %r" % record[:80])
    # continuation lines (" KEY=value") follow the first newline
    return seq, usec, message.split("\n", 1)[0]


def count_events(records, now_usec, window_seconds, own_netns_inode=None, init_netns=None):
    """Count conntrack messages newer than ``now_usec - window_seconds``.

    ``records`` are ``(seq, usec, message)``. The kernel rate-limits these messages, so the counts are lower
    bounds of the episodes, not packet counts. A "table full" line names the netns inode on current kernels;
    a line without one comes from the init netns (or from any netns on older kernels).
    """
    since = now_usec - int(window_seconds * 1000000)
    result = {
        "table_full": 0,
        "table_full_this_netns": 0,
        "table_full_by_netns": {},
        "expectation_table_full": 0,
        "last_table_full_seconds_ago": None,
        "last_expectation_table_full_seconds_ago": None,
    }
    for _seq, usec, message in records:
        if usec < since:
            continue
        match = _TABLE_FULL_RE.search(message)
        if match:
            result["table_full"] += 1
            inode = match.group(1)
            key = inode if inode else "init"
            result["table_full_by_netns"][key] = result["table_full_by_netns"].get(key, 0) + 1
            if (inode and own_netns_inode is not None and int(inode) == own_netns_inode) or \
                    (not inode and init_netns):
                result["table_full_this_netns"] += 1
            result["last_table_full_seconds_ago"] = _ago(now_usec, usec)
        elif _EXPECT_FULL_RE.search(message):
            result["expectation_table_full"] += 1
            result["last_expectation_table_full_seconds_ago"] = _ago(now_usec, usec)
    return result


def _ago(now_usec, usec):
    return round(max(0, now_usec - usec) / 1000000.0, 3)


def monotonic_usec():
    """Now, on the clock /dev/kmsg timestamps use (monotonic since boot, without suspend)."""
    return int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1000000)


def read_kmsg(max_records=50000, max_bytes=8 * 1024 * 1024, path=KMSG_PATH):
    """(records, truncated) from /dev/kmsg; raises OSError when it cannot be opened (EPERM, ENOENT...)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    records = []
    total = 0
    truncated = False
    try:
        while True:
            if len(records) >= max_records or total >= max_bytes:
                truncated = True
                break
            try:
                chunk = os.read(fd, _READ_SIZE)
            except OSError as exc:
                if exc.errno == errno.EAGAIN:
                    break
                if exc.errno == errno.EPIPE:
                    # records were overwritten while reading: the next read continues with the oldest left
                    continue
                if exc.errno == errno.EINVAL:
                    break
                raise
            if not chunk:
                break
            total += len(chunk)
            try:
                records.append(parse_kmsg_record(chunk))
            except KmsgParseError:
                continue
    finally:
        os.close(fd)
    return records, truncated
