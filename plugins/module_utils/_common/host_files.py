# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files on the managed node: read when present, write atomically with an explicit mode and owner.

Private to the collection. One writer for every module that persists something (conntrack_tune's
sysctl.d/modules-load.d/udev/modprobe.d files, iptables_baseline's rules, loader, unit and rollback state), so
they all get the same guarantees.
"""

import errno
import os
import stat
import tempfile

_MISSING = (errno.ENOENT, errno.ENOTDIR)


def read_text(path, mode="r"):
    """The file's content; errors propagate."""
    with open(path, mode) as handle:
        return handle.read()


def read_or_none(path, mode="r"):
    """The file's content, or None when it is absent or cannot be read (optional evidence, not an error)."""
    try:
        return read_text(path, mode)
    except (IOError, OSError):
        return None


def read_if_exists(path):
    """The file's content, or None when it does not exist; any other error propagates (a file we manage)."""
    try:
        return read_text(path)
    except (IOError, OSError) as exc:
        if exc.errno in _MISSING:
            return None
        raise


def read_int(path):
    """The first integer in a /proc or /sys file, or None when absent, unreadable or not an integer."""
    text = read_or_none(path)
    try:
        return int(text.split()[0])
    except (AttributeError, ValueError, IndexError):
        return None


def file_mode(path):
    """Permission bits of ``path``, or None when it does not exist."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except (IOError, OSError):
        return None


def remove_if_exists(path):
    """Unlink ``path``; a missing file is fine, any other error propagates."""
    try:
        os.unlink(path)
    except (IOError, OSError) as exc:
        if exc.errno not in _MISSING:
            raise


def write_file_atomic(path, content, mode, owner_uid=0, group_gid=0):
    """Temp file in the same directory, explicit mode and owner (when root), fsync, rename over the target.

    A missing parent directory is created with mode 0755. The temp file is removed if anything fails.
    """
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            if os.geteuid() == 0:
                os.fchown(handle.fileno(), owner_uid, group_gid)
            os.fsync(handle.fileno())
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def unit_enable_links(unit_path):
    """The ``*.wants/<unit>`` links that enable a systemd unit file, next to it (what ``systemctl enable`` made)."""
    folder = os.path.dirname(unit_path)
    links = []
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            link = os.path.join(folder, name, os.path.basename(unit_path))
            if name.endswith(".wants") and os.path.lexists(link):
                links.append(link)
    return links
