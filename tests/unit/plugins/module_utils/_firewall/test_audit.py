"""Audit rules on crafted rule sets: each classic mistake is found with its id; the baseline audits clean."""

import pytest

from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import render
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall.audit import _dnat_address, audit, summary
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall.audit_paths import analyse
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall.model import normalise_model
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall.save_parser import parse_save


def _run(text, family="ipv4", backend="nft", **context):
    return audit([{"family": family, "backend": backend, "ruleset": parse_save(text)}], context)


def _ids(findings):
    return [(f["id"], f["severity"]) for f in findings]


NEW_NO_EST = "*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n"


def test_new_without_established_is_high_when_the_chain_drops():
    findings = _run(NEW_NO_EST)
    # replies to the host's own connections are dropped; the stateless accept also admits INVALID packets
    assert _ids(findings) == [("NGCT001", "high"), ("NGCT007", "medium")]
    assert findings[0]["rule"] == "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT"
    assert findings[0]["position"] == 1 and findings[0]["chain"] == "INPUT"
    assert "replies to this host's own connections" in findings[0]["affects"]
    assert "the INPUT policy DROP" in findings[0]["detail"]
    # policy ACCEPT: nothing breaks, but the rule set is stateless
    assert _ids(_run(NEW_NO_EST.replace("DROP", "ACCEPT"))) == [("NGCT001", "low"), ("NGCT007", "info")]
    # the host opens no connections (OUTPUT drops NEW) and ICMP errors are accepted: nothing is lost
    closed = NEW_NO_EST.replace("COMMIT", ":OUTPUT DROP [0:0]\n-A OUTPUT -p tcp -m tcp --sport 22 -m conntrack --ctstate ESTABLISHED "
                                          "-j ACCEPT\n"
                                          "-A INPUT -p icmp -m conntrack --ctstate RELATED -j ACCEPT\nCOMMIT")
    assert _ids(_run(closed)) == [("NGCT007", "medium")]


def test_new_without_established_found_through_a_jump_chain():
    text = """*filter
:INPUT ACCEPT [0:0]
:SVC - [0:0]
-A INPUT -j SVC
-A INPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT
-A INPUT -j DROP
-A SVC -p tcp -m tcp --dport 80 -j ACCEPT
COMMIT
"""
    findings = [f for f in _run(text) if f["id"] == "NGCT001"]
    assert _ids(findings) == [("NGCT001", "high")]
    assert findings[0]["chain"] == "SVC"
    # RELATED is missing from the accept: the flows' ICMP errors (path MTU discovery) reach the DROP
    assert "ICMP errors (RELATED" in findings[0]["detail"] and "-A INPUT -j DROP" in findings[0]["detail"]
    assert not [f for f in _run(text.replace("ESTABLISHED", "RELATED,ESTABLISHED")) if f["id"] == "NGCT001"]


DOCKERISH = """*filter
:FORWARD DROP [0:0]
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -d 172.17.0.2/32 -o docker0 -p tcp -m tcp --dport 80 -m conntrack --ctstate NEW -j ACCEPT
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -o br1 -p tcp -m tcp --dport 80 -m conntrack --ctstate NEW -j ACCEPT
COMMIT
"""


def test_scoped_established_covers_the_flows_it_sees_replies_included():
    findings = _run(DOCKERISH)
    assert _ids(findings) == [("NGCT001", "high"), ("NGCT007", "medium")]
    new = findings[0]
    # docker0's flows are covered both ways (replies from the container by the -i docker0 accept); br1's are not
    assert "br1" in new["rule"] and "their replies in FORWARD (-i br1 -p tcp --sport 80)" in new["detail"]
    assert _ids(_run(DOCKERISH.replace("-o br1 -p tcp", "-o docker0 -p tcp"))) == [("NGCT007", "medium")]


