"""The nftables rendering of the baseline model: order, families, scoping, notrack, digest, transactions."""
import pytest

from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import model as fw_model
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import nft_baseline
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import nft_render as render


def _model(**params):
    return fw_model.normalise_model(params)


def _rules(model, chain):
    return dict((name, rules) for name, _head, rules in render.chains(model))[chain]


def test_input_order_established_first_and_final_action():
    rules = _rules(_model(input={"services": [{"name": "ssh", "ports": [22]}], "final_action": "drop"}), "input")
    assert rules[:3] == ['iif "lo" accept', "ct state established,related accept",
                         "icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } "
                         "ip6 hoplimit 255 accept"]
    assert rules[3] == "ct state invalid jump input_invalid"
    assert 'tcp dport 22 ct state new accept comment "ssh"' in rules and rules[-1] == "drop"


def test_sources_split_by_family_and_wildcard_interfaces():
    rules = _rules(_model(input={"services": [{"name": "web", "ports": [80, "8000:8100"], "interfaces": ["eth+", "lo2"],
                                               "sources": ["10.0.0.0/8", "2001:db8::/32"]}]}), "input")
    web = [r for r in rules if "web" in r]
    assert web == [
        'iifname "lo2" ip saddr 10.0.0.0/8 tcp dport { 80, 8000-8100 } ct state new accept comment "web"',
        'iifname "eth*" ip saddr 10.0.0.0/8 tcp dport { 80, 8000-8100 } ct state new accept comment "web"',
        'iifname "lo2" ip6 saddr 2001:db8::/32 tcp dport { 80, 8000-8100 } ct state new accept comment "web"',
        'iifname "eth*" ip6 saddr 2001:db8::/32 tcp dport { 80, 8000-8100 } ct state new accept comment "web"']


def test_one_family_table_and_no_cross_family_rules():
    model = _model(families=["ipv4"], input={"services": [{"name": "a", "ports": [1], "sources": ["2001:db8::/32"]}]})
    assert render.table_family(model) == "ip"
    text = render.table_text(model)
    assert "icmpv6" not in text and "ip6" not in text and 'comment "a"' not in text


def test_notrack_in_and_out():
    model = _model(notrack=[{"name": "dns", "proto": "udp", "ports": [53]},
                            {"name": "db", "ports": [5432], "direction": "out", "sources": ["10.9.0.0/16"]}])
    chains = dict((name, rules) for name, _h, rules in render.chains(model))
    assert 'fib daddr type local udp dport 53 notrack comment "dns"' in chains["raw_prerouting"]
    assert 'udp sport 53 notrack comment "dns"' in chains["raw_output"]
    assert 'udp dport 53 ct state untracked accept comment "dns"' in chains["input"]
    assert ('ip saddr 10.9.0.0/16 tcp sport 5432 tcp dport 32768-60999 tcp flags & (fin | syn | rst | ack) != syn '
            'ct state untracked accept comment "db"') in chains["input"]


def test_digest_stable_and_sensitive():
    one = _model(input={"services": [{"name": "ssh", "ports": [22]}]})
    two = _model(input={"services": [{"name": "ssh", "ports": [2222]}]})
    assert render.digest(one) == render.digest(_model(input={"services": [{"name": "ssh", "ports": [22]}]}))
    assert render.digest(one) != render.digest(two) and render.digest(one) != render.digest(one, priority=5)
    assert render.live_digest(render.table_text(one).replace("\t", "\t\t")) == render.digest(one)
    assert render.live_digest("table inet nodeguard_conntrack {\n}\n") is None


def test_transactions_name_only_the_owned_table():
    model = _model()
    script = render.replace_script(model, present=("ip",))
    names = set(line.replace("{", "").split()[-1] for line in script.splitlines()
                if line.startswith(("table ", "delete table ")))
    assert names == set([render.TABLE])
    assert "delete table ip nodeguard_conntrack" in script and "delete table inet nodeguard_conntrack" in script
    assert "flush ruleset" not in script
    assert render.remove_script([]) == ""


def test_nothing_before_the_established_accept_can_drop():
    model = _model(input={"services": [{"name": "ssh", "ports": [22]}], "final_action": "drop"},
                   forward={"enabled": True, "accept_dnat": True, "final_action": "drop"},
                   notrack=[{"name": "dns", "proto": "udp", "ports": [53]}])
    rules = _rules(model, "input")
    assert rules.index("ct state established,related accept") < min(
        i for i, r in enumerate(rules) if r.endswith("drop") or "jump" in r)


def test_bad_priority_is_an_input_error():
    with pytest.raises(fw_model.FirewallModelError) as err:
        nft_baseline.run(None, dict(state="present", priority=1000), check_mode=True)
    assert err.value.field == "priority"
