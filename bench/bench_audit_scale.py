"""Benchmark (not a test): the fleet audit (nodeguard.conntrack.audit) on 20 podman lab hosts with forks >= 20.

    .venv/bin/python bench/bench_audit_scale.py [--hosts 20] [--forks 20] [--reps 1]

Brings up the hosts with scripts/lab.sh up -n N -p ngct-scale (Debian 12 and 13 alternating), puts a conntrack rule
and a little real traffic on each (held TCP connections over loopback), then times:
  - the audit of one host alone (the per-run floor: controller start, report rendering),
  - the audit of the whole fleet with --forks F (first run = baseline, and a second run that computes deltas),
and prints the fleet wall time, the per-host cost (fleet wall time / hosts) and the marginal cost of a host
((fleet - single) / (hosts - 1)). The lab is torn down afterwards, also on failure. Figures are reported, never
asserted; they depend on the machine's load (podman exec per task dominates).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAB_SH = os.path.join(ROOT, "scripts", "lab.sh")
PREFIX = "ngct-scale"
PLAYBOOK = os.path.join(ROOT, ".venv", "bin", "ansible-playbook")
TRAFFIC = (
    "import os, socket, time\n"
    "srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "srv.bind(('127.0.0.1', 8080)); srv.listen(64)\n"
    "c = [socket.create_connection(('127.0.0.1', 8080), timeout=5) for _ in range(10)]\n"
    "p = [srv.accept()[0] for _ in c]\n"
    "if os.fork() == 0:\n"
    "    os.setsid(); time.sleep(900)\n"
)


def _env():
    env = dict(os.environ)
    env.update({
        "PATH": os.path.join(ROOT, ".venv", "bin") + os.pathsep + env.get("PATH", ""),
        "ANSIBLE_COLLECTIONS_PATH": "%s:%s" % (os.path.join(ROOT, ".build", "collections"),
                                               os.path.join(ROOT, ".build", "test-collections")),
        "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false",
        "CONTAINERS_CONF": env.get("CONTAINERS_CONF", os.path.join(ROOT, ".build", "containers.conf")),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_HOST_KEY_CHECKING": "false",
    })
    return env


def _run(argv, **kwargs):
    proc = subprocess.run(argv, cwd=ROOT, env=_env(), capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit("command failed: %s" % " ".join(argv))
    return proc


def _audit(inventory, workdir, forks, limit=None, tag="fleet"):
    argv = [PLAYBOOK, "-i", inventory, "nodeguard.conntrack.audit", "--forks", str(forks),
            "-e", "conntrack_audit_report_dir=%s/%s" % (workdir, tag),
            "-e", "conntrack_audit_state_dir=%s/state-%s" % (workdir, tag)]
    if limit:
        argv += ["--limit", limit]
    start = time.monotonic()
    _run(argv)
    elapsed = time.monotonic() - start
    with open(os.path.join(workdir, tag, "conntrack-audit.json")) as handle:
        report = json.load(handle)
    return elapsed, report


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--forks", type=int, default=20)
    args = parser.parse_args()
    if args.forks < args.hosts:
        print("note: forks (%d) below hosts (%d): hosts run in rounds" % (args.forks, args.hosts))
    workdir = tempfile.mkdtemp(prefix="bench-audit-")
    inventory = os.path.join(ROOT, ".lab", PREFIX, "inventory.yml")
    try:
        start = time.monotonic()
        _run([LAB_SH, "up", "-n", str(args.hosts), "-p", PREFIX])
        up = time.monotonic() - start
        names = ["%s-%d" % (PREFIX, i) for i in range(1, args.hosts + 1)]
        for name in names:
            _run(["podman", "exec", name, "iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate",
                  "ESTABLISHED,RELATED", "-j", "ACCEPT"])
            _run(["podman", "exec", name, "python3", "-c", TRAFFIC])
        single, single_report = _audit(inventory, workdir, 1, limit=names[0], tag="single")
        first, first_report = _audit(inventory, workdir, args.forks, tag="fleet")
        second, second_report = _audit(inventory, workdir, args.forks, tag="fleet")
        assert len(first_report["hosts"]) == args.hosts and not first_report["missing_hosts"], first_report["summary"]
        assert all(not h["deltas"]["baseline"] for h in second_report["hosts"])
        print("lab up: %d hosts in %.1f s" % (args.hosts, up))
        print("audit, 1 host:                         %6.1f s wall" % single)
        for label, wall in (("audit, fleet, first run (baseline)", first), ("audit, fleet, second run (deltas)", second)):
            print("%-38s %6.1f s wall, %.2f s per host, marginal %.2f s per extra host (forks %d)"
                  % (label + ":", wall, wall / args.hosts, (wall - single) / max(1, args.hosts - 1), args.forks))
        print("fleet status %s; entries per host %s" % (second_report["summary"]["status"], sorted(set(
            h["usage"]["count"] for h in second_report["hosts"]))))
        print("load average after: %s" % open("/proc/loadavg").read().split()[:3])
    finally:
        subprocess.run([LAB_SH, "down", "-p", PREFIX], cwd=ROOT, env=_env(), check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
