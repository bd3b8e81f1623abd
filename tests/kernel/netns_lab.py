"""Real network-namespace hosts for the kernel-integration tier.

Everything here runs real commands on the test machine (as root): ``ip netns``, veth pairs,
iptables inside the namespaces, and the collection's own modules executed inside a namespace.
Traffic stays inside namespaces the tests create; nothing is routed out of them.
"""
from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS_PATH = os.path.join(REPO_ROOT, ".build", "collections")
MODULES_DIR = os.path.join(REPO_ROOT, "plugins", "modules")
C_ENV = {"LANG": "C", "LC_ALL": "C", "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

# Tests that change host-scope knobs (nf_conntrack_max, buckets, expect_max, hashsize) or need a
# large table hold this lock, so parallel test runs never see each other's temporary values.
HOST_KNOB_LOCK = "/run/nodeguard-conntrack-hostknobs.lock"
NETFILTER_SYSCTL_DIR = "/proc/sys/net/netfilter"
HASHSIZE_PARAM = "/sys/module/nf_conntrack/parameters/hashsize"

_counter = itertools.count()


def run(argv: Sequence[str], check: bool = True, input_text: Optional[str] = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    """Run argv with the C locale; raise with stdout/stderr on failure when check is set."""
    proc = subprocess.run(list(argv), input=input_text, capture_output=True, text=True,
                          env=C_ENV, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError("command %r failed rc=%d\nstdout:\n%s\nstderr:\n%s"
                             % (list(argv), proc.returncode, proc.stdout, proc.stderr))
    return proc


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """Poll predicate until it returns something truthy or timeout seconds pass; return its last value
    (so ``assert wait_until(...)`` fails with the last observation, never after a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def wait_line(proc: subprocess.Popen, word: str, timeout: float = 15) -> str:
    """Read a spawned process's stdout (text mode) until a line starts with word; fail at EOF or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(word):
            return line
        if not line and proc.poll() is not None:
            break
    raise AssertionError("process did not print %r" % word)


def run_module(module: str, args: Optional[Dict] = None, check_mode: bool = False, diff: bool = False,
               timeout: float = 300, prefix: Sequence[str] = (), env: Optional[Dict[str, str]] = None) -> Dict:
    """Execute ``plugins/modules/<module>.py`` for real (after an argv prefix such as ``ip netns exec <ns>``;
    without one, in the test's own namespace), with extra environment variables if given; return its JSON
    result with the exit status as ``_rc``."""
    payload = dict(args or {})
    payload["_ansible_check_mode"] = check_mode
    payload["_ansible_diff"] = diff
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": payload}, handle)
        args_path = handle.name
    try:
        full_env = dict(C_ENV, PYTHONPATH=COLLECTIONS_PATH, **(env or {}))
        proc = subprocess.run(list(prefix) + [sys.executable, os.path.join(MODULES_DIR, module + ".py"), args_path],
                              capture_output=True, text=True, env=full_env, timeout=timeout, check=False)
    finally:
        os.unlink(args_path)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError("module %s printed no JSON (rc=%d)\nstdout:\n%s\nstderr:\n%s"
                             % (module, proc.returncode, proc.stdout, proc.stderr))
    result["_rc"] = proc.returncode
    return result


class Netns:
    """One namespace host. Created by NetnsLab; every process started in it is ended by PID."""

    def __init__(self, name: str):
        self.name = name
        self.procs: List[subprocess.Popen] = []

    def argv(self, argv: Sequence[str]) -> List[str]:
        return ["ip", "netns", "exec", self.name] + list(argv)

    def run(self, argv: Sequence[str], check: bool = True, input_text: Optional[str] = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        return run(self.argv(argv), check=check, input_text=input_text, timeout=timeout)

    def sh(self, script: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.run(["sh", "-ec", script], check=check, timeout=timeout)

    def spawn(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start a background process inside the namespace; it is killed at teardown."""
        kwargs.setdefault("stdout", subprocess.DEVNULL)
        kwargs.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen(self.argv(argv), env=C_ENV, start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def python(self, code: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run Python code inside the namespace with the collection importable."""
        env = dict(C_ENV, PYTHONPATH=COLLECTIONS_PATH)
        return subprocess.run(self.argv([sys.executable, "-c", code]), capture_output=True, text=True,
                              env=env, timeout=timeout, check=False)

    def run_module(self, module: str, args: Optional[Dict] = None, check_mode: bool = False,
                   diff: bool = False, timeout: float = 300) -> Dict:
        """Execute ``plugins/modules/<module>.py`` for real inside the namespace; return its JSON result."""
        return run_module(module, args, check_mode=check_mode, diff=diff, timeout=timeout, prefix=self.argv([]))

    def stop_processes(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    proc.wait(timeout=10)
        self.procs = []


class NetnsLab:
    """Creates namespaces and veth links; removes all of them (and their processes) on close."""

    def __init__(self, prefix: str = "ngct"):
        self.prefix = "%s%d-%d" % (prefix, os.getpid() % 100000, next(_counter))
        self.namespaces: List[Netns] = []
        self._links = itertools.count()

    def add(self, role: str, conntrack_rule: bool = True) -> Netns:
        """A new namespace with lo up. With conntrack_rule, an INPUT rule that uses conntrack is added,
        because a namespace tracks nothing until some rule in it uses conntrack."""
        ns = Netns("%s-%s" % (self.prefix, role))
        run(["ip", "netns", "add", ns.name])
        self.namespaces.append(ns)
        ns.run(["ip", "link", "set", "lo", "up"])
        if conntrack_rule:
            ns.run(["iptables", "-w", "-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
                    "-j", "ACCEPT"])
        return ns

    def link(self, a: Netns, a_addr: str, b: Netns, b_addr: str) -> (str, str):
        """A veth pair between two namespaces with the given CIDR addresses; returns the device names."""
        n = next(self._links)
        a_dev, b_dev = "v%da" % n, "v%db" % n
        tmp_a, tmp_b = "%s%da" % (self.prefix[-6:], n), "%s%db" % (self.prefix[-6:], n)
        run(["ip", "link", "add", tmp_a, "netns", a.name, "type", "veth", "peer", "name", tmp_b, "netns", b.name])
        a.run(["ip", "link", "set", tmp_a, "name", a_dev])
        b.run(["ip", "link", "set", tmp_b, "name", b_dev])
        family_a = "-6" if ":" in a_addr else "-4"
        family_b = "-6" if ":" in b_addr else "-4"
        a.run(["ip", family_a, "addr", "add", a_addr, "dev", a_dev, "nodad"] if family_a == "-6"
              else ["ip", "addr", "add", a_addr, "dev", a_dev])
        b.run(["ip", family_b, "addr", "add", b_addr, "dev", b_dev, "nodad"] if family_b == "-6"
              else ["ip", "addr", "add", b_addr, "dev", b_dev])
        a.run(["ip", "link", "set", a_dev, "up"])
        b.run(["ip", "link", "set", b_dev, "up"])
        return a_dev, b_dev

    def close(self) -> None:
        for ns in reversed(self.namespaces):
            ns.stop_processes()
            # processes we did not start ourselves cannot be in a namespace we just created,
            # so anything left there is ours (e.g. a child of a spawned process)
            pids = run(["ip", "netns", "pids", ns.name], check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            run(["ip", "netns", "del", ns.name], check=False)
        self.namespaces = []


def read_netfilter_knobs() -> Dict[str, str]:
    """Every writable net.netfilter knob of the current (init) netns, plus hashsize."""
    knobs = {}
    for name in sorted(os.listdir(NETFILTER_SYSCTL_DIR)):
        path = os.path.join(NETFILTER_SYSCTL_DIR, name)
        if not os.path.isfile(path) or not os.access(path, os.W_OK):
            continue
        with contextlib.suppress(OSError):
            with open(path) as handle:
                knobs[path] = handle.read().strip()
    if os.path.exists(HASHSIZE_PARAM):
        with open(HASHSIZE_PARAM) as handle:
            knobs[HASHSIZE_PARAM] = handle.read().strip()
    return knobs


def write_knob(path: str, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(str(value))


@contextlib.contextmanager
def host_knobs_guard() -> Iterator[Dict[str, str]]:
    """Exclusive lock + snapshot of host-scope conntrack knobs; restores every changed value, even on failure."""
    os.makedirs(os.path.dirname(HOST_KNOB_LOCK), exist_ok=True)
    with open(HOST_KNOB_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        snapshot = read_netfilter_knobs()
        try:
            yield dict(snapshot)
        finally:
            errors = []
            # buckets/hashsize first: writing buckets moves hashsize with it
            order = sorted(snapshot, key=lambda p: (not p.endswith(("buckets", "hashsize")), p))
            for path in order:
                with contextlib.suppress(OSError):
                    with open(path) as handle:
                        if handle.read().strip() == snapshot[path]:
                            continue
                try:
                    write_knob(path, snapshot[path])
                except OSError as exc:
                    errors.append("%s: %s" % (path, exc))
            if errors:
                raise AssertionError("could not restore host knobs: %s" % "; ".join(errors))


_HTTP_GET = r"""
import sys, time, urllib.request
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())
        break
    except OSError as exc:
        if time.monotonic() >= deadline:
            sys.exit("no answer from %s: %s" % (sys.argv[1], exc))
        time.sleep(0.1)
"""


def http_get(ns: Netns, url: str, timeout: float = 20) -> str:
    """GET url from inside ns, retrying until a server there answers (e.g. an exporter just spawned in ns)."""
    proc = ns.run([sys.executable, "-c", _HTTP_GET, url, str(timeout)], check=False, timeout=timeout + 30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# A new one-way UDP flow every 2 ms to a silent loopback address. Once the table is full each new flow evicts an
# unassured entry (early_drop) or is dropped (EPERM), so a table kept full this way keeps those counters rising.
UDP_CHURN = r"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
port = 1
print("ready", flush=True)
while True:
    try:
        s.sendto(b"x", ("127.0.0.99", port))
    except OSError:
        pass  # EPERM: netfilter dropped it (table full)
    port = port % 60000 + 1
    time.sleep(0.002)
"""


def conntrack_count(ns: Netns) -> int:
    return int(ns.run(["cat", "/proc/sys/net/netfilter/nf_conntrack_count"]).stdout)


def conntrack_losses(ns: Netns, counters: Iterable[str] = ("drop", "early_drop")) -> int:
    """The named counters summed over CPUs, read with conntrack -S (conntrack-tools as the oracle)."""
    wanted = set(counters)
    total = 0
    for line in ns.run(["conntrack", "-S"]).stdout.splitlines():
        for field in line.split():
            key, _sep, value = field.partition("=")
            if key in wanted:
                total += int(value)
    return total


def keep_table_full(ns: Netns, limit: int, fraction: float = 0.95, timeout: float = 60) -> subprocess.Popen:
    """Start UDP_CHURN in ns (udp_timeout 600 s, a per-netns knob) and wait until its table holds at least
    fraction x limit entries. The caller must have lowered nf_conntrack_max to limit under host_knobs."""
    ns.run(["sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=600"])
    churn = ns.spawn([sys.executable, "-c", UDP_CHURN], stdout=subprocess.PIPE, text=True)
    wait_line(churn, "ready")
    seen = []

    def full_enough():
        seen.append(conntrack_count(ns))
        return seen[-1] >= limit * fraction

    assert wait_until(full_enough, timeout, 0.5), "the table of %s never reached %d entries (last %d)" % (
        ns.name, limit * fraction, seen[-1])
    return churn


def wait_losses_rise(ns: Netns, since: int, timeout: float = 30) -> int:
    """Wait until drop + early_drop of ns exceed since; return the new value (fail if they never do)."""
    seen = []

    def risen():
        seen.append(conntrack_losses(ns))
        return seen[-1] > since

    assert wait_until(risen, timeout, 0.5), "drop/early_drop of %s stayed at %d for %d s" % (ns.name, since, timeout)
    return seen[-1]


def namespace_inventory(directory: str, hosts: Sequence[Netns], hostvars: Optional[Dict[str, Dict]] = None) -> str:
    """An ansible inventory (JSON file in directory) whose hosts are namespaces: local connection and an
    interpreter wrapper that enters the namespace (a path, not a command line)."""
    inv = {"all": {"vars": {"ansible_connection": "local"}, "hosts": {}}}
    for ns in hosts:
        wrapper = os.path.join(str(directory), "python-%s" % ns.name)
        with open(wrapper, "w") as handle:
            handle.write('#!/bin/sh\nexec ip netns exec %s /usr/bin/python3 "$@"\n' % ns.name)
        os.chmod(wrapper, 0o755)
        inv["all"]["hosts"][ns.name] = dict({"ansible_python_interpreter": wrapper},
                                            **(hostvars or {}).get(ns.name, {}))
    path = os.path.join(str(directory), "inventory.json")
    with open(path, "w") as handle:
        json.dump(inv, handle)
    return path


def run_collection_playbook(name: str, inventory: str, variables: Dict, check: bool = False,
                            timeout: float = 600, collections_path: str = COLLECTIONS_PATH) -> subprocess.CompletedProcess:
    """ansible-playbook nodeguard.conntrack.<name> from the built collection (or another collections path), extra
    vars as one JSON document."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path, ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="false")
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", inventory,
            "nodeguard.conntrack." + name, "-e", json.dumps(variables)] + (["--check"] if check else [])
    return subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