def test_established_accept_after_an_unconditional_drop_or_a_return_is_unreachable():
    drop = "*filter\n-A INPUT -j DROP\n-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n"
    findings = _run(drop)
    assert _ids(findings) == [("NGCT006", "high")]
    assert findings[0]["position"] == 2 and "-A INPUT -j DROP (INPUT position 1)" in findings[0]["detail"]
    ret = """*filter
:INPUT DROP [0:0]
:GUARD - [0:0]
-A INPUT -j GUARD
-A GUARD -s 203.0.113.9/32 -j DROP
-A GUARD -j RETURN
-A GUARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT
COMMIT
"""
    findings = _run(ret)
    assert ("NGCT006", "high") in _ids(findings)
    unreachable = [f for f in findings if f["id"] == "NGCT006"][0]
    assert unreachable["chain"] == "GUARD" and unreachable["position"] == 3
    assert "-A GUARD -j RETURN (GUARD position 2)" in unreachable["detail"]
    # a goto ends the caller too: the accept after it is dead, and the chain it goes to accepts everything
    goto = "*filter\n:ALL - [0:0]\n-A INPUT -g ALL\n-A INPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT\n" \
           "-A ALL -j ACCEPT\nCOMMIT\n"
    assert _ids(_run(goto)) == [("NGCT006", "info"), ("NGCT007", "info")]
    # a scoped RETURN does not make it unreachable
    assert "NGCT006" not in [f["id"] for f in _run(ret.replace("-A GUARD -j RETURN", "-A GUARD -i eth9 -j RETURN"))]


@pytest.mark.parametrize("rule,expected", [
    ("-s 203.0.113.9/32 -j DROP", []),  # a ban before the ER accept cuts the banned host's sessions on purpose
    ("-p tcp -m tcp --dport 22 -m recent --name x --rcheck --seconds 60 --hitcount 4 -j DROP", [("NGCT002", "medium")]),
    ("-m recent --name x --rcheck --seconds 60 -m conntrack --ctstate NEW -j DROP", []),
    ('-j LOG --log-prefix "in: "', [("NGCT002", "low")]),
])
def test_established_after_rate_limits_or_expensive_rules(rule, expected):
    text = ("*filter\n-A INPUT %s\n-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
            "-A INPUT -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT\nCOMMIT\n" % rule)
    findings = _run(text)
    assert _ids(findings) == expected
    if expected:
        assert findings[0]["position"] == 1


def test_new_only_and_invalid_only_rules_before_established_are_fine():
    text = ("*filter\n-A INPUT -m conntrack --ctstate INVALID -j DROP\n"
            "-A INPUT -p tcp -m conntrack --ctstate NEW -m recent --name x --update -j DROP\n"
            "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n")
    assert _run(text) == []


INVALID_FWD = ("*filter\n-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
               "-A FORWARD -m conntrack --ctstate INVALID -j DROP\nCOMMIT\n")


def test_unscoped_invalid_drop_in_forward_and_its_severity():
    assert _ids(_run(INVALID_FWD)) == [("NGCT003", "medium")]
    assert _ids(_run(INVALID_FWD, multi_homed=True)) == [("NGCT003", "high")]
    assert _ids(_run(INVALID_FWD, tcp_be_liberal=True)) == [("NGCT003", "high")]
    scoped = INVALID_FWD.replace("-A FORWARD -m conntrack --ctstate INVALID", "-A FORWARD -i eth0 -m conntrack --ctstate INVALID")
    assert _run(scoped, multi_homed=True) == []
    via_chain = ("*filter\n:X - [0:0]\n-A FORWARD -m conntrack --ctstate INVALID -j X\n-A X -j DROP\nCOMMIT\n")
    assert _ids(_run(via_chain)) == [("NGCT003", "medium")]
    assert _run(INVALID_FWD.replace("FORWARD", "INPUT")) == []


DNAT = ("*nat\n-A PREROUTING -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.50.0.5:80\nCOMMIT\n"
        "*filter\n:FORWARD DROP [0:0]\n-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n%sCOMMIT\n")


