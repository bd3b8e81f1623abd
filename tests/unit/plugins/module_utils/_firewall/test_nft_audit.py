"""The native nftables reader, inventory and audit: the shared reference rule sets (canonical nft -j output) against
the expert's verdicts, and small hand-built rule sets for each finding id."""
import json
import os

import pytest

from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import nft_audit as audit
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import nft_inventory as inventory
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import nft_ruleset as nft

import shared_reference


def _canonical_dir():
    return shared_reference.require("reference", "rulesets", "nft", "canonical")


# the same expert verdicts the kernel tier checks on the live module (tests/kernel/test_nftables_audit.py)
EXPERT = {
    "debian-default": ([], []),
    "debian-example-workstation": ([], []),
    "arch-default": ([("NGNF007", "low", "input", "ip6 nexthdr ipv6-icmp accept")], []),
    "firewalld-public": ([], ["NGNF003"]),
    "firewalld-public-server": ([], ["NGNF003"]),
    "docker-29-nftables-published-port": ([], []),
    "kube-proxy-nftables": ([], []),
    "libvirt-nat-default": ([], []),
    "mistake-no-established-accept": ([("NGNF001", "high", "input", "udp dport 53 accept")], []),
    "mistake-invalid-drop-multihomed-router": ([("NGNF003", "medium", "forward", "ct state invalid drop"),
                                               ("NGNF007", "low", "input", "ip6 nexthdr ipv6-icmp accept")], []),
    "notrack-stateless-accepts-ok": ([("NGNF007", "low", "input", "ip6 nexthdr ipv6-icmp accept")], []),
    "mistake-notrack-without-untracked": ([("NGNF006", "high", "prerouting", "ip saddr 172.19.151.0/24 notrack"),
                                          ("NGNF007", "low", "input", "ip6 nexthdr ipv6-icmp accept")], []),
}


def _load(name):
    with open(os.path.join(_canonical_dir(), name + ".json")) as handle:
        return nft.parse(handle.read())


@pytest.mark.parametrize("name", sorted(EXPERT))
def test_reference_rule_sets_agree_with_the_expert(name):
    findings = audit.audit(_load(name), {"multi_homed": False, "tcp_be_liberal": False})
    found = sorted((f["id"], f["severity"], f["chain"], f["rule"]) for f in findings)
    expected, allowed_low = EXPERT[name]
    assert [item for item in sorted(expected) if item not in found] == []
    assert [item for item in found if item not in expected and not (item[0] in allowed_low and item[1] == "low")] \
        == []


def test_every_canonical_file_has_a_verdict():
    names = sorted(name[:-5] for name in os.listdir(_canonical_dir()) if name.endswith(".json"))
    assert names == sorted(EXPERT)


def test_reference_owners():
    owners = dict((name, [(t["family"], t["name"], t["owner"], t["iptables_view"]) for t in
                          inventory.inventory(_load(name))]) for name in EXPERT)
    assert owners["firewalld-public"] == [("inet", "firewalld", "firewalld", False)]
    assert owners["docker-29-nftables-published-port"] == [("ip", "docker-bridges", "docker", False)]
    assert owners["kube-proxy-nftables"] == [("ip", "kube-proxy", "kube-proxy", False)]
    assert owners["libvirt-nat-default"] == [("ip", "libvirt_network", "libvirt", False),
                                             ("ip6", "libvirt_network", "libvirt", False)]
    assert owners["debian-default"] == [("inet", "filter", "unknown", False)]


def test_multi_homed_context_raises_the_router_finding():
    findings = audit.audit(_load("mistake-invalid-drop-multihomed-router"), {"multi_homed": True})
    assert [(f["id"], f["severity"], f["nfprotos"]) for f in findings if f["id"] == "NGNF003"] == [
        ("NGNF003", "high", ["ipv4", "ipv6"])]


# ---- hand-built rule sets ----

def _m(left, right, op="=="):
    return {"match": {"op": op, "left": left, "right": right}}


