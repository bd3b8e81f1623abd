# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Planner for conntrack_tune: current state + desired knobs + policy -> per-knob actions and file contents.

Private to the collection. Pure: no host I/O. ``_tune_host`` reads the environment and applies a plan.
"""

import os
import re
from typing import Dict, List, Optional, Tuple, TypedDict

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import InputError
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.kernel_model import BUCKET_GRANULARITY, parse_release
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.knobs import (
    KNOBS,
    SCOPE_HOST,
    check_value,
    SCOPE_READONLY,
    UnknownKnobError,
    short_name,
    sysctl_key,
)

# the kernel may round buckets up by more than 512 on large-page architectures; never by this much
BUCKET_ROUNDING_LIMIT = 8192
RAISE_ONLY_KNOBS = ("max", "buckets", "expect_max")
# order of the sysctl.d file (unchanged, so existing files stay byte-identical)
WRITE_ORDER = {"buckets": 0, "max": 1, "expect_max": 2}
# order of the live writes: every value is range-checked before the first write, and the one costly, global change
# (buckets: a live rehash of every entry) comes last, so a refused write cannot leave the table resized and the
# rest unapplied
APPLY_ORDER = {"max": 1, "expect_max": 2, "buckets": 3}

READONLY_POLICIES = ("skip", "warn", "fail")
AUTOLOAD_CHOICES = ("auto", "always", "never")
FILE_ROLES = ("sysctl", "modules_load", "udev_rule", "modprobe")
DEFAULT_PATHS = {
    "sysctl": "/etc/sysctl.d/90-nodeguard-conntrack.conf",
    "modules_load": "/etc/modules-load.d/nodeguard-conntrack.conf",
    "udev_rule": "/etc/udev/rules.d/90-nodeguard-conntrack.rules",
    "modprobe": "/etc/modprobe.d/nodeguard-conntrack.conf",
}
STANDARD_SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d")
HEADER = ("# Managed by Ansible (nodeguard.conntrack.conntrack_tune). Do not edit: local changes are overwritten.\n"
          "# Remove with conntrack_tune state=absent (or the conntrack_tuning role).\n")

PROC_SYS_DIR_FOR_UDEV = "/proc/sys/net/netfilter"
# module option holding the path of each managed file
PATH_OPTIONS = {
    "sysctl": "sysctl_file",
    "modules_load": "modules_load_file",
    "udev_rule": "udev_rule_file",
    "modprobe": "modprobe_file",
}

STATUS_CHANGED = "changed"
STATUS_UNCHANGED = "unchanged"
STATUS_SKIPPED = "skipped"


class TuneError(InputError):
    """Bad conntrack_tune input. ``field`` names the offending option."""


def normalize_knobs(knobs):
    """Resolve names through the allow-list and check values; returns {short name: int}."""
    if knobs is None:
        return {}
    if not isinstance(knobs, dict):
        raise TuneError("knobs", "must be a mapping of knob name to integer")
    result = {}
    for name, value in knobs.items():
        field = "knobs.%s" % (name,)
        try:
            short = short_name(name)
        except UnknownKnobError as exc:
            raise TuneError(field, exc.reason)
        scope, kind = KNOBS[short]
        if scope == SCOPE_READONLY:
            raise TuneError(field, "is read-only in the kernel and cannot be set")
        if short in result:
            raise TuneError(field, "names knob %s a second time" % short)
        if isinstance(value, str) and re.match(r"^\s*[0-9]+\s*$", value):
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise TuneError(field, "must be a non-negative integer, got %r" % (value,))
        if value < 0:
            raise TuneError(field, "must be a non-negative integer, got %d" % value)
        if kind == "timeout" and value == 0:
            raise TuneError(field, "a timeout of 0 would expire entries at once")
        if kind == "bool" and value not in (0, 1):
            raise TuneError(field, "must be 0 or 1, got %d" % value)
        if short in ("buckets",) and value == 0:
            raise TuneError(field, "must be > 0")
        # what the kernel would refuse with EINVAL (max above INT_MAX, a timeout above INT_MAX / HZ, ...)
        problem = check_value(short, value)
        if problem:
            raise TuneError(field, problem)
        result[short] = value
    return result


def validate_path(field, path):
    if not isinstance(path, str) or not path.startswith("/"):
        raise TuneError(field, "must be an absolute path, got %r" % (path,))
    if os.path.normpath(path) != path or "/../" in path + "/" or path.endswith("/"):
        raise TuneError(field, "must be a normalised path without '..', got %r" % (path,))
    return path


def validate_policy(policy):
    if policy.get("readonly_policy") not in READONLY_POLICIES:
        raise TuneError("readonly_policy", "must be one of %s" % ", ".join(READONLY_POLICIES))
    if policy.get("autoload") not in AUTOLOAD_CHOICES:
        raise TuneError("autoload", "must be one of %s" % ", ".join(AUTOLOAD_CHOICES))
    if policy.get("state") not in ("present", "absent"):
        raise TuneError("state", "must be present or absent")


class TunePolicy(TypedDict, total=False):
    """conntrack_tune's policy options, validated (``validate_params``)."""

    state: str
    persist: bool
    apply_live: bool
    raise_only: bool
    readonly_policy: str  # skip | warn | fail
    autoload: str  # auto | always | never
    load_module: bool
    buckets_live: bool
    mode: int