@pytest.mark.parametrize("accept,found", [
    ("", True),
    ("-A FORWARD -m conntrack --ctstate DNAT -j ACCEPT\n", False),
    ("-A FORWARD -d 10.50.0.5/32 -p tcp -m tcp --dport 80 -j ACCEPT\n", False),
    ("-A FORWARD -d 10.60.0.0/16 -p tcp -m tcp --dport 80 -j ACCEPT\n", True),
])
def test_dnat_while_forward_drops(accept, found):
    findings = _run(DNAT % accept)
    assert (("NGCT004", "high") in _ids(findings)) is found
    if found:
        assert [f for f in findings if f["id"] == "NGCT004"][0]["table"] == "nat"
    assert _run((DNAT % "").replace(":FORWARD DROP", ":FORWARD ACCEPT")) == []


def test_split_backends():
    one = parse_save("*filter\n-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n")
    empty = parse_save("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n")
    findings = audit([{"family": "ipv4", "backend": "nft", "ruleset": one},
                      {"family": "ipv4", "backend": "legacy", "ruleset": one}])
    assert _ids(findings) == [("NGCT005", "high")]
    assert audit([{"family": "ipv4", "backend": "nft", "ruleset": one},
                  {"family": "ipv4", "backend": "legacy", "ruleset": empty}]) == []
    assert audit([{"family": "ipv4", "backend": "nft", "ruleset": one},
                  {"family": "ipv6", "backend": "legacy", "ruleset": one}]) == []


def _as_save(state):
    text = render.render_restore(state)
    for chain in ("INPUT", "FORWARD", "PREROUTING", "OUTPUT"):
        text = text.replace("-I %s 1 " % chain, "-A %s " % chain)
    return text


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize("params", [
    {},
    {"input": {"services": [{"ports": [22]}], "final_action": "drop", "invalid_drop": {"log": True}},
     "policies": {"input": "DROP", "forward": "DROP"},
     "forward": {"enabled": True, "accept_dnat": True, "final_action": "reject",
                 "invalid_drop": {"enabled": True, "out_interfaces": ["eth1"]},
                 "services": [{"ports": [443], "destinations": ["10.0.0.0/8", "fd00::/8"]}]},
     "notrack": [{"proto": "udp", "ports": [53], "direction": "both"}]},
])
def test_the_baseline_audits_clean(params, family):
    text = _as_save(render.desired_state(normalise_model(params), family))
    text += "*nat\n-A PREROUTING -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.50.0.5:80\nCOMMIT\n"
    assert _run(text, family=family, multi_homed=True, tcp_be_liberal=True) == []


def test_analyse_and_summary():
    info = analyse('! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -m comment --comment "a b" -j ACCEPT')
    assert info["target"] == "ACCEPT" and info["proto"] == "tcp" and info["scoped"]
    assert info["conds"] == {"! -i docker0", "-o docker0"}
    assert summary(_run(NEW_NO_EST)) == {"info": 0, "low": 0, "medium": 1, "high": 1}


@pytest.mark.parametrize("value,address", [("10.0.0.5:80", "10.0.0.5"), ("10.0.0.5", "10.0.0.5"),
                                           ("10.0.0.5-10.0.0.9:80-90", "10.0.0.5"), ("[fd00::5]:80", "fd00::5"),
                                           ("fd00::5", "fd00::5"), ("fd00::5-fd00::9", "fd00::5")])
def test_dnat_destination_forms(value, address):
    assert _dnat_address(value) == address


def test_ipv6_dnat_accepted_by_destination():
    text = ("*nat\n-A PREROUTING -p tcp -m tcp --dport 8080 -j DNAT --to-destination [fd00::5]:80\nCOMMIT\n"
            "*filter\n:FORWARD DROP [0:0]\n-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
            "-A FORWARD -d fd00::/64 -p tcp -m tcp --dport 80 -j ACCEPT\nCOMMIT\n")

    def dnat(text):
        return [f for f in _run(text, family="ipv6") if f["id"] == "NGCT004"]
    assert dnat(text) == []
    assert _ids(dnat(text.replace("fd00::/64", "fd01::/64"))) == [("NGCT004", "high")]
    assert dnat(text.replace("--dport 80 -j", "--dport 8080 -j"))  # the accept names the port before translation


