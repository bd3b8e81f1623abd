# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one host probe: kernel, conntrack built-in/module/loadable/absent, init netns (with the reason), container,
live and writable knobs, hashsize and its writability, iptables backend (private to the collection).

conntrack_facts, conntrack_tune (through ``_conntrack/tune_host``) and the firewall host layer all ask this
module, so they give the same answers on the same host.

The ``classify_*``/``detect_*`` functions are pure (observations in, answer out). ``probe()`` is the adapter that
collects the observations from /proc, /sys and the file system; it never runs a process unless a caller passes
``run_iptables_version`` and the file system could not tell the iptables backend.
"""

import os
import re
import stat
from typing import Any, Dict, List, Optional, TypedDict

from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import knobs as _knobs
from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.host_files import read_int, read_or_none
from ansible_collections.nodeguard.conntrack.plugins.module_utils._host import module_config as _module_config
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import nft_inventory as _nft_inventory
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import nft_ruleset as _nft_ruleset

SYS_MODULE_DIR = "/sys/module/nf_conntrack"
MODULES_DIRS = ("/lib/modules", "/usr/lib/modules")
NETNS_SELF = "/proc/self/ns/net"
NETNS_PID1 = "/proc/1/ns/net"
# proc_alloc_inum() hands out namespace inodes from PROC_DYNAMIC_FIRST upwards; anything below is one of the
# fixed inodes only the initial namespaces carry (init_net has one on current kernels).
PROC_DYNAMIC_FIRST = 0xF0000000
HOST_SCOPE_SIGNALS = ("max", "buckets", "expect_max")
IPTABLES_PATHS = ("/usr/sbin/iptables", "/sbin/iptables", "/usr/bin/iptables", "/bin/iptables")
IPTABLES_ALTERNATIVES = ("/etc/alternatives/iptables",)
LEGACY_TABLE_FILES = ("/proc/net/ip_tables_names", "/proc/net/ip6_tables_names")
NFTABLES_CONF = "/etc/nftables.conf"

_NETNS_LINK_RE = re.compile(r"^net:\[(\d+)\]$")
_BUILTIN_RE = re.compile(r"/nf_conntrack\.ko(\.\w+)?$", re.M)
_MODULES_DEP_RE = re.compile(r"^\S*/nf_conntrack\.ko(\.\w+)?:", re.M)
_CGROUP_HINTS = (
    ("kubepods", "kubernetes"),
    ("libpod", "podman"),
    ("docker", "docker"),
    ("containerd", "containerd"),
    ("/lxc", "lxc"),
    ("lxc.payload", "lxc"),
    ("machine.slice/systemd-nspawn", "systemd-nspawn"),
)


def classify_conntrack(sys_module_dir_exists, has_initstate, listed_builtin, sysctls_present, listed_loadable=False):
    """``module`` (module, loaded), ``builtin``, ``loadable`` (module on disk, not loaded) or ``absent``.

    A loaded module has /sys/module/nf_conntrack/initstate; a built-in has the directory (it has parameters)
    but no initstate, and is listed in modules.builtin. When /sys is hidden (some containers) the sysctls
    still prove conntrack is there; modules.builtin then decides, else it is reported as a module. Not in the
    running kernel but listed in modules.dep: ``loadable``.
    """
    if sys_module_dir_exists:
        return "module" if has_initstate else "builtin"
    if listed_builtin:
        return "builtin"
    if sysctls_present:
        return "module"
    if listed_loadable:
        return "loadable"
    return "absent"


def netns_inode(link_text):
    """The inode in a ``net:[4026531833]`` link, or None."""
    match = _NETNS_LINK_RE.match(link_text or "")
    return int(match.group(1)) if match else None


def detect_init_netns(own_inode, knob_modes, pid1_inode=None, container=None):
    """(init_netns or None, how it was decided).

    1. A fixed (non-dynamic) netns inode only belongs to init_net.
    2. max/expect_max/buckets are mode 0444 outside the init netns on every kernel since 5.x (and buckets on
       4.x); all of them 0644 means the init netns. The mode comes from the kernel's sysctl table, so a
       read-only /proc/sys mount in a container does not change it.
    3. Otherwise, outside a container, PID 1 sits in the init netns: compare inodes.
    """
    if own_inode is not None and own_inode < PROC_DYNAMIC_FIRST:
        return True, "fixed init_net inode"
    modes = [knob_modes.get(name) for name in HOST_SCOPE_SIGNALS if knob_modes.get(name) is not None]
    if modes:
        if any(not mode & stat.S_IWUSR for mode in modes):
            return False, "host-scope sysctls are read-only (mode 0444) in this netns"
        if len(modes) == len(HOST_SCOPE_SIGNALS):
            return True, "host-scope sysctls are writable (mode 0644) in this netns"
    if own_inode is not None and pid1_inode is not None:
        if own_inode != pid1_inode:
            return (False, "netns differs from PID 1's") if container is None else (None, "undetermined")
        if container is None:
            return True, "same netns as PID 1"
    return None, "undetermined"


def detect_container(containerenv=None, systemd_container=None, pid1_container_env=None, dockerenv=False,
                     cgroup_text=None):
    """(container name or None, evidence). Same sources as systemd-detect-virt --container, in its order.

    ``containerenv``: text of /run/.containerenv (podman/buildah) or None when absent; ``systemd_container``:
    /run/systemd/container; ``pid1_container_env``: ``container=`` from /proc/1/environ; ``dockerenv``:
    /.dockerenv exists; ``cgroup_text``: /proc/1/cgroup.
    """
    if pid1_container_env:
        return pid1_container_env.strip(), "/proc/1/environ container="
    if systemd_container and systemd_container.strip():
        return systemd_container.strip().splitlines()[0], "/run/systemd/container"
    if containerenv is not None:
        engine = re.search(r'^engine="([a-z]+)', containerenv, re.M)
        return (engine.group(1) if engine else "podman"), "/run/.containerenv"
    if dockerenv:
        return "docker", "/.dockerenv"
    for line in (cgroup_text or "").splitlines():
        path = line.split(":", 2)[-1]
        for hint, name in _CGROUP_HINTS:
            if hint in path:
                return name, "/proc/1/cgroup"
    return None, None


def split_writable(knob_access):
    """{knob: writable bool} -> (sorted writable names, sorted read-only names)."""
    writable = sorted(name for name, ok in knob_access.items() if ok)
    readonly = sorted(name for name, ok in knob_access.items() if not ok)
    return writable, readonly


def detect_iptables_backend(binary_target=None, version_output=None):
    """``nft``, ``legacy`` or None from where the iptables command leads, or from ``iptables -V``.

    ``binary_target`` is the resolved path (or name) of the iptables command: iptables-nft / xtables-nft-multi
    is nft; iptables-legacy / xtables-legacy-multi / the pre-1.8 xtables-multi is legacy.
    """
    if binary_target:
        base = os.path.basename(binary_target)
        if "nft" in base:
            return "nft"
        if "legacy" in base or base == "xtables-multi":
            return "legacy"
    if version_output:
        if "(nf_tables)" in version_output:
            return "nft"
        if "(legacy)" in version_output:
            return "legacy"
        match = re.search(r"iptables v(\d+)\.(\d+)", version_output)
        if match and (int(match.group(1)), int(match.group(2))) < (1, 8):
            return "legacy"
    return None


def parse_table_names(text):
    """Names in /proc/net/ip_tables_names (one per line)."""
    return sorted(set(line.strip() for line in (text or "").splitlines() if line.strip()))


def parse_environ_container(raw):
    """``container=`` value from a NUL-separated environ blob."""
    for item in (raw or b"").split(b"\0"):
        if item.startswith(b"container="):
            return item[len(b"container="):].decode("utf-8", "replace")
    return None


def netfilter_tables(nft_json, nftables_conf_text=None):
    """(tables, reason): every nf_tables table with its owner and whether the iptables view covers it (see
    ``nft_inventory.inventory``), from the output of ``nft -j list ruleset``; (None, reason) when it is not JSON."""
    try:
        ruleset = _nft_ruleset.parse(nft_json)
    except _nft_ruleset.NftParseError as exc:
        return None, "cannot parse nft -j list ruleset: %s" % exc
    return _nft_inventory.inventory(ruleset, nftables_conf_text), None


# ---- adapters ----

def _readlink(path):
    try:
        return os.readlink(path)
    except (IOError, OSError):
        return None


def _modules_lists_conntrack(release):
    """(nf_conntrack listed in modules.builtin, listed in modules.dep) for this kernel release."""
    builtin = loadable = False
    for base in MODULES_DIRS:
        builtin = builtin or bool(_BUILTIN_RE.search(read_or_none(os.path.join(base, release, "modules.builtin")) or ""))
        loadable = loadable or bool(_MODULES_DEP_RE.search(read_or_none(os.path.join(base, release, "modules.dep")) or ""))
    return builtin, loadable


def conntrack_presence(release, sysctls_present):
    """builtin / module (loaded) / loadable / absent, from /sys/module and the kernel's module lists."""
    if os.path.isdir(SYS_MODULE_DIR):
        return classify_conntrack(True, os.path.exists(os.path.join(SYS_MODULE_DIR, "initstate")), False,
                                  sysctls_present)
    builtin, loadable = _modules_lists_conntrack(release)
    return classify_conntrack(False, False, builtin, sysctls_present, loadable)


