"""Benchmark (not a test): the fleet audit (nodeguard.conntrack.audit) at 1, 20 and 100 hosts, against the 0.1.0
audit role run the same way, and the audit's entry statistics on a table of 1,000,000 entries.

    .venv/bin/python bench/bench_audit_scale.py [--sizes 1,20,100] [--podman-sizes 1,20,100] [--forks 20]
                                                [--entries 1000000] [--skip-podman] [--skip-entries]

1. Namespace hosts (local connection, an interpreter wrapper that enters the namespace; tests/kernel/netns_lab.py),
   each with a conntrack rule, a DNAT rule and a dozen NATed UDP entries. For every fleet size and both roles
   (today's; the 0.1.0 role from tests/kernel/legacy over the same modules and filters): a first run (baseline,
   untimed) and the timed second run (previous counters read, deltas computed, state written), forks F.
   Printed: wall time, marginal cost per host ((wall(N) - wall(1)) / (N - 1)), module executions per host (each
   interpreter start counted by the wrapper; on the hosts, and on the controller for delegated tasks), the ratio
   new / 0.1.0 and the peak controller memory (PSS summed over ansible-playbook and its workers, sampled).
2. The same on podman lab hosts (scripts/lab.sh, containers.podman connection; the interpreter wrapper inside each
   container counts).
3. Entry statistics of the collect module (one dump grouped by proto, state, dnat, snat) on --entries UDP entries
   in one namespace, against one `conntrack -L > /dev/null` and against the three dumps of the 0.1.0 role; peak RSS
   at 10,000 and at --entries entries. nf_conntrack_max is raised under the host-knob lock and restored.

Figures are reported, never asserted; the machine is shared, so ratios are measured in the same run.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "kernel"))

from legacy_audit import legacy_collection  # noqa: E402
from netns_lab import C_ENV, COLLECTIONS_PATH, NetnsLab, host_knobs_guard  # noqa: E402

PLAYBOOK = os.path.join(ROOT, ".venv", "bin", "ansible-playbook")
LAB_SH = os.path.join(ROOT, "scripts", "lab.sh")
PODMAN_PREFIX = "ngct-bscale"
CONTAINER_WRAPPER = "/usr/local/bin/ngct-bench-python"
# per host: NATed UDP entries (DNAT in OUTPUT) held by a long timeout
HOST_SETUP = ("sysctl -qw net.netfilter.nf_conntrack_udp_timeout=14400 net.netfilter.nf_conntrack_udp_timeout_stream=14400\n"
              "iptables -t nat -A OUTPUT -d 127.0.0.2 -p udp -j DNAT --to-destination 127.0.0.1\n"
              "python3 -c \"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
              "[s.sendto(b'x', ('127.0.0.2', p)) for p in range(7000, 7012)]\"\n")


def _env(collections):
    env = dict(os.environ)
    env.update({"PATH": os.path.join(ROOT, ".venv", "bin") + os.pathsep + env.get("PATH", ""),
                "ANSIBLE_COLLECTIONS_PATH": "%s:%s" % (collections, os.path.join(ROOT, ".build", "test-collections")),
                "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_HOST_KEY_CHECKING": "false",
                "ANSIBLE_LOCALHOST_WARNING": "false",
                "CONTAINERS_CONF": env.get("CONTAINERS_CONF", os.path.join(ROOT, ".build", "containers.conf"))})
    return env


def _tree_pss_kb(pid):
    """PSS (kB) of pid and all its descendants."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (IOError, OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            with open("/proc/%d/smaps_rollup" % current) as handle:
                for line in handle:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except (IOError, OSError):
            pass
    return total


def run_playbook(argv, env, sample=True):
    """(wall seconds, peak tree PSS MiB, completed process)."""
    peak = [0]
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done = threading.Event()

    def sampler():
        while not done.is_set():
            peak[0] = max(peak[0], _tree_pss_kb(proc.pid))
            done.wait(0.25)

    thread = threading.Thread(target=sampler, daemon=True)
    if sample:
        thread.start()
    out = proc.communicate()[0]
    wall = time.monotonic() - start
    done.set()
    if sample:
        thread.join()
    if proc.returncode != 0:
        sys.stderr.write(out[-6000:])
        raise SystemExit("audit playbook failed (rc %d)" % proc.returncode)
    return wall, peak[0] / 1024.0, out


def _write_inventory(path, fleet_hosts, common, controller_wrapper):
    inventory = {"fleet": {"hosts": fleet_hosts, "vars": common},
                 "controller": {"hosts": {"localhost": {"ansible_connection": "local",
                                                        "ansible_python_interpreter": controller_wrapper}}}}
    with open(path, "w") as handle:
        json.dump(inventory, handle)