def test_dnat_in_nat_output_or_to_a_local_address_needs_no_forward_accept():
    output = DNAT.replace("-A PREROUTING", "-A OUTPUT") % ""
    assert [f for f in _run(output) if f["id"] == "NGCT004"] == []
    loopback = (DNAT % "").replace("10.50.0.5:80", "127.0.0.1:80")
    assert [f for f in _run(loopback) if f["id"] == "NGCT004"] == []
    assert [f for f in _run(DNAT % "", local_addresses=["10.50.0.5"]) if f["id"] == "NGCT004"] == []
    # reached through a user chain from PREROUTING (Docker's layout): still needs FORWARD
    chained = ("*nat\n:DOCKER - [0:0]\n-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n"
               "-A DOCKER -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.50.0.5:80\nCOMMIT\n"
               "*filter\n:FORWARD DROP [0:0]\nCOMMIT\n")
    found = [f for f in _run(chained) if f["id"] == "NGCT004"]
    assert [(f["chain"], f["position"]) for f in found] == [("DOCKER", 1)]


NOTRACK = """*raw
-A PREROUTING -p udp -m udp --dport 53 -j CT --notrack
-A OUTPUT -p udp -m udp --sport 53 -j CT --notrack
COMMIT
*filter
:INPUT DROP [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -m conntrack --ctstate INVALID -j DROP
-A INPUT -p udp -m udp --dport 53 -j ACCEPT
COMMIT
"""


