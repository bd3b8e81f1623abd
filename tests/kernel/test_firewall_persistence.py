"""Persistence of the baseline for real: the rules files hold only owned chains, and a simulated reboot (every table
flushed in the namespace, other software's rules re-created, then the loader) brings the baseline back exactly
once. The loader is idempotent. All paths live in a tmp dir; no unit is installed on this machine."""

import json
import sys

import pytest

from firewall_lab import BACKENDS, FAMILIES, TOOL, foreign, module, owned, rule_lines, save, seed_foreign

MODEL = {"input": {"services": [{"name": "ssh", "ports": [22]}]},
         "forward": {"enabled": True, "accept_dnat": True}, "notrack": [{"proto": "udp", "ports": [53]}]}


def _paths(tmp_path):
    return dict(persist=True, rules_v4_path=str(tmp_path / "etc" / "rules.v4"),
                rules_v6_path=str(tmp_path / "etc" / "rules.v6"), config_path=str(tmp_path / "etc" / "firewall.json"),
                loader_path=str(tmp_path / "sbin" / "load"),
                unit_path=str(tmp_path / "systemd" / "nodeguard-conntrack-firewall.service"))


def _reboot(ns, backend):
    """What a reboot leaves: empty tables with ACCEPT policies."""
    for family in FAMILIES:
        for table in ("filter", "nat", "raw"):
            ns.run(["%s-%s" % (TOOL[family], backend), "-t", table, "-F"])
            ns.run(["%s-%s" % (TOOL[family], backend), "-t", table, "-X"])
        for chain in ("INPUT", "FORWARD", "OUTPUT"):
            ns.run(["%s-%s" % (TOOL[family], backend), "-P", chain, "ACCEPT"])


def _load(ns, paths):
    return ns.run([sys.executable, paths["loader_path"], paths["config_path"]], check=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_simulated_reboot_brings_the_baseline_back_once(lab, tmp_path, backend):
    ns = lab.add("fw", conntrack_rule=False)
    seed_foreign(ns, backend)
    paths = _paths(tmp_path)
    result = module(ns, "iptables_baseline", dict(MODEL, backend=backend, **paths))
    assert result["_rc"] == 0 and result["changed"], result
    assert sorted(result["files_changed"]) == sorted(paths[k] for k in paths if k != "persist")
    again = module(ns, "iptables_baseline", dict(MODEL, backend=backend, **paths))
    assert again["changed"] is False, again
    live = dict((family, owned(save(ns, backend, family))) for family in FAMILIES)
    foreign_before = dict((family, foreign(save(ns, backend, family))) for family in FAMILIES)
    # the rules file holds only what we own
    rules_v4 = open(paths["rules_v4_path"]).read()
    assert "DOCKER" not in rules_v4 and "KUBE" not in rules_v4 and "f2b" not in rules_v4
    assert "NG-CT-INPUT" in rules_v4
    config = json.load(open(paths["config_path"]))
    assert config["families"]["ipv4"]["restore"].endswith("iptables-%s-restore" % backend)
    unit = open(paths["unit_path"]).read()
    assert "Before=network-pre.target" in unit and "Wants=network-pre.target" in unit
    # the system's Python 3, not the (virtualenv) interpreter that ran the module, and after full-table restores
    assert "ExecStart=/usr/bin/python3 %s %s" % (paths["loader_path"], paths["config_path"]) in unit
    assert "netfilter-persistent.service" in unit and "nftables.service" in unit

    _reboot(ns, backend)
    for family in FAMILIES:
        assert owned(save(ns, backend, family)) == []
    seed_foreign(ns, backend)  # other software starts too (before or after us: order must not matter)
    for _boot in range(2):
        proc = _load(ns, paths)
        assert proc.returncode == 0, proc.stderr
        for family in FAMILIES:
            text = save(ns, backend, family)
            assert sorted(owned(text)) == sorted(live[family]), family
            assert foreign(text) == foreign_before[family], family
            jumps = [line for line in rule_lines(text) if line.startswith("-A INPUT") and "NG-CT-INPUT" in line]
            assert len(jumps) == 1
    # after the loader, the module sees nothing to do
    assert module(ns, "iptables_baseline", dict(MODEL, backend=backend, **paths))["changed"] is False


@pytest.mark.parametrize("backend", BACKENDS)
def test_loader_replaces_a_stale_baseline_and_absent_removes_every_file(lab, tmp_path, backend):
    ns = lab.add("fw", conntrack_rule=False)
    paths = _paths(tmp_path)
    old = {"input": {"services": [{"ports": [2222]}]}, "forward": {"enabled": True}}
    assert module(ns, "iptables_baseline", dict(old, backend=backend))["changed"]  # live: old, not persisted
    assert module(ns, "iptables_baseline", dict(MODEL, backend=backend, **paths))["changed"]
    wanted = dict((family, sorted(owned(save(ns, backend, family)))) for family in FAMILIES)
    restore_old = module(ns, "iptables_baseline", dict(old, backend=backend))
    assert restore_old["changed"]
    proc = _load(ns, paths)
    assert proc.returncode == 0, proc.stderr
    for family in FAMILIES:
        assert sorted(owned(save(ns, backend, family))) == wanted[family]
    result = module(ns, "iptables_baseline", dict(MODEL, backend=backend, state="absent", **paths))
    assert result["_rc"] == 0 and result["changed"], result
    assert not any((tmp_path / d).exists() and any((tmp_path / d).iterdir()) for d in ("etc", "sbin", "systemd"))
    for family in FAMILIES:
        assert owned(save(ns, backend, family)) == []