class Counter:
    """Interpreter wrappers that count their starts: one file per host (lines), read and reset per run."""

    def __init__(self, directory):
        self.directory = directory
        os.makedirs(directory)

    def path(self, name):
        return os.path.join(self.directory, name)

    def wrapper(self, name, exec_line):
        script = os.path.join(self.directory, "python-" + name)
        with open(script, "w") as handle:
            handle.write('#!/bin/sh\necho x >> %s\nexec %s "$@"\n' % (self.path("count-" + name), exec_line))
        os.chmod(script, 0o755)
        return script

    def take(self, name):
        path = self.path("count-" + name)
        if not os.path.exists(path):
            return 0
        with open(path) as handle:
            count = len(handle.readlines())
        os.unlink(path)
        return count


def audit_runs(label, sizes, forks, inventory_for, count_hosts, collections, workdir, warm=True):
    """For each size: the new role's first run (untimed), its state copied for the 0.1.0 role (the files are the
    same format), then the timed runs of both roles, each reading previous counters. Without ``warm`` the timed
    runs are first runs (baselines, nothing to read). Returns {(role, size): figures}."""
    results = {}
    for size in sizes:
        inventory = inventory_for(size)
        states = dict((role, os.path.join(workdir, "state-%s-%s-%d" % (label, role, size))) for role in ("0.1.0", "new"))
        first = None
        for role, path in (("new", collections["new"]), ("0.1.0", collections["legacy"])):
            tag = "%s-%s-%d" % (label, role, size)
            argv = [PLAYBOOK, "-i", inventory, "nodeguard.conntrack.audit", "--forks", str(forks), "-e", json.dumps({
                "conntrack_hosts": "fleet", "conntrack_audit_report_dir": os.path.join(workdir, "report-" + tag),
                "conntrack_audit_state_dir": states[role]})]
            env = _env(path)
            if warm and role == "new":
                first, _pss, _out = run_playbook(argv, env, sample=False)
                shutil.copytree(states["new"], states["0.1.0"])
            count_hosts(size, reset=True)
            wall, pss, _out = run_playbook(argv, env)
            remote, controller = count_hosts(size)
            with open(os.path.join(workdir, "report-" + tag, "conntrack-audit.json")) as handle:
                report = json.load(handle)
            assert report["summary"]["hosts"] == size and not report["missing_hosts"], report["summary"]
            assert all(h["deltas"]["baseline"] is not warm for h in report["hosts"])
            results[(role, size)] = {"wall": wall, "pss": pss, "remote": remote / float(size),
                                     "controller": controller / float(size), "report": report}
            print("  %-6s %-5s %3d hosts: timed run %6.1f s%s, %4.1f module runs/host on the host, %4.1f on the "
                  "controller, peak PSS %6.0f MiB" % (
                      label, role, size, wall, " (untimed first run %.1f s)" % first if first and role == "new" else "",
                      remote / float(size), controller / float(size), pss), flush=True)
    return results


def print_table(label, sizes, results):
    small = min(sizes)
    print("\n== %s: fleet audit ==" % label)
    print("%-7s %6s %10s %10s %7s   %-14s %-14s %s" % (
        "role", "hosts", "wall s", "marginal", "ratio", "runs/host", "ctl runs/host", "peak PSS MiB"))
    for size in sizes:
        for role in ("0.1.0", "new"):
            item = results[(role, size)]
            marginal = ((item["wall"] - results[(role, small)]["wall"]) / (size - small)) if size > small else None
            ratio = item["wall"] / results[("0.1.0", size)]["wall"]
            print("%-7s %6d %10.1f %10s %7.2f   %-14.1f %-14.1f %.0f" % (
                role, size, item["wall"], "%.2f s" % marginal if marginal is not None else "-", ratio, item["remote"],
                item["controller"], item["pss"]))
    for size in sizes:
        same = _comparable(results[("new", size)]["report"]) == _comparable(results[("0.1.0", size)]["report"])
        print("report content new == 0.1.0 at %d hosts (timestamps and counters aside): %s" % (size, same))


def _comparable(report):
    """The parts of a report that do not move between two runs minutes apart."""
    return sorted((h["host"], h["status"], h["usage"]["max"], json.dumps(h["states"], sort_keys=True),
                   json.dumps(h["nat"], sort_keys=True), sorted(f["id"] for f in h["findings"]))
                  for h in report["hosts"])


