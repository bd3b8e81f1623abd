"""Benchmark conntrack_facts (not a test: prints figures and ratios, asserts nothing about time).

Run as root from the repository root:  .venv/bin/python bench/bench_facts.py [--entries 200000] [--runs 50]

1. Fills a fresh network namespace with --entries conntrack entries (UDP to many ports over its loopback),
   holding the host-knob lock (host_knobs_guard) while the big table exists.
2. In that namespace: in-process gather time of every subset except events (median of --runs) against
   `conntrack -S` + `conntrack -C` run as processes (median), with the ratio. Target: <= 5 ms whatever the size.
3. If podman lab images exist: brings up one lab host of its own (scripts/lab.sh, prefix facts-bench), measures
   the module round trip through Ansible against `ansible.builtin.command: cat .../nf_conntrack_count`
   (median of --ansible-runs), prints the ratio (target <= 1.3x) and removes the lab host. Otherwise it says
   so and skips that part.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "kernel"))

from netns_lab import COLLECTIONS_PATH, NetnsLab, host_knobs_guard  # noqa: E402

LAB_PREFIX = "facts-bench"

FILL = r"""
import socket, sys, time
total, first = int(sys.argv[1]), 1024
per_socket = 60000
t0 = time.perf_counter()
sent = refused = 0
sock_index = 0
while sent + refused < total:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    for port in range(first, first + min(per_socket, total - sent - refused)):
        try:
            s.sendto(b"x", ("127.0.0.1", port)); sent += 1
        except OSError:
            refused += 1
    s.close()
print(sent, refused, time.perf_counter() - t0)
"""

GATHER = r"""
import json, statistics, subprocess, sys, time
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import facts as _ct_facts
runs, tool_runs = int(sys.argv[1]), int(sys.argv[2])
subsets = _ct_facts.resolve_subsets(["all", "!events"])
times = []
for _ in range(runs):
    t0 = time.perf_counter()
    facts, warnings = _ct_facts.gather(subsets)
    times.append((time.perf_counter() - t0) * 1000)
