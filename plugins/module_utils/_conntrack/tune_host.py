# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host layer of conntrack_tune: read the environment (through the host probe), load the module, write the
knobs and read them back, write or remove the managed files.

Private to the collection. Every decision is made by the pure ``_conntrack/tune`` planner; ``run()`` is the one
call the module makes. It uses a narrow slice of the module object: ``check_mode``, ``get_bin_path``,
``run_command``, ``warn`` and ``_diff``.
"""

import errno
import os
from typing import Any, Dict

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common import host_files
from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import HostError
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import knobs as _knobs
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import procfs as _procfs
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import tune as _tune
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


def read_environment(shorts) -> _environment.HostEnvironment:
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


def _failure(message, result_plan, **details):
    details["knobs"] = dict((k["name"], _tune.outcome(k)) for k in result_plan["knobs"])
    return HostError(message, **details)


def _load_module(module, name):
    modprobe = module.get_bin_path("modprobe", required=True, opt_dirs=["/sbin", "/usr/sbin"])
    rc, out, err = module.run_command([modprobe, name])
    if rc != 0:
        raise HostError("could not load %s: %s" % (name, (err or out).strip()), rc=rc)


def _read_files(paths):
    before, modes = {}, {}
    for role, path in paths.items():
        try:
            before[role] = host_files.read_if_exists(path)
        except (IOError, OSError) as exc:
            raise HostError("cannot read %s: %s" % (path, exc), field=_tune.PATH_OPTIONS[role])
        modes[role] = host_files.file_mode(path)
    return before, modes


def apply_knobs(result_plan, policy):
    """Write every knob the plan changes and read it back. A write the kernel refuses for permission reasons
    follows the readonly policy (like a knob the plan found read-only); returns the warnings."""
    warnings, errors = [], []
    for item in result_plan["knobs"]:
        if item["status"] != _tune.STATUS_CHANGED:
            continue
        try:
            write_knob(item["name"], item["write"])
        except ReadOnlyKnob as exc:
            item["status"] = _tune.STATUS_SKIPPED
            item["after"] = item["before"]
            item["reason"] = "not applicable: the kernel refused the write (%s)" % exc
            _tune.readonly_policy(policy, "%s: %s" % (item["name"], item["reason"]), warnings, errors)
            if errors:
                raise _failure(errors[0], result_plan)
            continue
        except (IOError, OSError) as exc:
            raise _failure("writing %s=%d failed: %s" % (item["key"], item["write"], exc), result_plan)
        read = host_files.read_int(_knobs.proc_path(item["name"]))
        if not _tune.value_taken(item["name"], item["write"], read):
            raise _failure("the kernel did not take %s=%d (reads back %s)" % (item["key"], item["write"], read),
                           result_plan)
        item["after"] = read
    return warnings


def apply_files(result_plan, mode):
    for role in _tune.FILE_ROLES:
        item = result_plan["files"][role]
        try:
            if item["action"] == "write":
                host_files.write_file_atomic(item["path"], item["after"], mode)
            elif item["action"] == "remove":
                host_files.remove_if_exists(item["path"])
        except (IOError, OSError) as exc:
            raise _failure("cannot %s %s: %s" % (item["action"], item["path"], exc), result_plan,
                           field=_tune.PATH_OPTIONS[role])


def run(module, desired: Dict[str, int], policy: _tune.TunePolicy, paths: Dict[str, str]) -> Dict[str, Any]:
    """Plan and (unless check mode) apply; returns conntrack_tune's result. Raises NodeguardError (with the
    per-knob outcome in ``details["knobs"]`` once a plan exists)."""
    env = read_environment(list(desired))
    module_name = _tune.module_name(env["kernel_release"])
    loaded_module = (policy["state"] == "present" and policy["apply_live"] and policy["load_module"]
                     and bool(desired) and env["conntrack"] == "loadable")
    blocked = (env.get("module_config") or {}).get("blocked")
    if loaded_module and blocked:
        # refused before anything is written, in check mode too: the load cannot succeed
        raise HostError("could not load %s: the load is blocked (%s)" % (module_name, blocked))
    if loaded_module and not module.check_mode:
        _load_module(module, module_name)
        env = read_environment(list(desired))
    files_before, modes_before = _read_files(paths)
    result_plan = _tune.plan(env, desired, policy, files_before, paths, modes_before)
    if result_plan["errors"]:
        raise _failure("readonly_policy=fail: %s" % "; ".join(result_plan["errors"]), result_plan)
    warnings = list(result_plan["warnings"])
    if not module.check_mode:
        warnings.extend(apply_knobs(result_plan, policy))
        apply_files(result_plan, policy["mode"])
    for warning in warnings:
        module.warn(warning)
    result = dict(
        changed=result_plan["changed"] or loaded_module,
        knobs=dict((k["name"], _tune.outcome(k)) for k in result_plan["knobs"]),
        skipped_knobs=sorted(k["name"] for k in result_plan["knobs"] if k["status"] == _tune.STATUS_SKIPPED),
        files=dict((role, {"path": f["path"], "action": f["action"], "changed": f["changed"]})
                   for role, f in result_plan["files"].items()),
        environment=dict(
            conntrack=env["conntrack"],
            init_netns=env["init_netns"],
            kernel_release=env["kernel_release"],
            module_name=module_name,
            module_loaded_now=loaded_module,
            hashsize_before=env["hashsize"],
            hashsize_after=env["hashsize"] if module.check_mode else host_files.read_int(_knobs.HASHSIZE_PATH),
        ),
    )
    if module._diff:
        result["diff"] = _tune.diff(result_plan)
    return result
