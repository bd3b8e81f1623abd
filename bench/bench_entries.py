"""Benchmark conntrack entry queries (not a test: prints figures and ratios, asserts nothing about time).

Run as root from the repository root:  .venv/bin/python bench/bench_entries.py [--entries 200000] [--runs 5]

1. A fresh network namespace gets --small entries (10,000), then is filled to --entries (200,000) with UDP over its
   loopback to 1000 addresses x 200 ports (127.1.x.y), udp_timeout raised inside the namespace so the table
   holds still. The host-knob lock (host_knobs_guard) is held while the big table exists.
2. Dump + group_by state, no entries returned, in a child process (what a module run costs) and in process,
   against `conntrack -L > /dev/null` (medians of --runs, interleaved). Target <= 1.5x, aim for parity.
3. The same against pyroute2's Conntrack().dump() (once, it is slow). Target >= 20x faster.
4. A filtered query for one destination address against `conntrack -L -d ADDR`.
5. Peak RSS (ru_maxrss of the child) of the group_by query at --small and at --entries entries: growth
   should stay below 30 MB since no entries are returned.
6. conntrack_flush of every entry (by filter) against `conntrack -D` on the refilled table.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "kernel"))

from netns_lab import C_ENV, COLLECTIONS_PATH, NetnsLab, host_knobs_guard  # noqa: E402

# entry i goes to 127.1.(i // 200 // 256).(i // 200 % 256) port 1000 + i % 200, from one socket per 60000
FILL = r"""
import socket, sys, time
start, stop = int(sys.argv[1]), int(sys.argv[2])
t0 = time.perf_counter()
s = None
for i in range(start, stop):
    if s is None or i % 60000 == 0:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0))
    host = i // 200
    try:
        s.sendto(b"x", ("127.1.%d.%d" % (host // 256, host % 256), 1000 + i % 200))
    except OSError:
        pass
print(time.perf_counter() - t0)
"""

QUERY = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.dump import query
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.entries import EntryFilter
params = json.loads(sys.argv[1])
group_by = params.pop("group_by", None)
t1 = time.perf_counter()
scan, info = query(EntryFilter.from_params(params), group_by=group_by, limit=0)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "query_s": t2 - t1, "matched": scan.matched, "scanned": scan.scanned,
                  "groups": scan.group_list(0), "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

PYROUTE2 = r"""
import time
t0 = time.perf_counter()
from pyroute2 import Conntrack
t1 = time.perf_counter()
ct = Conntrack()
n = sum(1 for _ in ct.dump())
ct.close()
print(n, time.perf_counter() - t1, t1 - t0)
"""


def wall(argv, env=None):
    """Wall time of one child process; returns (seconds, stdout, peak RSS in KiB of that child)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env or C_ENV)
    out = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit("command failed (rc=%d): %r" % (proc.returncode, argv[:6]))
    return elapsed, out.decode(), usage.ru_maxrss


def ours(ns, params):
    env = dict(C_ENV, PYTHONPATH=COLLECTIONS_PATH)
    seconds, out, rss = wall(ns.argv([sys.executable, "-c", QUERY, json.dumps(params)]), env=env)
    result = json.loads(out)
    result["wall_s"] = seconds
    result["child_maxrss_kb"] = rss
    return result


def conntrack_l(ns, *args):
    # the same redirection a shell `conntrack -L > /dev/null` does; conntrack still formats every line
    argv = ns.argv(["sh", "-c", "conntrack -L %s > /dev/null 2>&1" % " ".join(args)])
    return wall(argv)[0]


def fill(ns, start, stop):
    out = ns.run([sys.executable, "-c", FILL, str(start), str(stop)], timeout=600).stdout
    return float(out)


def count(ns):
    return int(ns.run(["cat", "/proc/sys/net/netfilter/nf_conntrack_count"]).stdout)


def med(values):
    return statistics.median(values)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200000)
    parser.add_argument("--small", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-pyroute2", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (it creates a network namespace)")

    with host_knobs_guard() as knobs:
        max_entries = int(knobs.get("/proc/sys/net/netfilter/nf_conntrack_max", "262144"))
        if args.entries > max_entries * 0.95:
            raise SystemExit("nf_conntrack_max is %d: --entries %d would not fit" % (max_entries, args.entries))
        lab = NetnsLab("bench")
        try:
            ns = lab.add("entries")
            ns.run(["sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=3600"])
            print("kernel %s, Python %s, %d CPUs" % (os.uname().release, sys.version.split()[0], os.cpu_count()))

            # small table: RSS baseline
            fill(ns, 0, args.small)
            small_count = count(ns)
            small = [ours(ns, {"group_by": ["state"]}) for _run in range(3)]
            small_rss = min(r["child_maxrss_kb"] for r in small)
            print("\n%d entries: group_by state child peak RSS %.1f MiB (query %.1f ms)"
                  % (small_count, small_rss / 1024.0, 1000 * med([r["query_s"] for r in small])))

            fill_s = fill(ns, args.small, args.entries)
            total = count(ns)
            print("filled to %d entries in %.2f s" % (total, fill_s))

            # 2. dump + group_by state vs conntrack -L, interleaved
            ct_times, child_times, inproc_times, rss = [], [], [], []
            result = None
            for _run in range(args.runs):
                ct_times.append(conntrack_l(ns))
                result = ours(ns, {"group_by": ["state"]})
                child_times.append(result["wall_s"])
                inproc_times.append(result["query_s"])
                rss.append(result["child_maxrss_kb"])
            print("\n== dump + group_by state, no entries returned (%d entries, median of %d) ==" % (total, args.runs))
            print("  conntrack -L > /dev/null        %7.1f ms" % (1000 * med(ct_times)))
            print("  ours, child process (wall)      %7.1f ms   ratio %.2fx  (target <= 1.5x)"
                  % (1000 * med(child_times), med(child_times) / med(ct_times)))
            inproc = med(inproc_times)
            print("  ours, in process (query only)   %7.1f ms   ratio %.2fx" % (1000 * inproc, inproc / med(ct_times)))
            print("  groups: %s" % result["groups"])
            module_times = []
            for _run in range(3):
                t0 = time.perf_counter()
                module = ns.run_module("conntrack_info", {"group_by": ["state"], "limit": 0})
                module_times.append(time.perf_counter() - t0)
                assert module["_rc"] == 0, module
            print("  conntrack_info module run (AnsibleModule, JSON in/out) %7.1f ms   ratio %.2fx"
                  % (1000 * med(module_times), med(module_times) / med(ct_times)))
            heavy = [ours(ns, {"group_by": ["orig_dst", "proto"]}) for _run in range(3)]
            print("  ours, group_by orig_dst+proto (%d groups; tuple decoded), in process %7.1f ms"
                  % (len(heavy[0]["groups"]), 1000 * med([h["query_s"] for h in heavy])))
            assert result["matched"] == total or abs(result["matched"] - total) < 50, (result["matched"], total)

            # 3. pyroute2, once
            if not args.no_pyroute2:
                env = dict(C_ENV)
                seconds, out, _rss = wall(ns.argv([sys.executable, "-c", PYROUTE2]), env=env)
                n, dump_s, import_s = out.split()
                print("\n== pyroute2 %s Conntrack().dump() (once) ==" % "0.9.7")
                print("  %s entries in %.2f s (+ import %.0f ms; process wall %.2f s)"
                      % (n, float(dump_s), 1000 * float(import_s), seconds))
                print("  ours is %.1fx faster in process, %.1fx as child processes (target >= 20x)"
                      % (float(dump_s) / med(inproc_times), seconds / med(child_times)))

            # 4. filtered query for one address
            addr = "127.1.0.77"
            ct_f, ours_f, ours_f_in, ours_u = [], [], [], []
            for _run in range(args.runs):
                ct_f.append(conntrack_l(ns, "-d", addr))
                r = ours(ns, {"orig_dst": [addr]})
                ours_f.append(r["wall_s"])
                ours_f_in.append(r["query_s"])
                ours_u.append(ours(ns, {"reply_src": [addr]})["query_s"])
            print("\n== filtered: one destination address (%d of %d entries match) ==" % (r["matched"], total))
            print("  conntrack -L -d %s        %7.1f ms" % (addr, 1000 * med(ct_f)))
            filtered = med(ours_f)
            print("  ours orig_dst, child (wall)     %7.1f ms   ratio %.2fx" % (1000 * filtered, filtered / med(ct_f)))
            print("  ours orig_dst, in process       %7.1f ms   (kernel-side CTA_FILTER)" % (1000 * med(ours_f_in)))
            print("  ours reply_src, in process      %7.1f ms   (userspace match on every entry)"
                  % (1000 * med(ours_u)))

            # 5. memory
            big_rss = min(rss)
            print("\n== peak RSS of the group_by child (no entries returned) ==")
            print("  %7d entries: %6.1f MiB" % (small_count, small_rss / 1024.0))
            print("  %7d entries: %6.1f MiB   growth %.1f MiB (target < 30 MB)"
                  % (total, big_rss / 1024.0, (big_rss - small_rss) / 1024.0))

            # 6. flush everything matching, against conntrack -D (one delete per entry as well)
            t0 = time.perf_counter()
            flushed = ns.run_module("conntrack_flush", {"proto": "udp", "orig_dst": ["127.1.0.0/16"], "sample": 0})
            flush_s = time.perf_counter() - t0
            assert flushed["_rc"] == 0, flushed
            fill(ns, 0, args.entries)
            refilled = count(ns)
            cd_s = wall(ns.argv(["sh", "-c", "conntrack -D -p udp > /dev/null 2>&1"]))[0]
            print("\n== flush (module run, deletes by tuple + zone + id in batches of 128) ==")
            print("  conntrack_flush proto=udp orig_dst=127.1.0.0/16: %d deleted in %7.1f ms"
                  % (flushed["deleted"], 1000 * flush_s))
            print("  conntrack -D -p udp (%d entries)                 %7.1f ms   ratio %.2fx"
                  % (refilled, 1000 * cd_s, flush_s / cd_s))
        finally:
            lab.close()


if __name__ == "__main__":
    main()