def META(key):  # pylint: disable=invalid-name
    return {"meta": {"key": key}}


def PAYLOAD(proto, field):  # pylint: disable=invalid-name
    return {"payload": {"protocol": proto, "field": field}}


CT_STATE = {"ct": {"key": "state"}}
ER = [_m(CT_STATE, ["established", "related"], "in"), {"accept": None}]


def ruleset(*tables):
    items = [{"metainfo": {"json_schema_version": 1}}]
    handle = 1
    for family, name, chains in tables:
        items.append({"table": {"family": family, "name": name, "handle": handle}})
        for chain_name, base, rules in chains:
            chain = {"family": family, "table": name, "name": chain_name, "handle": handle}
            chain.update(base or {})
            items.append({"chain": chain})
            for expr in rules:
                handle += 1
                items.append({"rule": {"family": family, "table": name, "chain": chain_name, "handle": handle,
                                       "expr": expr}})
    return nft.parse(json.dumps({"nftables": items}))


def base(hook, prio=0, policy="accept", kind="filter"):
    return {"type": kind, "hook": hook, "prio": prio, "policy": policy}


def ids(findings):
    return sorted((f["id"], f["severity"]) for f in findings)


def test_parse_rejects_what_is_not_nft_json():
    with pytest.raises(nft.NftParseError):
        nft.parse("table inet filter {}")
    with pytest.raises(nft.NftParseError):
        nft.parse('{"tables": []}')
    assert nft.parse("")["tables"] == []


def test_ngnf002_drop_before_the_established_accept():
    rs = ruleset(("inet", "f", [("input", base("input", policy="drop"), [
        [_m(PAYLOAD("ip", "saddr"), {"prefix": {"addr": "203.0.113.0", "len": 24}}), {"drop": None}],
        ER,
        [_m(PAYLOAD("tcp", "dport"), 22), {"accept": None}]])]))
    findings = audit.audit(rs)
    assert ids(findings) == [("NGNF002", "medium")]
    assert findings[0]["position"] == 1 and findings[0]["rule"] == "ip saddr 203.0.113.0/24 drop"


def test_ngnf002_log_before_the_established_accept_is_low():
    rs = ruleset(("inet", "f", [("input", base("input", policy="drop"), [
        [{"log": {"prefix": "in: "}}], ER])]))
    assert ids(audit.audit(rs)) == [("NGNF002", "low")]


def test_final_drop_rule_counts_as_policy_and_jumps_are_followed():
    rs = ruleset(("inet", "f", [
        ("input", base("input"), [[{"jump": {"target": "svc"}}], [{"drop": None}]]),
        ("svc", None, [[_m(PAYLOAD("tcp", "dport"), 443), {"accept": None}]])]))
    findings = audit.audit(rs)
    assert ids(findings) == [("NGNF001", "high")]
    assert findings[0]["chain"] == "svc" and findings[0]["nfprotos"] == ["ipv4", "ipv6"]


def test_established_accept_in_a_vmap_chain_covers_that_chain_only():
    rs = ruleset(("ip", "d", [
        ("fwd", base("forward", policy="drop"), [[{"vmap": {"key": META("oifname"), "data": {"set": [
            ["br0", {"jump": {"target": "to_br0"}}]]}}}]]),
        ("to_br0", None, [ER, [_m(PAYLOAD("tcp", "dport"), 80), {"accept": None}]])]))
    assert ids(audit.audit(rs)) == []


def test_reject_with_icmp_is_ipv4_only_in_an_inet_table():
    rs = ruleset(("inet", "f", [("input", base("input"), [
        [_m(PAYLOAD("tcp", "dport"), 22), {"accept": None}],
        [{"reject": {"type": "icmp", "expr": "port-unreachable"}}]])]))
    findings = audit.audit(rs)
    assert [(f["id"], f["nfprotos"]) for f in findings] == [("NGNF001", ["ipv4"])]


