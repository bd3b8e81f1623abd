"""Benchmark (not a test): the conntrack_tuning role vs a naive play that sets the same knobs with one
ansible.posix.sysctl task per knob, on the same podman lab hosts, first run and idempotent rerun.

    .venv/bin/python bench/bench_tuning.py [--reps 3] [--hosts 2]

Each repetition starts from fresh lab hosts (scripts/lab.sh up) for the first run. The naive play is
given every advantage: the knob values are precomputed, no facts are gathered, and host-scope knobs
(read-only in a container, where ansible.posix.sysctl would fail) are only persisted, not set live.
Prints medians and the ratio role/naive (target <= 0.3). Exit status is non-zero when the lab cannot
be brought up or a run fails; the ratio itself is reported, never asserted.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAB_SH = os.path.join(ROOT, "scripts", "lab.sh")
PREFIX = "tuning-bench"
COLLECTIONS = "%s:%s" % (os.path.join(ROOT, ".build", "collections"), os.path.join(ROOT, ".build", "test-collections"))
PLAYBOOK = os.path.join(ROOT, ".venv", "bin", "ansible-playbook")

ROLE_VARS = {
    "conntrack_tuning_peak_flows": 100000,
    "conntrack_tuning_new_flows_per_second": 1000,
    "conntrack_tuning_avg_flow_lifetime": 150,
    "conntrack_tuning_timeout_profile": "udp_heavy",
    "conntrack_tuning_timeouts": {"tcp_timeout_close_wait": 1800},
    "conntrack_tuning_knobs": {"tcp_be_liberal": 1, "tcp_timeout_time_wait": 60},
}


def _env():
    env = dict(os.environ)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": COLLECTIONS,
        "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false",
        "CONTAINERS_CONF": os.path.join(ROOT, ".build", "containers.conf"),
        "ANSIBLE_NOCOLOR": "true",
        "ANSIBLE_HOST_KEY_CHECKING": "false",
        "ANSIBLE_RETRY_FILES_ENABLED": "false",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    })
    return env


def lab(cmd, hosts):
    argv = [LAB_SH, cmd, "-p", PREFIX]
    if cmd == "up":
        argv += ["-n", str(hosts)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=_env(), check=False)
    if proc.returncode != 0:
        raise SystemExit("bench_tuning: `%s` failed (rc=%d): %s%s" % (" ".join(argv), proc.returncode, proc.stdout, proc.stderr))


def settings():
    """The knob values the role will compute (same code), for the naive play."""
    sys.path.insert(0, os.path.join(ROOT, ".build", "collections"))
    from ansible_collections.nodeguard.conntrack.plugins.plugin_utils._sizing import size  # noqa: E402
    from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.knobs import HOST_KNOBS  # noqa: E402

    spec = dict((k[len("conntrack_tuning_"):], v) for k, v in ROLE_VARS.items())
    # memory and CPUs only change max/buckets, which the naive play cannot set live in a container anyway
    spec.update(memory_mb=2048, cpus=2)
    return size(spec)["settings"], HOST_KNOBS


def write_playbooks(directory, knob_values, host_knobs, with_facts):
    import json
    os.makedirs(directory)
    role = [{"name": "Role", "hosts": "all", "gather_facts": False, "tasks": [
        {"name": "Tune", "ansible.builtin.include_role": {"name": "nodeguard.conntrack.conntrack_tuning"},
         "vars": dict(ROLE_VARS, **({} if with_facts else {"conntrack_tuning_memory_mb": 2048, "conntrack_tuning_cpus": 2}))}]}]
    tasks = []
    for short, value in sorted(knob_values.items()):
        live = short not in host_knobs
        tasks.append({"name": "Set %s" % short, "ansible.posix.sysctl": {
            "name": "net.netfilter.nf_conntrack_" + short, "value": str(value),
            # host-scope keys in a file of their own: `sysctl -p` on a file holding them fails in a container
            "sysctl_file": "/etc/sysctl.d/90-naive-conntrack.conf" if live else "/etc/sysctl.d/89-naive-conntrack-host.conf",
            "sysctl_set": live, "reload": live, "state": "present"}})
    naive = [{"name": "Naive", "hosts": "all", "gather_facts": False, "tasks": tasks}]
    paths = {}
    for name, play in (("role", role), ("naive", naive)):
        paths[name] = os.path.join(directory, name + ".yml")
        with open(paths[name], "w") as handle:
            json.dump(play, handle)  # JSON is YAML
    return paths


def timed_run(playbook, inventory):
    start = time.monotonic()
    proc = subprocess.run([PLAYBOOK, "-i", inventory, playbook], capture_output=True, text=True, env=_env(), check=False)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit("bench_tuning: %s failed (rc=%d)\n%s\n%s" % (playbook, proc.returncode, proc.stdout[-4000:], proc.stderr[-2000:]))
    recap = [line for line in proc.stdout.splitlines() if "changed=" in line and "ok=" in line]
    changed = sum(int(line.split("changed=")[1].split()[0]) for line in recap)
    return elapsed, changed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--hosts", type=int, default=2)
    args = parser.parse_args()
    if not os.access(LAB_SH, os.X_OK) or shutil.which("podman") is None:
        print("bench_tuning: the podman lab is not available (need scripts/lab.sh and podman; run `make bootstrap`)")
        return 2
    knob_values, host_knobs = settings()
    inventory = os.path.join(ROOT, ".lab", PREFIX, "inventory.yml")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-tuning-") as tmp:
        gathers = write_playbooks(os.path.join(tmp, "gathers"), knob_values, host_knobs, True)
        given = write_playbooks(os.path.join(tmp, "given"), knob_values, host_knobs, False)
        variants = [("naive ansible.posix.sysctl", gathers["naive"]),
                    ("role (gathers facts)", gathers["role"]),
                    ("role (facts given)", given["role"])]
        try:
            for rep in range(args.reps):
                for name, playbook in variants:
                    lab("up", args.hosts)
                    first, changed_first = timed_run(playbook, inventory)
                    rerun, changed_rerun = timed_run(playbook, inventory)
                    entry = results.setdefault(name, {"first": [], "rerun": [], "changed": []})
                    entry["first"].append(first)
                    entry["rerun"].append(rerun)
                    entry["changed"].append((changed_first, changed_rerun))
                    print("rep %d %-28s first %6.2f s (changed=%d)  rerun %6.2f s (changed=%d)"
                          % (rep + 1, name, first, changed_first, rerun, changed_rerun), flush=True)
        finally:
            lab("down", args.hosts)
    naive = results["naive ansible.posix.sysctl"]
    print()
    print("%d lab hosts, %d knobs (%d per-netns set live, %d host-scope persisted only by the naive play), median of %d"
          % (args.hosts, len(knob_values), len([k for k in knob_values if k not in host_knobs]),
             len([k for k in knob_values if k in host_knobs]), args.reps))
    print("%-28s %10s %10s %12s %12s" % ("variant", "first s", "rerun s", "first ratio", "rerun ratio"))
    for name in results:
        first = statistics.median(results[name]["first"])
        rerun = statistics.median(results[name]["rerun"])
        first_ratio = first / statistics.median(naive["first"])
        rerun_ratio = rerun / statistics.median(naive["rerun"])
        print("%-28s %10.2f %10.2f %12.2f %12.2f" % (name, first, rerun, first_ratio, rerun_ratio))
    print("ratios are role / naive; target <= 0.30")
    idempotent = all(c[1] == 0 for r in results.values() for c in r["changed"])
    print("idempotent reruns (changed=0 everywhere): %s" % idempotent)
    return 0 if idempotent else 1


if __name__ == "__main__":
    sys.exit(main())