class KnobPlan(TypedDict):
    """One knob of a plan: what it is, what it becomes and why."""

    name: str
    key: str
    scope: str
    desired: int
    before: Optional[int]
    after: Optional[int]
    status: str  # changed | unchanged | skipped
    reason: Optional[str]
    write: Optional[int]
    persisted: bool


class FilePlan(TypedDict):
    """One managed file of a plan."""

    path: str
    before: Optional[str]
    after: Optional[str]
    action: str  # write | remove | unchanged | absent | not_managed
    changed: bool


class TunePlan(TypedDict):
    """What ``plan()`` returns and ``tune_host`` applies."""

    knobs: List[KnobPlan]
    files: Dict[str, FilePlan]
    warnings: List[str]
    errors: List[str]
    changed: bool


def validate_params(params) -> Tuple[Dict[str, int], TunePolicy, Dict[str, str]]:
    """conntrack_tune's options -> (desired knobs, policy, paths); raises TuneError naming the option."""
    desired = normalize_knobs(params["knobs"])
    policy = dict((name, params[name]) for name in ("state", "persist", "apply_live", "raise_only",
                                                    "readonly_policy", "autoload", "load_module"))
    policy["buckets_live"] = params.get("buckets_live", True)
    validate_policy(policy)
    try:
        policy["mode"] = int(params["mode"], 8)
    except (TypeError, ValueError):
        raise TuneError("mode", "must be an octal string such as '0644', got %r" % (params["mode"],))
    if policy["mode"] & ~0o777 or policy["mode"] & 0o022:
        raise TuneError("mode", "must not be group/world-writable or carry special bits, got %r" % params["mode"])
    paths = {}
    for role, option in PATH_OPTIONS.items():
        paths[role] = validate_path(option, params[option])
    if len(set(paths.values())) != len(paths):
        raise TuneError("sysctl_file", "the four managed files need four different paths")
    if policy["state"] == "present" and not desired and params["persist"]:
        raise TuneError("knobs", "is empty: nothing to apply (use state=absent to remove the files)")
    return desired, policy, paths


def readonly_policy(policy, message, warnings, errors):
    """The one readonly policy, for knobs the plan finds read-only and writes the kernel refuses alike:
    ``skip`` says nothing, ``warn`` adds a warning, ``fail`` an error (the caller fails on any)."""
    if policy["readonly_policy"] == "warn":
        warnings.append(message)
    elif policy["readonly_policy"] == "fail":
        errors.append(message)


def outcome(item):
    """The per-knob result conntrack_tune returns."""
    return dict((k, item[k]) for k in ("key", "scope", "desired", "before", "after", "status", "reason", "persisted"))


def bucket_granularity(page_size):
    """The kernel allocates the hash table in whole pages of 8-byte buckets: 512 on 4 KiB pages, 8192 on 64 KiB."""
    if not isinstance(page_size, int) or page_size < 4096:
        return BUCKET_GRANULARITY
    return page_size // 8