def test_ngnf004_dnat_with_a_dropping_forward():
    nat = ("ip", "n", [("pre", base("prerouting", -100, kind="nat"), [
        [_m(PAYLOAD("tcp", "dport"), 8080), {"dnat": {"addr": "10.0.0.5", "port": 80}}]])])
    dropping = ("ip", "f", [("fwd", base("forward", policy="drop"), [ER])])
    findings = audit.audit(ruleset(nat, dropping))
    assert ids(findings) == [("NGNF004", "high")]
    assert "10.0.0.5" in findings[0]["detail"]
    accepting = ("ip", "f", [("fwd", base("forward", policy="drop"), [
        ER, [_m({"ct": {"key": "status"}}, "dnat", "in"), {"accept": None}]])])
    assert ids(audit.audit(ruleset(nat, accepting))) == []


@pytest.mark.parametrize("accept_prio,drop_prio", [(0, 10), (10, 0)])
def test_ngnf005_an_accept_does_not_override_another_tables_drop(accept_prio, drop_prio):
    alpha = ("inet", "alpha", [("in", base("input", accept_prio), [[_m(PAYLOAD("tcp", "dport"), 8080),
                                                                    {"accept": None}]])])
    beta = ("inet", "beta", [("in", base("input", drop_prio, "drop"), [ER])])
    findings = audit.audit(ruleset(alpha, beta))
    assert ids(findings) == [("NGNF005", "medium")]
    assert findings[0]["table"] == "alpha" and findings[0]["dropping_table"] == "inet beta"
    beta_accepts = ("inet", "beta", [("in", base("input", drop_prio, "drop"), [
        ER, [_m(PAYLOAD("tcp", "dport"), {"set": [8080, 8443]}), {"accept": None}]])])
    assert ids(audit.audit(ruleset(alpha, beta_accepts))) == []


def test_ngnf005_iptables_nft_policy_drop_counts_but_is_not_linted():
    xt = ("ip", "filter", [("INPUT", base("input", policy="drop"), [[{"xt": {"type": "match", "name": "conntrack"}},
                                                                     {"accept": None}]])])
    alpha = ("inet", "alpha", [("in", base("input", 10), [[_m(PAYLOAD("tcp", "dport"), 8080), {"accept": None}]])])
    rs = ruleset(xt, alpha)
    tables = inventory.inventory(rs)
    assert [(t["owner"], t["iptables_view"]) for t in tables] == [("iptables-nft", True), ("unknown", False)]
    findings = audit.audit(rs, {}, tables)
    assert [(f["id"], f["table"], f["dropping_table"]) for f in findings] == [("NGNF005", "alpha", "ip filter")]


def test_ngnf006_untracked_accept_handles_notrack():
    notrack = ("inet", "f", [("raw", base("prerouting", -300), [[_m(PAYLOAD("udp", "dport"), 53), {"notrack": None}]]),
                             ("input", base("input", policy="drop"), [ER])])
    assert ids(audit.audit(ruleset(notrack))) == [("NGNF006", "high")]
    untracked = [_m(CT_STATE, "untracked", "in"), {"accept": None}]
    handled = ("inet", "f", [("raw", base("prerouting", -300), [[_m(PAYLOAD("udp", "dport"), 53), {"notrack": None}]]),
                             ("input", base("input", policy="drop"), [ER, untracked])])
    assert ids(audit.audit(ruleset(handled))) == []


def test_ngnf008_flush_ruleset_with_other_tools_tables():
    rs = ruleset(("ip", "docker-bridges", []), ("inet", "filter", []))
    conf_text = "#!/usr/sbin/nft -f\nflush ruleset\ntable inet filter {\n}\n"
    tables = inventory.inventory(rs, conf_text)
    assert [t["owner"] for t in tables] == ["docker", "nftables.conf"]
    context = {"nftables_conf": inventory.nftables_conf(conf_text), "nftables_service_enabled": True}
    findings = audit.audit(rs, context, tables)
    assert ids(findings) == [("NGNF008", "medium")] and "docker-bridges" in findings[0]["detail"]
    assert audit.audit(rs, {"nftables_conf": inventory.nftables_conf("table inet filter {}\n")}, tables) == []


