# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet audit's state on the controller: the previous audit's counters, one file per host.

Private to the collection; used by the ``conntrack_audit_state`` action plugin so the role reads every host's
previous record and writes every host's new one in one task each, on the controller, without a module run per
host. The files are ``<directory>/<host>.json`` (the record of ``_audit_eval.state_record``), directory mode 0700,
files mode 0600, each written atomically (temporary file in the same directory, then rename).
"""

import json
import os
import tempfile

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import InputError
from ansible_collections.nodeguard.conntrack.plugins.plugin_utils import _audit_eval

DIR_MODE = 0o700
FILE_MODE = 0o600


class StateError(InputError):
    """Bad input (a host name that cannot name a file, not a list of host results). ``field`` names it."""


def state_path(directory, host):
    """``<directory>/<host>.json``; a host name that would leave the directory is refused."""
    if not isinstance(host, str) or not host or host in (".", "..") or "/" in host or "\x00" in host:
        raise StateError("host", "%r cannot name a state file" % (host,))
    return os.path.join(directory, host + ".json")


def _directory(directory):
    if not isinstance(directory, str) or not directory:
        raise StateError("path", "must be a directory path, got %r" % (directory,))
    return directory


def read_states(directory, hosts):
    """(previous, unreadable): {host: record} for hosts with a readable record, {host: reason} for broken ones.

    A missing file is no record (the host's first audit). A file that is not a JSON object is reported in
    ``unreadable`` and treated as no record, so one damaged file makes that host a baseline, not a failure.
    """
    directory = _directory(directory)
    previous, unreadable = {}, {}
    for host in hosts:
        path = state_path(directory, host)
        try:
            with open(path) as handle:
                record = json.load(handle)
        except (IOError, OSError) as exc:
            if not os.path.exists(path):
                continue
            unreadable[host] = "cannot read %s: %s" % (path, exc)
            continue
        except ValueError as exc:
            unreadable[host] = "%s is not JSON: %s" % (path, exc)
            continue
        if not isinstance(record, dict):
            unreadable[host] = "%s does not hold a state record" % path
            continue
        previous[host] = record
    return previous, unreadable


def render_record(result):
    """The file content for one host result of conntrack_audit_evaluate."""
    if not isinstance(result, dict) or "host" not in result or "counters" not in result:
        raise StateError("write", "is not a list of host results of conntrack_audit_evaluate")
    return json.dumps(_audit_eval.state_record(result), indent=4, sort_keys=True) + "\n"


def _current(path):
    try:
        with open(path) as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def write_states(directory, results, check_mode=False):
    """Write one record per host result. Returns the paths whose content changes (all of them written unless
    ``check_mode``). Creates the directory (mode 0700) when missing."""
    directory = _directory(directory)
    if not isinstance(results, list):
        raise StateError("write", "must be a list of host results, got %r" % (results,))
    planned = [(state_path(directory, result.get("host") if isinstance(result, dict) else None), render_record(result))
               for result in results]
    changed = [path for path, content in planned if _current(path) != content]
    if check_mode or not changed:
        return changed
    if not os.path.isdir(directory):
        os.makedirs(directory, DIR_MODE)
        os.chmod(directory, DIR_MODE)  # the umask may have narrowed it further, never widened: set it exactly
    for path, content in planned:
        if path not in changed:
            continue
        handle, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(handle, "w") as out:
                out.write(content)
            os.chmod(tmp, FILE_MODE)
            os.rename(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return changed