def kernel_expected(short, desired, granularity=BUCKET_GRANULARITY):
    """The value the kernel stores when ``desired`` is written (buckets round up to whole pages)."""
    if short == "buckets":
        return -(-desired // granularity) * granularity
    return desired


def value_taken(short, desired, read):
    """Did the kernel take ``desired``? ``read`` is the value read back after the write."""
    if read is None:
        return False
    if short == "buckets":
        return read >= desired and read - desired < BUCKET_ROUNDING_LIMIT
    return read == desired


def _higher(short, live, desired):
    """raise_only: is the live value higher than desired? (max 0 means unlimited)."""
    if short == "max" and live == 0:
        return True
    if short == "max" and desired == 0:
        return False
    return live > desired


def module_name(release):
    """nf_conntrack_ipv4 brings conntrack in before 4.19; afterwards it is nf_conntrack."""
    version = parse_release(release)
    if version is not None and version < (4, 19):
        return "nf_conntrack_ipv4"
    return "nf_conntrack"


def _order(short):
    return (WRITE_ORDER.get(short, 9), short)


def _apply_order(short):
    return (APPLY_ORDER.get(short, 0), short)


def render_sysctl(values, hide_failures):
    """sysctl.d content. ``hide_failures``: keys that cannot be written here get systemd's/procps' '-'
    prefix (errors ignored), so a container's boot does not log a failure for a host-scope knob."""
    lines = [HEADER]
    for short in sorted(values, key=_order):
        prefix = "-" if short in hide_failures else ""
        lines.append("%s%s = %d\n" % (prefix, sysctl_key(short), values[short]))
    return "".join(lines)


def render_modules_load(name):
    return HEADER + "# Load conntrack at boot so its net.netfilter keys exist when sysctl settings are applied.\n%s\n" % name


def udev_command(sysctl_path, systemd_sysctl, sysctl_bin):
    """The command the udev rule runs when nf_conntrack appears: re-apply net.netfilter keys."""
    in_standard_dir = os.path.dirname(sysctl_path) in STANDARD_SYSCTL_DIRS
    if systemd_sysctl:
        if in_standard_dir:
            return "%s --prefix=/net/netfilter" % systemd_sysctl
        return "%s --prefix=/net/netfilter %s" % (systemd_sysctl, sysctl_path)
    return "%s -q -p %s" % (sysctl_bin or "/sbin/sysctl", sysctl_path)


def udev_waits_for_keys(release):
    """Before 5.11 (commit 38dc717e9715) a module's udev "add" event can fire before the module has finished
    initialising, so the rule's command may run before the net.netfilter keys exist: wait for them there."""
    version = parse_release(release)
    return version is None or version < (5, 11)


def render_udev_rule(command, wait_for_keys=False):
    comment = ("# nf_conntrack registers its net.netfilter keys when it loads, which can be after systemd-sysctl ran\n"
               "# (systemd issue 1113): re-apply them when the module appears.\n")
    if wait_for_keys:
        comment += ("# Before kernel 5.11 the add event can come before the module has initialised: wait for its keys.\n")
        # no '$' in the command: udev would substitute it
        command = ("/bin/sh -c 'for n in %s; do [ -e %s/nf_conntrack_max ] && break; sleep 0.2; done; exec %s'"
                   % (" ".join(str(n) for n in range(1, 51)), PROC_SYS_DIR_FOR_UDEV, command))
    return (HEADER + comment +
            'ACTION=="add", SUBSYSTEM=="module", KERNEL=="nf_conntrack", RUN+="%s"\n' % command)


def render_modprobe(buckets):
    return (HEADER + "# Hash table size when nf_conntrack loads (a loaded or built-in module ignores this file).\n"
            "options nf_conntrack hashsize=%d\n" % buckets)


def parse_sysctl(text):
    """{sysctl key (dotted): value string} of one sysctl.d file (later lines win; '-' prefixes dropped)."""
    values = {}
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.strip().lstrip("-").strip().replace("/", ".")
        values[key] = value.strip()
    return values


def sysctl_overrides(our_path, files, keys):
    """Which other sysctl files win over ``our_path`` for ``keys`` at boot.

    systemd-sysctl (and ``sysctl --system``) read every ``*.conf`` of the sysctl.d directories in the order of their
    file names, a later file overriding an earlier one; a name in /etc masks the same name further down; procps also
    reads /etc/sysctl.conf last (Debian links it as 99-sysctl.conf). ``files``: {path: content}.
    Returns {key: [{"path", "value"}]}, the files after ours that set the key, in the order they apply.
    """
    ours = os.path.basename(our_path)
    chosen = {}
    for directory in STANDARD_SYSCTL_DIRS:
        for path in sorted(files):
            if os.path.dirname(path) == directory and path.endswith(".conf"):
                chosen.setdefault(os.path.basename(path), path)
    order = [chosen[name] for name in sorted(chosen) if name > ours and chosen[name] != our_path]
    if "/etc/sysctl.conf" in files and os.path.realpath("/etc/sysctl.conf") not in order:
        order.append("/etc/sysctl.conf")
    result = {}
    seen = set()
    for path in order:
        if path in seen:
            continue
        seen.add(path)
        values = parse_sysctl(files.get(path))
        for key in keys:
            if key in values:
                result.setdefault(key, []).append({"path": path, "value": values[key]})
    return result


def plan(env, desired, policy, files_before, paths, modes_before=None) -> TunePlan:
    """Decide what to do.

    env: {"init_netns": bool|None, "conntrack": "builtin"|"module"|"loadable"|"absent", "kernel_release": str,
          "live": {short: int|None}, "writable": {short: bool}, "systemd_sysctl": str|None, "sysctl_bin": str|None}
    desired: {short: int} (normalised); policy: state, persist, apply_live, raise_only, readonly_policy, autoload
    files_before: {role: content or None}; paths: {role: path}; modes_before: {role: int mode} (a file
    with the right content but another mode than policy["mode"] is rewritten)
    Returns {"knobs": [...], "files": {role: {...}}, "warnings": [...], "errors": [...], "changed": bool}.
    """
    knobs = []
    warnings = []
    errors = []
    persist_values = {}
    hide = set()
    present = policy["state"] == "present"
    granularity = bucket_granularity(env.get("page_size"))
    for short in sorted(desired, key=_apply_order):
        want = desired[short]
        expected = kernel_expected(short, want, granularity)
        live = env["live"].get(short)
        writable = bool(env["writable"].get(short))
        scope = KNOBS[short][0]
        item = {"name": short, "key": sysctl_key(short), "scope": scope, "desired": want, "before": live,
                "after": live, "status": STATUS_UNCHANGED, "reason": None, "write": None}
        persist_value = expected
        if not present:
            item["reason"] = "state=absent leaves live values alone"
        elif live is None:
            item["status"] = STATUS_SKIPPED
            item["reason"] = ("not present in this kernel now (conntrack %s); the persisted files apply it when "
                              "nf_conntrack loads" % env.get("conntrack"))
        elif live == expected:
            item["reason"] = "already %d" % live
        elif not writable:
            item["status"] = STATUS_SKIPPED
            if scope == SCOPE_HOST and env.get("init_netns") is False:
                item["reason"] = "not applicable: host-scope knob, read-only outside the init network namespace"
            else:
                item["reason"] = "not applicable: read-only here (/proc/sys read-only or no CAP_NET_ADMIN)"
            if policy["raise_only"] and short in RAISE_ONLY_KNOBS and _higher(short, live, expected):
                # nothing to do anyway: the live value is already higher
                item["reason"] += "; live value %d is higher, which raise_only accepts" % live
            else:
                readonly_policy(policy, "%s: wanted %d, live %d, %s" % (short, expected, live, item["reason"]),
                                warnings, errors)
        elif policy["raise_only"] and short in RAISE_ONLY_KNOBS and _higher(short, live, expected):
            item["reason"] = "raise_only: live value %d is higher than %d and is kept" % (live, expected)
            persist_value = live
        elif not policy["apply_live"]:
            item["status"] = STATUS_SKIPPED
            item["reason"] = "apply_live=false: persisted only, live value %d left alone" % live
        elif short == "buckets" and policy.get("buckets_live") is False:
            item["status"] = STATUS_SKIPPED
            item["reason"] = ("buckets_live=false: deferred to the next boot (persisted), live value %d left alone; "
                              "a live resize rehashes every entry with all locks held" % live)
        else:
            item["status"] = STATUS_CHANGED
            item["after"] = expected
            item["write"] = want
            item["reason"] = "%d -> %d" % (live, expected)
            if expected != want:
                item["reason"] += " (the kernel rounds buckets up to a multiple of %d)" % granularity
            if short == "buckets":
                warnings.append("buckets %d -> %d resizes the hash table live: the kernel rehashes every entry with all "
                                "locks held and softirqs off, a stall proportional to the entry count (%s now); on a "
                                "busy host set buckets_live=false to defer it to the next boot"
                                % (live, expected, "unknown" if env["live"].get("count") is None
                                   else "{:,}".format(env["live"]["count"])))
        if present and not writable and (scope == SCOPE_HOST and env.get("init_netns") is False):
            hide.add(short)
        persist_values[short] = persist_value
        item["persisted"] = bool(present and policy["persist"])
        knobs.append(item)

    overrides = {}
    if present and policy["persist"] and env.get("sysctl_files") is not None:
        overrides = sysctl_overrides(paths["sysctl"], env["sysctl_files"], [k["key"] for k in knobs])
        for item in knobs:
            later = [o for o in overrides.get(item["key"], []) if o["value"] != str(persist_values.get(item["name"]))]
            item["overridden_by"] = later
            if later:
                warnings.append("%s: %s sets %s = %s and is read after %s at boot, so it overrides the value persisted "
                                "here (%s); remove the key there or manage it in one place"
                                % (item["name"], later[-1]["path"], item["key"], later[-1]["value"], paths["sysctl"],
                                   persist_values.get(item["name"])))

    loadable = env.get("conntrack") in ("module", "loadable")
    wanted_files = {}
    if present and policy["persist"]:
        wanted_files["sysctl"] = render_sysctl(persist_values, hide) if persist_values else None
        autoload = policy["autoload"] == "always" or (policy["autoload"] == "auto" and loadable)
        if autoload:
            wanted_files["modules_load"] = render_modules_load(module_name(env.get("kernel_release")))
            wanted_files["udev_rule"] = render_udev_rule(
                udev_command(paths["sysctl"], env.get("systemd_sysctl"), env.get("sysctl_bin")),
                udev_waits_for_keys(env.get("kernel_release")))
        else:
            wanted_files["modules_load"] = None
            wanted_files["udev_rule"] = None
        # modprobe.d acts only when the module loads: never for a built-in conntrack
        if loadable and "buckets" in persist_values:
            wanted_files["modprobe"] = render_modprobe(persist_values["buckets"])
        else:
            wanted_files["modprobe"] = None
    elif not present:
        wanted_files = dict((role, None) for role in FILE_ROLES)

    files = {}
    for role in FILE_ROLES:
        before = files_before.get(role)
        if role not in wanted_files:
            files[role] = {"path": paths[role], "before": before, "after": before, "action": "not_managed",
                           "changed": False}
            continue
        after = wanted_files[role]
        mode_wrong = (after is not None and before == after and policy.get("mode") is not None
                      and (modes_before or {}).get(role) not in (None, policy.get("mode")))
        if mode_wrong:
            action = "write"
        elif before == after:
            action = "unchanged" if after is not None else "absent"
        elif after is None:
            action = "remove"
        else:
            action = "write"
        files[role] = {"path": paths[role], "before": before, "after": after, "action": action,
                       "changed": before != after or mode_wrong}

    changed = any(k["status"] == STATUS_CHANGED for k in knobs) or any(f["changed"] for f in files.values())
    return {"knobs": knobs, "files": files, "warnings": warnings, "errors": errors, "changed": changed}


def diff(result_plan):
    """Ansible diff list: live values, then each managed file that changes."""
    before = "".join("%s = %s\n" % (k["key"], "(absent)" if k["before"] is None else k["before"])
                     for k in result_plan["knobs"])
    after = "".join("%s = %s\n" % (k["key"], "(absent)" if k["after"] is None else k["after"])
                    for k in result_plan["knobs"])
    diffs = [{"before_header": "live values (before)", "after_header": "live values (after)",
              "before": before, "after": after}]
    for role in FILE_ROLES:
        item = result_plan["files"][role]
        if item["changed"]:
            diffs.append({"before_header": "%s (before)" % item["path"], "after_header": "%s (after)" % item["path"],
                          "before": item["before"] or "", "after": item["after"] or ""})
    return diffs
