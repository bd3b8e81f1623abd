# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files on the managed node: read when present, write atomically with an explicit mode and owner.

Private to the collection. One writer for every module that persists something (conntrack_tune's
sysctl.d/modules-load.d/udev/modprobe.d files, iptables_baseline's rules, loader, unit and rollback state), so
they all get the same guarantees.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import tempfile


def read_or_none(path, mode="r"):
    """The file's content, or None when it is absent or cannot be read (optional evidence, not an error)."""
    try:
        with open(path, mode) as handle:
            return handle.read()
    except (IOError, OSError):
        return None


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