def namespace_fleet(args, collections, workdir):
    counter = Counter(os.path.join(workdir, "ns-counts"))
    controller = counter.wrapper("controller", sys.executable)
    lab = NetnsLab("bsc")
    hosts = {}
    try:
        start = time.monotonic()
        for index in range(max(args.sizes)):
            ns = lab.add("h%03d" % index)
            ns.sh(HOST_SETUP)
            hosts[ns.name] = counter.wrapper(ns.name, "ip netns exec %s /usr/bin/python3" % ns.name)
        names = sorted(hosts)
        print("%d namespace hosts ready in %.1f s" % (len(names), time.monotonic() - start), flush=True)

        def inventory_for(size):
            path = os.path.join(workdir, "ns-inventory-%d.json" % size)
            _write_inventory(path, dict((name, {"ansible_python_interpreter": hosts[name]}) for name in names[:size]),
                             {"ansible_connection": "local"}, controller)
            return path

        def count_hosts(size, reset=False):
            remote = sum(counter.take(name) for name in names)
            ctl = counter.take("controller")
            return remote, ctl

        results = audit_runs("netns", args.sizes, args.forks, inventory_for, count_hosts, collections, workdir)
        print_table("namespace hosts, local connection", args.sizes, results)
        return results
    finally:
        lab.close()