def init_netns():
    """(init_netns True/False/None, reason, own netns inode, container, container evidence)."""
    container, evidence = detect_container(
        containerenv=read_or_none("/run/.containerenv"),
        systemd_container=read_or_none("/run/systemd/container"),
        pid1_container_env=parse_environ_container(read_or_none("/proc/1/environ", "rb")),
        dockerenv=os.path.exists("/.dockerenv"),
        cgroup_text=read_or_none("/proc/1/cgroup"),
    )
    own_inode = netns_inode(_readlink(NETNS_SELF))
    value, reason = detect_init_netns(own_inode, knob_modes(HOST_SCOPE_SIGNALS), netns_inode(_readlink(NETNS_PID1)),
                                      container)
    return value, reason, own_inode, container, evidence


def same_netns_as_pid1():
    """True when this process shares PID 1's network namespace (where a systemd timer would run)."""
    own = _readlink(NETNS_SELF)
    return own is not None and own == _readlink(NETNS_PID1)


def knob_modes(shorts, proc_dir=None):
    proc_dir = proc_dir or _knobs.PROC_SYS_DIR
    modes = {}
    for short in shorts:
        try:
            modes[short] = stat.S_IMODE(os.stat(os.path.join(proc_dir, "nf_conntrack_" + short)).st_mode)
        except OSError:
            continue
    return modes


