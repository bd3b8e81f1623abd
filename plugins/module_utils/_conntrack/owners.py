# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who owns a conntrack knob: the value persisted for it, the live value (drift), and the other writers that can be
seen on the node.

Private to the collection. ``build`` is pure (data in, data out); ``gather`` reads the node: the sysctl files
(through ``tune_host.read_sysctl_files``), the live values and the running processes (/proc). Processes are those of
the node's PID namespace: a kube-proxy of the host is seen from every network namespace of that host.

Writers recognised:

* the sysctl files read at boot: the last one that sets a key wins (``tune.sysctl_overrides`` order);
* kube-proxy: writes nf_conntrack_max (maxPerCore x CPUs, at least min), tcp_timeout_established and
  tcp_timeout_close_wait whenever the live value differs, on every start, unless its config sets them to 0
  (``conntrack.maxPerCore: 0``, ``tcpEstablishedTimeout: 0s``, ``tcpCloseWaitTimeout: 0s``, or the flags
  ``--conntrack-max-per-core=0`` ...);
* container runtimes (dockerd, containerd, cri-o, podman): reported as present; they tune their containers'
  network namespaces, not these host values, unless told to.
"""

import os
import re

from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import knobs as _knobs
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import tune as _tune

RUNTIMES = ("dockerd", "containerd", "crio", "podman", "kubelet")
KUBE_PROXY_KNOBS = {
    "max": ("--conntrack-max-per-core", "maxPerCore"),
    "tcp_timeout_established": ("--conntrack-tcp-timeout-established", "tcpEstablishedTimeout"),
    "tcp_timeout_close_wait": ("--conntrack-tcp-timeout-close-wait", "tcpCloseWaitTimeout"),
}
_ZERO = re.compile(r"^0+(\.0+)?(s|m|h|ms)?$")


def _flag(argv, name):
    for index, arg in enumerate(argv):
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
        if arg == name and index + 1 < len(argv):
            return argv[index + 1]
    return None


def kube_proxy_claims(argv, config_text):
    """{short knob: why kube-proxy writes it} for one kube-proxy process (argv, and its --config file's text)."""
    claims = {}
    for short, (flag, key) in KUBE_PROXY_KNOBS.items():
        value = _flag(argv, flag)
        source = "%s=%s" % (flag, value)
        if value is None and config_text:
            match = re.search(r"^\s*%s:\s*['\"]?([^'\"\s#]+)" % key, config_text, re.M)
            if match:
                value = match.group(1)
                source = "conntrack.%s: %s in %s" % (key, value, _flag(argv, "--config"))
        if value is not None and _ZERO.match(value.strip()):
            continue  # told to leave the value alone
        claims[short] = source if value is not None else "kube-proxy's default (%s not set to 0)" % flag
    return claims


def build(keys, live, sysctl_files, our_path, processes, configs=None):
    """Per short knob name: {"live", "persisted", "persisted_by", "ours", "drift", "writers"}.

    ``live``: {short: int or None}; ``sysctl_files``: {path: content}; ``our_path``: the collection's sysctl file;
    ``processes``: [{"pid", "comm", "argv"}]; ``configs``: {path: text} of kube-proxy --config files.
    ``persisted`` is the value the last sysctl file read at boot sets (``persisted_by``); ``drift`` is true when the
    live value differs from it. ``writers`` lists who else writes the key.
    """
    configs = configs or {}
    ours = _tune.parse_sysctl(sysctl_files.get(our_path))
    result = {}
    for short in keys:
        key = _knobs.sysctl_key(short)
        setters = []
        for path in _boot_order(sysctl_files, our_path):
            values = _tune.parse_sysctl(sysctl_files[path])
            if key in values:
                setters.append({"kind": "sysctl_file", "path": path, "value": values[key]})
        persisted = setters[-1] if setters else None
        writers = [dict(s) for s in setters if s is not persisted or s["path"] != our_path]
        writers = [w for w in writers if w["path"] != our_path]
        for proc in processes:
            if proc["comm"] == "kube-proxy":
                claims = kube_proxy_claims(proc["argv"], configs.get(_flag(proc["argv"], "--config") or ""))
                if short in claims:
                    writers.append({"kind": "kube-proxy", "pid": proc["pid"], "detail": claims[short]})
            elif proc["comm"] in RUNTIMES:
                writers.append({"kind": "runtime", "pid": proc["pid"], "name": proc["comm"]})
        value = None
        if persisted is not None:
            try:
                value = int(persisted["value"].split()[0])
            except (ValueError, IndexError):
                value = None
        current = live.get(short)
        result[short] = {
            "key": key,
            "live": current,
            "persisted": value,
            "persisted_by": persisted["path"] if persisted else None,
            "ours": key in ours,
            "drift": value is not None and current is not None and current != value,
            "writers": writers,
        }
    return result


def _boot_order(sysctl_files, our_path):
    """Every sysctl file in the order boot applies them (ours included)."""
    chosen = {}
    for directory in _tune.STANDARD_SYSCTL_DIRS:
        for path in sorted(sysctl_files):
            if os.path.dirname(path) == directory and path.endswith(".conf"):
                chosen.setdefault(os.path.basename(path), path)
    if our_path in sysctl_files and os.path.basename(our_path) not in chosen:
        chosen[os.path.basename(our_path)] = our_path
    order = [chosen[name] for name in sorted(chosen)]
    if "/etc/sysctl.conf" in sysctl_files:
        order.append("/etc/sysctl.conf")
    return order


def read_processes(proc_dir="/proc"):
    """[{"pid", "comm", "argv"}] of the processes that may write conntrack knobs."""
    found = []
    try:
        pids = [name for name in os.listdir(proc_dir) if name.isdigit()]
    except OSError:
        return found
    for pid in pids:
        try:
            with open(os.path.join(proc_dir, pid, "comm")) as handle:
                comm = handle.read().strip()
            if comm != "kube-proxy" and comm not in RUNTIMES:
                continue
            with open(os.path.join(proc_dir, pid, "cmdline"), "rb") as handle:
                argv = [part.decode("utf-8", "replace") for part in handle.read().split(b"\0") if part]
        except (IOError, OSError):
            continue
        found.append({"pid": int(pid), "comm": comm, "argv": argv})
    return sorted(found, key=lambda p: p["pid"])


def gather(our_path=_tune.DEFAULT_PATHS["sysctl"]):
    """Owners of every conntrack key a sysctl file sets, plus the ones kube-proxy writes."""
    from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import tune_host as _tune_host
    files = _tune_host.read_sysctl_files()
    keys = set(KUBE_PROXY_KNOBS)
    for text in files.values():
        for key in _tune.parse_sysctl(text):
            if key.startswith(_knobs.SYSCTL_PREFIX):
                short = key[len(_knobs.SYSCTL_PREFIX):]
                if short in _knobs.KNOBS:
                    keys.add(short)
    keys = sorted(keys)
    live = dict((short, _read_int(_knobs.proc_path(short))) for short in keys)
    processes = read_processes()
    configs = {}
    for proc in processes:
        path = _flag(proc["argv"], "--config") if proc["comm"] == "kube-proxy" else None
        if path:
            try:
                with open(path) as handle:
                    configs[path] = handle.read(1024 * 1024)
            except (IOError, OSError):
                configs[path] = None
    return build(keys, live, files, our_path, processes, configs)


def _read_int(path):
    try:
        with open(path) as handle:
            return int(handle.read().split()[0])
    except (IOError, OSError, ValueError, IndexError):
        return None