def test_nftables_conf_summary():
    assert inventory.nftables_conf(None) is None
    conf = inventory.nftables_conf('# flush ruleset\ninclude "/etc/nft.d/*.nft"\ntable ip6 x {}\nadd table y\n')
    assert conf == {"tables": ["ip y", "ip6 x"], "flush_ruleset": False, "includes": ["/etc/nft.d/*.nft"]}


def test_cond_subsumption():
    assert audit._cond_covers("tcp dport == { 22, 80 }", "tcp dport == 80")
    assert not audit._cond_covers("tcp dport == 80", "tcp dport == { 22, 80 }")
    assert audit._cond_covers("ip saddr == 10.0.0.0/8", "ip saddr == 10.1.0.0/16")
    assert not audit._cond_covers("ip saddr == 10.1.0.0/16", "ip saddr == 10.0.0.0/8")
    assert not audit._cond_covers("iifname != eth0", "iifname != eth0 ")


@pytest.mark.parametrize("kind,found", [("jump", []), ("goto", [("NGNF001", "high")])])
def test_ngnf001_follows_jump_returns_and_goto_ends(kind, found):
    """A NEW accept before the established,related accept is covered by it when the packet comes back there: after
    a jump it does (established packets from eth0 leave chk unmatched and meet the accept); after a goto it does
    not (chk's end returns past the input chain to its drop policy)."""
    rs = ruleset(("inet", "f", [
        ("input", base("input", policy="drop"), [[_m(META("iifname"), "eth0"), {kind: {"target": "chk"}}], ER]),
        ("chk", None, [[_m(CT_STATE, "new", "in"), _m(PAYLOAD("tcp", "dport"), 22), {"accept": None}]])]))
    assert ids(audit.audit(rs)) == found


def test_ngnf001_not_for_a_new_accept_placed_before_a_reached_established_accept():
    """``tcp dport 22 accept; ct state established,related accept; policy drop``: replies to this host's own
    connections reach the second rule, nothing is dropped."""
    rs = ruleset(("inet", "f", [("input", base("input", policy="drop"), [
        [_m(PAYLOAD("tcp", "dport"), 22), {"accept": None}], ER])]))
    assert ids(audit.audit(rs)) == []
    no_er = ruleset(("inet", "f", [("input", base("input", policy="drop"), [
        [_m(PAYLOAD("tcp", "dport"), 22), {"accept": None}]])]))
    assert ids(audit.audit(no_er)) == [("NGNF001", "high")]


def test_negated_ct_state_is_the_complement():
    """``ct state != established,related ip saddr 203.0.113.0/24 drop`` before the established accept bans new
    flows from a network and leaves established packets alone: not NGNF002."""
    rule = [_m(CT_STATE, ["established", "related"], "!="),
            _m(PAYLOAD("ip", "saddr"), {"prefix": {"addr": "203.0.113.0", "len": 24}}), {"drop": None}]
    assert nft.analyse_rule({"expr": rule})["states"] == set(["new", "invalid", "untracked"])
    rs = ruleset(("inet", "f", [("input", base("input", policy="drop"), [
        rule, ER, [_m(PAYLOAD("tcp", "dport"), 22), {"accept": None}]])]))
    assert ids(audit.audit(rs)) == []


def test_ngnf005_two_base_chains_of_one_table_on_one_hook():
    """Two base chains of the same table on the input hook each get a say, as two tables' chains do: chain b's
    drop policy drops what chain a accepts."""
    rs = ruleset(("inet", "f", [
        ("a", base("input", 0), [[_m(PAYLOAD("tcp", "dport"), 8080), {"accept": None}]]),
        ("b", base("input", 10, "drop"), [ER])]))
    findings = audit.audit(rs)
    assert [(f["id"], f["chain"], f["dropping_chain"]) for f in findings] == [("NGNF005", "a", "b")]