def knob_access(shorts, proc_dir=None, hashsize_path=None, init_netns=None):
    """{knob: writable by this process here} for the knobs that exist, plus ``hashsize`` when it exists.

    A sysctl is writable when the kernel's table mode has the owner write bit (root is held to it in /proc/sys)
    and access(2) agrees (read-only mounts, non-root callers). The kernel refuses hashsize writes outside the
    init netns (EOPNOTSUPP) whatever the file mode says, so hashsize needs init_netns True.
    """
    proc_dir = proc_dir or _knobs.PROC_SYS_DIR
    hashsize_path = hashsize_path or _knobs.HASHSIZE_PATH
    modes = knob_modes(shorts, proc_dir)
    access = {}
    for short, mode in modes.items():
        access[short] = bool(mode & stat.S_IWUSR) and os.access(os.path.join(proc_dir, "nf_conntrack_" + short),
                                                                os.W_OK)
    if os.path.exists(hashsize_path):
        access["hashsize"] = init_netns is True and os.access(hashsize_path, os.W_OK)
    return access


class KnobState(TypedDict):
    """Live values and writability of the knobs a caller asked about (``knob_state``)."""

    live: Dict[str, Optional[int]]
    writable: Dict[str, bool]
    hashsize: Optional[int]
    hashsize_writable: bool


class HostEnvironment(TypedDict, total=False):
    """What ``probe()`` answers: the contract between the probe and conntrack_facts / tune_host / the firewall.

    conntrack_facts returns the documented subset (``facts.ENVIRONMENT_KEYS``); tune_host adds
    ``page_size``, ``sysctl_files``, ``systemd_sysctl`` and ``sysctl_bin``.
    """

    kernel_release: str
    conntrack: str  # builtin | module | loadable | absent
    module_config: Dict[str, Any]
    init_netns: Optional[bool]
    init_netns_reason: str
    netns_inode: Optional[int]
    container: Optional[str]
    container_evidence: Optional[str]
    writable_knobs: List[str]
    readonly_knobs: List[str]
    iptables_backend: Optional[str]
    iptables_legacy_tables: List[str]
    nft_tables: Optional[List[Dict[str, Any]]]
    nft_tables_reason: str
    nft_native_tables: Optional[int]
    nftables_conf: Any
    memtotal_mb: Optional[int]
    cpus: Optional[int]
    live: Dict[str, Optional[int]]
    writable: Dict[str, bool]
    hashsize: Optional[int]
    hashsize_writable: bool
    page_size: int
    sysctl_files: Dict[str, str]
    systemd_sysctl: Optional[str]
    sysctl_bin: Optional[str]


