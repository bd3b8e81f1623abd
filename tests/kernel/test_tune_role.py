"""The conntrack_tuning role end to end on the test machine's init netns (where host-scope knobs are
writable), under host_knobs; files go to a temporary directory. --check --diff first (plan, rationale,
nothing written), then a real run, then an idempotent rerun."""
import json
import os
import subprocess
import sys

from netns_lab import C_ENV, COLLECTIONS_PATH, REPO_ROOT
from tune_helpers import file_args, knob

PLAYBOOK = os.path.join(REPO_ROOT, ".venv", "bin", "ansible-playbook")


def _play(tmp_path, extra_vars, *flags):
    files = file_args(tmp_path)
    role_vars = dict(("conntrack_tuning_" + k, v) for k, v in files.items())
    role_vars.update(extra_vars)
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "Tune", "ansible.builtin.include_role": {"name": "nodeguard.conntrack.conntrack_tuning"},
         "vars": role_vars}]}]
    path = os.path.join(str(tmp_path), "play.yml")
    with open(path, "w") as handle:
        json.dump(play, handle)
    env = dict(C_ENV, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH, ANSIBLE_NOCOLOR="true", LANG="C.UTF-8", LC_ALL="C.UTF-8",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    proc = subprocess.run([PLAYBOOK, "-i", "localhost,", "-c", "local", "-e", "ansible_python_interpreter=" + sys.executable,
                           path] + list(flags), capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    recap = [line for line in proc.stdout.splitlines() if line.startswith("localhost") and "changed=" in line][-1]
    return proc.stdout, int(recap.split("changed=")[1].split()[0]), files


def test_role_check_diff_then_apply_then_idempotent(host_knobs, tmp_path):
    # demand 300,000 x 1.5 = 450,000: above the live max on this machine, so max is raised for real
    current_max = knob("max")
    peak = max(200000, current_max)
    wanted_max = int(peak * 1.5) if peak * 1.5 == int(peak * 1.5) else int(peak * 1.5) + 1
    extra = {"conntrack_tuning_peak_flows": peak, "conntrack_tuning_timeout_profile": "kubernetes",
             "conntrack_tuning_memory_mb": 65536, "conntrack_tuning_cpus": 2}
    before = {name: knob(name) for name in ("max", "buckets", "tcp_timeout_established", "tcp_timeout_close_wait")}
    sized_buckets = -(-wanted_max // 512) * 512  # buckets = max (the kernel's own ratio), rounded to 512

    out, changed, files = _play(tmp_path, extra, "--check", "--diff")
    assert changed == 1
    assert "demand %s x headroom 1.5" % "{:,}".format(peak) in out
    assert "+net.netfilter.nf_conntrack_max = %d" % wanted_max in out
    assert {name: knob(name) for name in before} == before, "--check changed a live value"
    assert not os.path.exists(files["sysctl_file"])

    out, changed, files = _play(tmp_path, extra)
    assert changed == 1
    assert knob("max") == wanted_max
    assert knob("tcp_timeout_established") == 86400 and knob("tcp_timeout_close_wait") == 3600
    with open(files["sysctl_file"]) as handle:
        text = handle.read()
    assert "net.netfilter.nf_conntrack_max = %d\n" % wanted_max in text
    # raise_only (role default): buckets is never lowered; the value left live is the one persisted
    assert knob("buckets") == max(before["buckets"], sized_buckets)
    assert "net.netfilter.nf_conntrack_buckets = %d\n" % knob("buckets") in text

    out, changed, _files = _play(tmp_path, extra)
    assert changed == 0, out[-3000:]
