"""The conntrack_firewall role for real inside a namespace (connection local): check/run/check/run gives
changed/changed/unchanged/unchanged, the rollback pattern confirms, and state=absent removes everything.
Paths in a tmp dir; the unit is never enabled on this machine."""

import os
import re
import subprocess

import pytest

from firewall_lab import owned, save
from netns_lab import C_ENV, COLLECTIONS_PATH, REPO_ROOT

PLAYBOOK = """- hosts: localhost
  gather_facts: false
  roles:
    - role: nodeguard.conntrack.conntrack_firewall
"""


def _play(ns, tmp_path, extra, check=False):
    playbook = tmp_path / "site.yml"
    playbook.write_text(PLAYBOOK)
    args = ["-e", "conntrack_firewall_enable_unit=false", "-e", "conntrack_firewall_state_dir=%s" % (tmp_path / "run")]
    for name in ("rules_v4_path", "rules_v6_path", "config_path", "loader_path", "unit_path"):
        args += ["-e", "conntrack_firewall_%s=%s" % (name, tmp_path / "files" / name)]
    for item in extra:
        args += ["-e", item]
    argv = ([os.path.join(REPO_ROOT, ".venv", "bin", "ansible-playbook"), "-i", "localhost,", "-c", "local",
             str(playbook)] + args + (["--check"] if check else []))
    env = dict(C_ENV, LANG="C.UTF-8", LC_ALL="C.UTF-8", ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH, ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
               ANSIBLE_NOCOLOR="1", ANSIBLE_PYTHON_INTERPRETER=os.path.join(REPO_ROOT, ".venv", "bin", "python"),
               HOME=str(tmp_path), ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"))
    proc = subprocess.run(ns.argv(argv), capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return int(re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)", proc.stdout).group(1))


@pytest.mark.parametrize("extra", [
    [],
    ['{"conntrack_firewall_rollback_timeout": 20, "conntrack_firewall_services": [{"ports": [443], "name": "https"}],'
     ' "conntrack_firewall_input_final_action": "drop"}'],
])
def test_role_four_runs_and_absent(lab, tmp_path, extra):
    ns = lab.add("role", conntrack_rule=False)
    changes = [_play(ns, tmp_path, extra, check=check) for check in (True, False, True, False)]
    assert [c > 0 for c in changes] == [True, True, False, False], changes
    rules = "\n".join(owned(save(ns, "nft", "ipv4")))
    assert "--dport 22 -m conntrack --ctstate NEW -m comment --comment ssh -j ACCEPT" in rules
    assert os.path.exists(str(tmp_path / "files" / "rules_v4_path"))
    run_dir = tmp_path / "run"
    if extra:
        assert "--comment https" in rules and "-A NG-CT-INPUT -j DROP" in rules
        # the one rollback started was confirmed: cancelled, never fired
        folders = list(run_dir.iterdir())
        assert len(folders) == 1 and (folders[0] / "cancelled").exists() and not (folders[0] / "rc").exists()
    assert _play(ns, tmp_path, extra + ["conntrack_firewall_state=absent"]) > 0
    assert owned(save(ns, "nft", "ipv4")) == [] and owned(save(ns, "nft", "ipv6")) == []
    assert not any((tmp_path / "files").iterdir())