def knob_state(shorts, init_netns_value) -> KnobState:
    """Live values and writability of ``shorts`` (catalogue short names) plus hashsize.

    ``{"live": {short: int or None}, "writable": {short: bool}, "hashsize": int or None,
    "hashsize_writable": bool}``; a knob that does not exist here reads None and is not writable.
    """
    access = knob_access(shorts, init_netns=init_netns_value)
    live = dict((short, read_int(_knobs.proc_path(short))) for short in shorts)
    writable = dict((short, live[short] is not None and access.get(short, False)) for short in shorts)
    return {"live": live, "writable": writable, "hashsize": read_int(_knobs.HASHSIZE_PATH),
            "hashsize_writable": access.get("hashsize", False)}


def iptables_binary_target():
    for path in IPTABLES_ALTERNATIVES + IPTABLES_PATHS:
        if os.path.lexists(path):
            return os.path.realpath(path)
    return None


def parse_memtotal_mb(meminfo_text):
    """MemTotal from /proc/meminfo in MiB (what sizing takes), or None when absent or malformed."""
    for line in (meminfo_text or "").splitlines():
        if line.startswith("MemTotal:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                return int(fields[1]) // 1024
    return None


def probe(present, run_iptables_version=None, knobs=(), run_nft_list=None) -> HostEnvironment:
    """Collect the environment facts. ``present``: catalogue knobs that exist here (short names).

    ``knobs``: short names whose live value and writability the caller needs (``live``, ``writable``,
    ``hashsize``, ``hashsize_writable`` in the result; conntrack_facts returns only the keys it documents).
    ``run_nft_list``: a callable returning (text of ``nft -j list ruleset`` or None, reason); without it the
    nf_tables inventory is not read (``nft_tables`` None).
    """
    release = os.uname()[2]
    conntrack = conntrack_presence(release, bool(present))
    init_value, init_reason, own_inode, container, evidence = init_netns()
    writable, readonly = split_writable(knob_access(present, init_netns=init_value))
    state = knob_state(list(knobs), init_value)
    target = iptables_binary_target()
    backend = detect_iptables_backend(target)
    if backend is None and target and run_iptables_version is not None:
        backend = detect_iptables_backend(None, run_iptables_version(target))
    legacy_tables = []
    for path in LEGACY_TABLE_FILES:
        legacy_tables.extend(parse_table_names(read_or_none(path)))
    conf_text = read_or_none(NFTABLES_CONF)
    nft_tables, nft_reason = None, "not read"
    if run_nft_list is not None:
        text, nft_reason = run_nft_list()
        if text is not None:
            nft_tables, nft_reason = netfilter_tables(text, conf_text)
    return {
        "kernel_release": release,
        "conntrack": conntrack,
        # what loads nf_conntrack at boot, its modprobe.d options, a blacklist or an install command that blocks it
        "module_config": _module_config.read_module_config(),
        "init_netns": init_value,
        "init_netns_reason": init_reason,
        "netns_inode": own_inode,
        "container": container,
        "container_evidence": evidence,
        "writable_knobs": writable,
        "readonly_knobs": readonly,
        "iptables_backend": backend,
        "iptables_legacy_tables": sorted(set(legacy_tables)),
        # every nf_tables table (iptables-nft's, firewalld's, Docker's, ...): what the iptables view misses
        "nft_tables": nft_tables,
        "nft_tables_reason": nft_reason,
        "nft_native_tables": None if nft_tables is None else len(_nft_inventory.native_tables(nft_tables)),
        "nftables_conf": _nft_inventory.nftables_conf(conf_text),
        # the two host figures sizing needs, so a role need not run a hardware fact gathering for them
        "memtotal_mb": parse_memtotal_mb(read_or_none("/proc/meminfo")),
        "cpus": os.cpu_count(),
        "live": state["live"],
        "writable": state["writable"],
        "hashsize": state["hashsize"],
        "hashsize_writable": state["hashsize_writable"],
    }
