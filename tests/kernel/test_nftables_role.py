"""The conntrack_firewall role with the nftables engine inside a namespace (connection local): check/run/check/run
gives changed/changed/unchanged/unchanged, the rollback pattern confirms, state=absent removes the table and files;
engine auto picks nftables on a host whose firewall is firewalld's native table, and leaves that table alone."""
import os

from nft_lab import load_file, nft_reference, stateless_ruleset, without_table
from test_firewall_role import _play


def _paths(tmp_path):
    return ["conntrack_firewall_nftables_rules_path=%s" % (tmp_path / "files" / "nftables.nft"),
            "conntrack_firewall_nftables_unit_path=%s" % (tmp_path / "files" / "nft.service")]


def test_role_nftables_engine_four_runs_rollback_and_absent(lab, tmp_path):
    ns = lab.add("nrole", conntrack_rule=False)
    extra = _paths(tmp_path) + [
        '{"conntrack_firewall_engine": "nftables", "conntrack_firewall_rollback_timeout": 20,'
        ' "conntrack_firewall_services": [{"ports": [443], "name": "https"}],'
        ' "conntrack_firewall_input_final_action": "drop"}']
    changes = [_play(ns, tmp_path, extra, check=check) for check in (True, False, True, False)]
    assert [c > 0 for c in changes] == [True, True, False, False], changes
    listing = stateless_ruleset(ns)
    assert 'tcp dport 22 ct state new accept comment "ssh"' in listing
    assert 'tcp dport 443 ct state new accept comment "https"' in listing and "\t\tdrop\n" in listing
    assert os.path.exists(str(tmp_path / "files" / "nftables.nft"))
    folders = list((tmp_path / "run").iterdir())
    assert len(folders) == 1 and (folders[0] / "cancelled").exists() and not (folders[0] / "rc").exists()
    assert _play(ns, tmp_path, extra + ["conntrack_firewall_state=absent"]) > 0
    assert stateless_ruleset(ns).strip() == ""
    assert not any((tmp_path / "files").iterdir())


def test_role_auto_engine_picks_nftables_next_to_firewalld(lab, tmp_path):
    ns = lab.add("nauto", conntrack_rule=False)
    load_file(ns, os.path.join(nft_reference(), "firewalld-public.nft"))
    before = stateless_ruleset(ns)
    assert _play(ns, tmp_path, _paths(tmp_path)) > 0
    after = stateless_ruleset(ns)
    assert "table inet nodeguard_conntrack {" in after, after
    assert without_table(after, "inet", "nodeguard_conntrack") == before
    assert "NG-CT-" not in ns.run(["iptables-save"]).stdout
    assert _play(ns, tmp_path, _paths(tmp_path) + ["conntrack_firewall_state=absent"]) > 0
    assert stateless_ruleset(ns) == before