def podman_fleet(args, collections, workdir):
    counter = Counter(os.path.join(workdir, "podman-counts"))
    controller = counter.wrapper("controller", sys.executable)
    size = max(args.podman_sizes)
    env = _env(collections["new"])
    try:
        start = time.monotonic()
        subprocess.run([LAB_SH, "up", "-n", str(size), "-p", PODMAN_PREFIX], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL)
        names = ["%s-%d" % (PODMAN_PREFIX, i) for i in range(1, size + 1)]
        for name in names:
            subprocess.run(["podman", "exec", "-i", name, "sh", "-ec",
                            "cat > %s && chmod 755 %s" % (CONTAINER_WRAPPER, CONTAINER_WRAPPER)],
                           input='#!/bin/sh\necho x >> /tmp/ngct-bench-count\nexec /usr/bin/python3 "$@"\n',
                           env=env, check=True, text=True, stdout=subprocess.DEVNULL)
            subprocess.run(["podman", "exec", "-i", name, "sh", "-e"], input=HOST_SETUP, env=env, check=True,
                           text=True, stdout=subprocess.DEVNULL)
        print("%d podman lab hosts ready in %.1f s" % (size, time.monotonic() - start), flush=True)
    except subprocess.CalledProcessError as exc:
        subprocess.run([LAB_SH, "down", "-p", PODMAN_PREFIX], cwd=ROOT, env=env, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print("podman lab of %d hosts could not be brought up (%s): podman part skipped" % (size, exc))
        return None
    try:
        def inventory_for(count):
            path = os.path.join(workdir, "podman-inventory-%d.json" % count)
            _write_inventory(path, dict((name, {}) for name in names[:count]),
                             {"ansible_connection": "containers.podman.podman", "ansible_user": "root",
                              "ansible_python_interpreter": CONTAINER_WRAPPER}, controller)
            return path

        def count_hosts(count, reset=False):
            remote = 0
            for name in names:
                proc = subprocess.run(["podman", "exec", name, "sh", "-c",
                                       "wc -l < /tmp/ngct-bench-count 2>/dev/null || echo 0; rm -f /tmp/ngct-bench-count"],
                                      env=env, capture_output=True, text=True, check=False)
                remote += int((proc.stdout.strip() or "0").splitlines()[0])
            return remote, counter.take("controller")

        results = audit_runs("podman", args.podman_sizes, args.forks, inventory_for, count_hosts, collections, workdir,
                             warm=args.podman_warm)
        kind = "second run" if args.podman_warm else "first run: a baseline, no previous counters"
        print_table("podman lab hosts (%s)" % kind, args.podman_sizes, results)
        return results
    finally:
        subprocess.run([LAB_SH, "down", "-p", PODMAN_PREFIX], cwd=ROOT, env=env, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


FILL = r"""
import socket, sys
start, stop = int(sys.argv[1]), int(sys.argv[2])
s = None
for i in range(start, stop):
    if s is None or i % 60000 == 0:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0))
    host = i // 200
    try:
        s.sendto(b"x", ("127.1.%d.%d" % (host // 256, host % 256), 1000 + i % 200))
    except OSError:
        pass
"""

STATS = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import audit_collect, dump, entries
mode = sys.argv[1]
if mode == "collect":
    result = audit_collect.read_entry_statistics()
    out = {"states": result["states"], "nat": result["nat"], "scanned": result["scanned"]}
else:  # the 0.1.0 role's three queries: proto/state groups, then status dnat, then status snat
    scan, _ = dump.query(entries.EntryFilter.from_params({}), group_by=["proto", "state"], limit=0)
    nat = dict((k, dump.query(entries.EntryFilter.from_params({"status": [k]}), limit=0)[0].matched)
               for k in ("dnat", "snat"))
    out = {"states": scan.group_list(0), "nat": nat, "scanned": scan.scanned}
out["seconds"] = time.perf_counter() - t0
out["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(out))
"""


def _timed(argv, env=None):
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env or C_ENV, capture_output=True, text=True, check=False, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit("%s failed: %s" % (argv, proc.stderr[-2000:]))
    return time.perf_counter() - start, proc.stdout


def med(values):
    return sorted(values)[len(values) // 2]


def entry_statistics(args):
    with host_knobs_guard() as knobs:
        max_path = "/proc/sys/net/netfilter/nf_conntrack_max"
        before = int(knobs.get(max_path, "262144"))
        wanted = int(args.entries * 1.1)
        lab = NetnsLab("bent")
        try:
            if wanted > before:
                with open(max_path, "w") as handle:
                    handle.write(str(wanted))
            ns = lab.add("big")
            ns.run(["sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=3600"])
            env = dict(C_ENV, PYTHONPATH=COLLECTIONS_PATH)
            python = ns.argv([sys.executable, "-c", STATS])
            _timed(ns.argv([sys.executable, "-c", FILL, "0", "10000"]))
            small = json.loads(_timed(python + ["collect"], env)[1])
            start = time.perf_counter()
            step = 250000
            for first in range(10000, args.entries, step):
                _timed(ns.argv([sys.executable, "-c", FILL, str(first), str(min(args.entries, first + step))]))
            count = int(ns.run(["conntrack", "-C"]).stdout.strip())
            print("\n== entry statistics on %d entries (max raised %d -> %d for the run; filled in %.0f s) ==" % (
                count, before, max(before, wanted), time.perf_counter() - start), flush=True)
            ct, ours, legacy, rss = [], [], [], []
            result = None
            for _run in range(args.runs):
                ct.append(_timed(ns.argv(["sh", "-c", "conntrack -L > /dev/null 2>&1"]))[0])
                seconds, out = _timed(python + ["collect"], env)
                result = json.loads(out)
                ours.append(seconds)
                rss.append(result["maxrss_kb"])
                legacy.append(_timed(python + ["legacy"], env)[0])
            print("  conntrack -L > /dev/null                          %7.2f s" % med(ct))
            print("  collect: one dump, proto/state/dnat/snat (process) %7.2f s   ratio %.2fx vs conntrack -L "
                  "(target <= 1.2x)" % (med(ours), med(ours) / med(ct)))
            print("  0.1.0 role: three dumps (states, dnat, snat)       %7.2f s   ratio %.2fx" % (
                med(legacy), med(legacy) / med(ct)))
            print("  entries counted %d, states %s, nat %s" % (result["scanned"], result["states"][:3], result["nat"]))
            print("  peak RSS: %.1f MiB at %d entries, %.1f MiB at %d entries (growth %.1f MiB)" % (
                small["maxrss_kb"] / 1024.0, small["scanned"], min(rss) / 1024.0, result["scanned"],
                (min(rss) - small["maxrss_kb"]) / 1024.0))
        finally:
            lab.close()  # the namespace (and its table) goes before the knob is restored by the guard


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,20,100")
    parser.add_argument("--podman-sizes", default="1,20,100")
    parser.add_argument("--forks", type=int, default=20)
    parser.add_argument("--entries", type=int, default=1000000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-podman", action="store_true")
    parser.add_argument("--skip-entries", action="store_true")
    parser.add_argument("--skip-netns", action="store_true")
    parser.add_argument("--podman-warm", action="store_true", help="time a second podman run, not the first")
    args = parser.parse_args()
    args.sizes = sorted(int(v) for v in args.sizes.split(","))
    args.podman_sizes = sorted(int(v) for v in args.podman_sizes.split(","))
    if os.geteuid() != 0:
        raise SystemExit("run as root (namespaces, podman, a host knob)")
    print("kernel %s, %d CPUs, load average %s" % (os.uname().release, os.cpu_count(),
                                                   " ".join(open("/proc/loadavg").read().split()[:3])), flush=True)
    workdir = tempfile.mkdtemp(prefix="bench-audit-")
    try:
        collections = {"new": COLLECTIONS_PATH, "legacy": legacy_collection(os.path.join(workdir, "legacy"))}
        if not args.skip_netns:
            namespace_fleet(args, collections, workdir)
        if not args.skip_podman:
            podman_fleet(args, collections, workdir)
        if not args.skip_entries:
            entry_statistics(args)
        print("\nload average after: %s" % " ".join(open("/proc/loadavg").read().split()[:3]))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