tools = []
for _ in range(tool_runs):  # conntrack-tools as processes, started from inside the namespace like the module
    t0 = time.perf_counter()
    subprocess.run(["conntrack", "-S"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    subprocess.run(["conntrack", "-C"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    tools.append((time.perf_counter() - t0) * 1000)
print(json.dumps({"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times),
                  "tools_ms": statistics.median(tools), "count": facts["limits"]["count"],
                  "counters_source": facts["counters_source"]}))
"""


def median_process_ms(argv, runs):
    times = []
    for _run in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def in_namespace_part(args):
    lab = NetnsLab("ngbf")
    try:
        with host_knobs_guard():
            with open("/proc/sys/net/netfilter/nf_conntrack_max") as handle:
                maximum = int(handle.read())
            if maximum and maximum < args.entries + 1000:
                print("nf_conntrack_max is %d, below the %d entries asked for: not filling" % (maximum, args.entries))
                return
            ns = lab.add("big")
            ns.run(["iptables", "-w", "-A", "INPUT", "-m", "conntrack", "--ctstate", "NEW", "-j", "ACCEPT"])
            ns.run(["sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=900"])

            def measure(label):
                env = dict(os.environ, PYTHONPATH=COLLECTIONS_PATH, LC_ALL="C")
                out = subprocess.run(ns.argv([sys.executable, "-c", GATHER, str(args.runs), str(args.tool_runs)]),
                                     capture_output=True, text=True, env=env, check=True).stdout
                res = json.loads(out)
                print("%-16s gather (all subsets but events, in process, median of %d): %.3f ms "
                      "(min %.3f, max %.3f; counters via %s)"
                      % (label, args.runs, res["median_ms"], res["min_ms"], res["max_ms"], res["counters_source"]))
                print("%-16s conntrack -S + conntrack -C as processes (median of %d): %.2f ms; "
                      "ratio gather / tools = %.3f"
                      % (label, args.tool_runs, res["tools_ms"], res["median_ms"] / res["tools_ms"]))

            measure("empty table")
            fill = ns.python(FILL.replace("sys.argv[1]", str(args.entries)), timeout=600)
            if fill.returncode != 0:
                raise SystemExit("fill failed: %s" % fill.stderr)
            sent, refused, seconds = fill.stdout.split()
            count = int(ns.run(["cat", "/proc/sys/net/netfilter/nf_conntrack_count"]).stdout)
            print("filled: %s packets sent, %s refused in %.2f s; nf_conntrack_count=%d"
                  % (sent, refused, float(seconds), count))
            measure("%d entries" % count)
    finally:
        lab.close()


def ansible_part(args):
    images = subprocess.run(["podman", "images", "--format", "{{.Repository}}"], capture_output=True, text=True,
                            check=False).stdout.split() if shutil.which("podman") else []
    if "localhost/nodeguard-debian12" not in images:
        print("SKIPPED Ansible round trip: no podman lab image localhost/nodeguard-debian12 (run `make bootstrap`)")
        return
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", os.path.join(ROOT, ".build", "containers.conf"))
    env["ANSIBLE_COLLECTIONS_PATH"] = "%s:%s" % (COLLECTIONS_PATH, os.path.join(ROOT, ".build", "test-collections"))
    env["ANSIBLE_COLLECTIONS_SCAN_SYS_PATH"] = "false"
    env["ANSIBLE_HOST_KEY_CHECKING"] = "false"
    ansible = os.path.join(os.path.dirname(sys.executable), "ansible")
    up = subprocess.run([os.path.join(ROOT, "scripts", "lab.sh"), "up", "-n", "1", "-p", LAB_PREFIX, "--images",
                         "debian12"], capture_output=True, text=True, env=env, check=False)
    try:
        if up.returncode != 0:
            print("SKIPPED Ansible round trip: lab host did not start: %s" % (up.stderr.strip()[-300:]))
            return
        inventory = os.path.join(ROOT, ".lab", LAB_PREFIX, "inventory.yml")
        base = [ansible, "-i", inventory, "all", "-o"]
        module = base + ["-m", "nodeguard.conntrack.conntrack_facts"]
        command = base + ["-m", "ansible.builtin.command", "-a", "cat /proc/sys/net/netfilter/nf_conntrack_count"]
        for argv in (module, command):  # warm-up, and proof both work
            proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
            if proc.returncode != 0:
                print("SKIPPED Ansible round trip: %s failed: %s" % (argv[-1], (proc.stdout + proc.stderr)[-400:]))
                return
        samples = {"module": [], "command": []}
        for _run in range(args.ansible_runs):  # interleaved, so machine load hits both alike
            for name, argv in (("module", module), ("command", command)):
                t0 = time.perf_counter()
                subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True)
                samples[name].append(time.perf_counter() - t0)
        mod, cmd = statistics.median(samples["module"]), statistics.median(samples["command"])
        print("Ansible round trip on lab host (podman connection, median of %d): conntrack_facts %.3f s, "
              "command cat nf_conntrack_count %.3f s; ratio %.3f (target <= 1.3)"
              % (args.ansible_runs, mod, cmd, mod / cmd))
    finally:
        subprocess.run([os.path.join(ROOT, "scripts", "lab.sh"), "down", "-p", LAB_PREFIX], capture_output=True,
                       env=env, check=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200000)
    parser.add_argument("--runs", type=int, default=50, help="in-process gather repetitions")
    parser.add_argument("--tool-runs", type=int, default=15, help="conntrack -S/-C repetitions")
    parser.add_argument("--ansible-runs", type=int, default=5)
    parser.add_argument("--skip-ansible", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_facts.py must run as root (it creates a network namespace)")
    print("kernel %s, %d CPUs" % (os.uname().release, os.cpu_count()))
    in_namespace_part(args)
    if args.skip_ansible:
        print("SKIPPED Ansible round trip: --skip-ansible")
    else:
        ansible_part(args)


if __name__ == "__main__":
    main()
