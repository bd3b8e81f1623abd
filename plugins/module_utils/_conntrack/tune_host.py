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

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import HostError
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import knobs as _knobs
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import procfs as _procfs
from ansible_collections.nodeguard.conntrack.plugins.module_utils._host import environment as _environment

SYSTEMD_SYSCTL_CANDIDATES = ("/usr/lib/systemd/systemd-sysctl", "/lib/systemd/systemd-sysctl")
SYSCTL_CANDIDATES = ("/usr/sbin/sysctl", "/sbin/sysctl", "/usr/bin/sysctl")
READONLY_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)


class ReadOnlyKnob(HostError):
    """The kernel refused a write for permission reasons (read-only here)."""


def _first_existing(candidates):
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def read_environment(shorts):
    """The host probe's answer (``_host.environment.probe``) plus what conntrack_tune needs beside it.

    ``writable["buckets"]`` is also True where the buckets sysctl is read-only but the hashsize parameter can be
    written (kernels before buckets became writable): ``write_knob`` resizes through the parameter there.
    """
    env = _environment.probe(_procfs.present_knobs(), knobs=list(shorts))
    writable = env["writable"]
    if "buckets" in writable and env["live"]["buckets"] is not None and not writable["buckets"] \
            and env["hashsize_writable"]:
        writable["buckets"] = True
    env["page_size"] = os.sysconf("SC_PAGE_SIZE")
    env["sysctl_files"] = read_sysctl_files()
    env["systemd_sysctl"] = _first_existing(SYSTEMD_SYSCTL_CANDIDATES)
    env["sysctl_bin"] = _first_existing(SYSCTL_CANDIDATES)
    return env


def read_sysctl_files(dirs=None, extra=("/etc/sysctl.conf",)):
    """{path: content} of every *.conf in the sysctl.d directories and /etc/sysctl.conf (unreadable ones skipped)."""
    from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.tune import STANDARD_SYSCTL_DIRS
    files = {}
    for directory in dirs or STANDARD_SYSCTL_DIRS:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in names:
            if name.endswith(".conf"):
                path = os.path.join(directory, name)
                try:
                    with open(path) as handle:
                        files[path] = handle.read(1024 * 1024)
                except (IOError, OSError, UnicodeDecodeError):
                    continue
    for path in extra:
        try:
            with open(path) as handle:
                files[path] = handle.read(1024 * 1024)
        except (IOError, OSError, UnicodeDecodeError):
            continue
    return files


def write_knob(short, value):
    """Write one knob; buckets falls back to the hashsize parameter when its sysctl is read-only."""
    path = _knobs.proc_path(short)
    if short == "buckets" and not os.access(path, os.W_OK) and os.access(_knobs.HASHSIZE_PATH, os.W_OK):
        path = _knobs.HASHSIZE_PATH
    try:
        with open(path, "w") as handle:
            handle.write("%d" % value)
    except (IOError, OSError) as exc:
        if exc.errno in READONLY_ERRNOS:
            raise ReadOnlyKnob("%s: %s" % (path, exc.strerror))
        raise
