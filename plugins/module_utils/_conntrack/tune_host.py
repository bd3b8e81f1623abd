# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host I/O for conntrack_tune: read the environment, write /proc/sys, read and remove managed files.

Private to the collection. Thin on purpose: every decision is made by ``_tune.plan``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import stat

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import HostError
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.knobs import HASHSIZE_PATH, proc_path

SYSTEMD_SYSCTL_CANDIDATES = ("/usr/lib/systemd/systemd-sysctl", "/lib/systemd/systemd-sysctl")
SYSCTL_CANDIDATES = ("/usr/sbin/sysctl", "/sbin/sysctl", "/usr/bin/sysctl")
READONLY_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)


class ReadOnlyKnob(HostError):
    """The kernel refused a write for permission reasons (read-only here)."""


def read_int(path):
    try:
        with open(path) as handle:
            text = handle.read().strip()
    except (IOError, OSError):
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def _first_existing(candidates):
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def conntrack_presence(release):
    """builtin / module (loaded) / loadable (on disk, not loaded) / absent."""
    if os.path.isdir("/sys/module/nf_conntrack"):
        # a loaded module has initstate; a built-in one only shows its parameters
        if os.path.exists("/sys/module/nf_conntrack/initstate"):
            return "module"
        return "builtin"
    base = os.path.join("/lib/modules", release)
    for name, kind in (("modules.builtin", "builtin"), ("modules.dep", "loadable")):
        try:
            with open(os.path.join(base, name)) as handle:
                for line in handle:
                    if "/nf_conntrack.ko" in line.split(":", 1)[0]:
                        return kind
        except (IOError, OSError):
            continue
    return "absent"


def read_environment(shorts):
    release = os.uname()[2]
    live = {}
    writable = {}
    for short in shorts:
        path = proc_path(short)
        live[short] = read_int(path)
        writable[short] = live[short] is not None and os.access(path, os.W_OK)
    init_netns = None
    max_path = proc_path("max")
    if os.path.exists(max_path):
        # the kernel makes nf_conntrack_max 0444 in every netns but the initial one
        init_netns = bool(os.stat(max_path).st_mode & stat.S_IWUSR)
    hashsize_writable = init_netns is True and os.path.exists(HASHSIZE_PATH) and os.access(HASHSIZE_PATH, os.W_OK)
    if "buckets" in shorts and live.get("buckets") is not None and not writable["buckets"] and hashsize_writable:
        # kernels before the buckets sysctl became writable: resize through the module parameter
        writable["buckets"] = True
    return {
        "kernel_release": release,
        "conntrack": conntrack_presence(release),
        "init_netns": init_netns,
        "live": live,
        "writable": writable,
        "hashsize": read_int(HASHSIZE_PATH),
        "hashsize_writable": hashsize_writable,
        "systemd_sysctl": _first_existing(SYSTEMD_SYSCTL_CANDIDATES),
        "sysctl_bin": _first_existing(SYSCTL_CANDIDATES),
    }


def write_knob(short, value):
    """Write one knob; buckets falls back to the hashsize parameter when its sysctl is read-only."""
    path = proc_path(short)
    if short == "buckets" and not os.access(path, os.W_OK) and os.access(HASHSIZE_PATH, os.W_OK):
        path = HASHSIZE_PATH
    try:
        with open(path, "w") as handle:
            handle.write("%d" % value)
    except (IOError, OSError) as exc:
        if exc.errno in READONLY_ERRNOS:
            raise ReadOnlyKnob("%s: %s" % (path, exc.strerror))
        raise


def read_file(path):
    try:
        with open(path) as handle:
            return handle.read()
    except (IOError, OSError) as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise


def file_mode(path):
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except (IOError, OSError):
        return None


def remove_file(path):
    try:
        os.unlink(path)
    except (IOError, OSError) as exc:
        if exc.errno != errno.ENOENT:
            raise
