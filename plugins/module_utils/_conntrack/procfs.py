# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Conntrack state from /proc and /sys (private to the collection).

Pure parsers take text and return data (``parse_stat_table``, ``parse_sysctl_int``); the adapters below them
(``read_stat_table``, ``read_knobs``, ``read_hashsize``) only open files. Parsers raise ProcfsParseError, never
anything else, so a caller can turn odd kernel output into a clear message.
"""

import errno
import os
import re

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import ParseError
from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.host_files import read_text
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import knobs as _knobs
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.kernel_model import COUNTER_NAMES

STAT_PATH = "/proc/net/stat/nf_conntrack"

# /proc column name -> counter name, where they differ
PROC_COLUMN_ALIASES = {
    "clashres": "clash_resolve",
    "chainlength": "chaintoolong",
    "icmp_error": "error",
}
_COLUMN_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_HEX_RE = re.compile(r"^[0-9a-fA-F]{1,16}$")
_INT_RE = re.compile(r"^-?[0-9]{1,20}$")


class ProcfsParseError(ParseError):
    """Text from /proc or /sys that is not in the format the kernel writes."""


def parse_stat_table(text):
    """Parse ``/proc/net/stat/nf_conntrack`` by header name.

    Returns ``{"entries": int or None, "per_cpu": [{counter: int or None}], "columns": [header names]}``.
    ``per_cpu`` rows carry the ten collection counter names (renamed from clashres, chainlength, icmp_error);
    a counter this kernel does not have is None. ``entries`` is the netns total the kernel repeats on every
    line (taken once, never summed). Any other column (searched, delete_list, new, ...) is ignored.
    """
    if not isinstance(text, str):
        raise ProcfsParseError("conntrack statistics must be text, got %s" % type(text).__name__)
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ProcfsParseError("%s is empty" % STAT_PATH)
    columns = lines[0].split()
    if "entries" not in columns or not all(_is_column_name(name) for name in columns):
        raise ProcfsParseError("%s: unexpected header %r" % (STAT_PATH, lines[0][:200]))
    if len(set(columns)) != len(columns):
        raise ProcfsParseError("%s: duplicate column in header %r" % (STAT_PATH, lines[0][:200]))
    if len(lines) < 2:
        raise ProcfsParseError("%s: header without any CPU line" % STAT_PATH)
    names = [PROC_COLUMN_ALIASES.get(name, name) for name in columns]
    entries = None
    per_cpu = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if len(fields) != len(columns):
            raise ProcfsParseError("%s line %d: %d fields for %d columns"
                                   % (STAT_PATH, number, len(fields), len(columns)))
        values = {}
        for name, field in zip(names, fields):
            values[name] = _hex(field, number)
        if entries is None:
            entries = values["entries"]
        per_cpu.append(dict((name, values.get(name)) for name in COUNTER_NAMES))
    return {"entries": entries, "per_cpu": per_cpu, "columns": columns}


def _is_column_name(name):
    return bool(_COLUMN_RE.match(name))


def _hex(field, number):
    if not _HEX_RE.match(field):
        raise ProcfsParseError("%s line %d: %r is not a hexadecimal counter" % (STAT_PATH, number, field[:40]))
    return int(field, 16)


def sum_counters(per_cpu):
    """Sum per-CPU counter dicts name by name; a counter missing on every CPU stays None."""
    totals = {}
    for name in COUNTER_NAMES:
        values = [row.get(name) for row in per_cpu if row.get(name) is not None]
        totals[name] = sum(values) if values else None
    return totals


def parse_sysctl_int(text, name="value"):
    """One integer sysctl/sysfs value (``"262144\\n"``)."""
    if not isinstance(text, str):
        raise ProcfsParseError("%s must be text, got %s" % (name, type(text).__name__))
    stripped = text.strip()
    if not _INT_RE.match(stripped):
        raise ProcfsParseError("%s: %r is not an integer" % (name, stripped[:40]))
    return int(stripped)


# ---- adapters: the only functions here that touch the host ----

def read_stat_table(path=None):
    """Parsed /proc/net/stat/nf_conntrack, or None when this kernel has no such file."""
    path = path or STAT_PATH
    try:
        text = read_text(path)
    except (IOError, OSError) as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise
    return parse_stat_table(text)


def present_knobs(proc_dir=None):
    """Short names of the catalogue knobs that exist on this host (in this netns)."""
    proc_dir = proc_dir or _knobs.PROC_SYS_DIR
    try:
        names = set(os.listdir(proc_dir))
    except OSError:
        return []
    return sorted(short for short in _knobs.KNOBS if "nf_conntrack_" + short in names)


def read_knobs(shorts, proc_dir=None):
    """{short: int} for each knob that can be read; unreadable knobs are left out."""
    proc_dir = proc_dir or _knobs.PROC_SYS_DIR
    values = {}
    for short in shorts:
        path = os.path.join(proc_dir, "nf_conntrack_" + short)
        try:
            values[short] = parse_sysctl_int(read_text(path), _knobs.sysctl_key(short))
        except (IOError, OSError):
            continue
    return values


def read_hashsize(path=None):
    """The nf_conntrack ``hashsize`` module parameter, or None when absent or unreadable (mode 0600)."""
    path = path or _knobs.HASHSIZE_PATH
    try:
        return parse_sysctl_int(read_text(path), "hashsize")
    except (IOError, OSError):
        return None