def test_notrack_without_an_untracked_accept():
    # the stateless port accept admits untracked packets too: fine
    assert _run(NOTRACK) == []
    stateful = NOTRACK.replace("--dport 53 -j ACCEPT", "--dport 53 -m conntrack --ctstate NEW -j ACCEPT")
    findings = _run(stateful)
    assert _ids(findings) == [("NGCT009", "high")]
    assert findings[0]["table"] == "raw" and findings[0]["chain"] == "PREROUTING"
    assert "the INPUT policy DROP" in findings[0]["detail"]
    assert _run(stateful.replace("--ctstate NEW -j", "--ctstate NEW,UNTRACKED -j")) == []
    # OUTPUT's replies: OUTPUT drops by default and accepts only tracked ones
    out = stateful.replace(":INPUT DROP [0:0]", ":INPUT DROP [0:0]\n:OUTPUT DROP [0:0]\n"
                           "-A OUTPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
    assert sorted((f["id"], f["chain"]) for f in _run(out)) == [("NGCT009", "OUTPUT"), ("NGCT009", "PREROUTING")]
    # scoped to local delivery: FORWARD does not matter; unscoped on a router that forwards DNS: it does
    router = ("*raw\n-A PREROUTING -p udp -m udp --dport 53 %s-j CT --notrack\nCOMMIT\n*filter\n:FORWARD DROP [0:0]\n"
              "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED,UNTRACKED -j ACCEPT\n"
              "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
              "-A FORWARD -i lan0 -m conntrack --ctstate NEW -j ACCEPT\nCOMMIT\n")
    assert [(f["id"], f["severity"]) for f in _run(router % "")] == [("NGCT009", "high")]
    assert "FORWARD" in _run(router % "")[0]["affects"]
    assert _run(router % "-m addrtype --dst-type LOCAL ") == []


def test_invalid_in_input():
    text = ("*filter\n:INPUT DROP [0:0]\n-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
            "-A INPUT -i lo -j ACCEPT\n-A INPUT -p icmp -j ACCEPT\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n")
    findings = _run(text)
    assert _ids(findings) == [("NGCT007", "medium")]
    assert findings[0]["position"] == 4 and "-p tcp --dport 22" in findings[0]["affects"]
    assert _run(text.replace("--dport 22 -j", "--dport 22 -m conntrack --ctstate NEW -j")) == []
    dropped = text.replace("-A INPUT -i lo", "-A INPUT -m conntrack --ctstate INVALID -j DROP\n-A INPUT -i lo")
    assert _run(dropped) == []


def test_local_addresses_from_proc():
    from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall.proc_net import local_addresses
    fib = """Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.0.0.0/24 2 0 2
        |-- 10.0.0.0
           /24 link UNICAST
        |-- 10.0.0.1
           /32 host LOCAL
        |-- 10.0.0.255
           /32 link BROADCAST
"""
    inet6 = "fe800000000000000000000000000001 02 40 20 80 eth0\n00000000000000000000000000000001 01 80 10 80 lo\n"
    assert local_addresses(fib, inet6) == ["10.0.0.1", "::1", "fe80::1"]


@pytest.mark.parametrize("atom,ctx,expected", [
    (("-i", "cali+", False), [("-i", "cali12ab", False)], "sat"),
    (("-i", "cali+", False), [("-i", "eth0", False)], "contra"),
    (("-i", "eth0", False), [("-i", "eth+", False)], "unknown"),
    (("-o", "docker0", True), [("-o", "bridge1", False)], "sat"),
    (("-o", "docker0", True), [("-o", "docker0", False)], "contra"),
    (("-i", "bridge1", False), [("-i", "bridge1", True)], "contra"),
    (("-s", "10.0.0.0/8", False), [("-s", "10.1.2.3", False)], "sat"),
    (("-s", "10.0.0.0/8", False), [("-s", "192.0.2.0/24", False)], "contra"),
    (("-s", "10.0.0.0/8", False), [("-s", "0.0.0.0/0", False)], "unknown"),
    (("-d", "127.0.0.0/8", True), [("-d", "127.0.0.1", False)], "contra"),
    (("-d", "127.0.0.0/8", False), [("-d", "127.0.0.0/8", True)], "contra"),
    (("--dport", "33434:33523", False), [("--dport", "33500", False)], "sat"),
    (("--dport", "25,80,443", False), [("--dport", "22", False)], "contra"),
    (("--dport", "80", False), [("-p", "icmp", False)], "contra"),
    (("-p", "udp", False), [("-p", "tcp", False)], "contra"),
    (("mark --mark", "0x4000/0x4000", False), [("mark --mark", "0x4000/0x4000", False)], "sat"),
    (("mark --mark", "0x4000/0x4000", False), [], "unknown"),
])
def test_one_condition_against_what_is_known(atom, ctx, expected):
    from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall.audit_paths import atom_against
    assert atom_against(atom, ctx) == expected


def test_parse_rule_forms():
    from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall.audit_paths import parse_rule
    rule = parse_rule("-m tcp -p tcp -d 172.30.0.46 --dport 80 -m comment --comment \"a b\" -j REJECT")
    assert sorted(rule["atoms"]) == sorted([("-p", "tcp", False), ("-d", "172.30.0.46", False), ("--dport", "80", False)])
    dnat = parse_rule("-p tcp --dport 47171 -j DNAT --to-destination 10.0.0.1:22")
    assert dnat["atoms"][-1] == ("--dport", "47171", False) and dnat["to_destination"] == "10.0.0.1:22"
    notrack = parse_rule("-p udp -m udp --dport 53 -j CT --notrack")
    assert notrack["notrack"] and notrack["target"] == "CT"
    state = parse_rule("-m state --state RELATED,ESTABLISHED -j ACCEPT")
    assert state["states"] == ({"RELATED", "ESTABLISHED"}, False) and state["uses_state_module"]
    assert parse_rule("-g cali-wl-to-host")["goto"]


def test_coverage_follows_goto_ends_and_builtin_returns_to_the_policy():
    """The later packets of a flow accepted through a scoped goto or past a scoped RETURN in INPUT never meet the
    ESTABLISHED accept after them: a goto'd chain's end and a RETURN in a built-in chain both mean the policy."""
    goto = """*filter
:INPUT DROP [0:0]
:CHK - [0:0]
-A INPUT -i eth0 %s CHK
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A CHK -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT
COMMIT
"""
    assert _ids(_run(goto % "-g")) == [("NGCT001", "high")]
    assert _ids(_run(goto % "-j")) == []
    ret = """*filter
:INPUT DROP [0:0]
-A INPUT -i eth0 -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT
-A INPUT -i eth0 -j RETURN
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
"""
    assert _ids(_run(ret)) == [("NGCT001", "high")]
    assert _ids(_run(ret.replace("-A INPUT -i eth0 -j RETURN\n", ""))) == []
