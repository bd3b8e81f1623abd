"""The audit against rule sets written by other projects and real users (ufw, Docker 27/28/29, kube-proxy,
fail2ban, Calico, sshguard, Zulip, the Red Hat default, classic mistakes).

The files live outside the repository, in ``shared/reference/rulesets`` next to it (found by
``tests/shared_reference.py``; ``NODEGUARD_SHARED`` overrides the location). Their
README lists what an expert reads from each file; ``EXPECTED`` below is that verdict in finding ids. Without the
files the tests skip with the reason; under ``CI=true`` they fail instead.
"""

import os

import pytest

from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall.audit import audit, evaluate, parse_rule
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall.save_parser import parse_save

import shared_reference


def rulesets_dir():
    return shared_reference.require("reference", "rulesets")


def _load(name):
    path = os.path.join(rulesets_dir(), name)
    if not os.path.isfile(path):
        pytest.fail("foreign rule set %s is missing from the shared reference" % path)
    with open(path) as handle:
        return handle.read()


def _audit(name, **context):
    family = "ipv6" if ".v6." in name else "ipv4"
    context.setdefault("multi_homed", False)
    context.setdefault("tcp_be_liberal", False)
    return audit([{"family": family, "backend": "nft", "ruleset": parse_save(_load(name))}], context)


# file -> (correct rule set?, context, [(id, severity, chain, position)]): the expert verdict of the README
EXPECTED = {
    # no classic mistake; ER accept early in ufw-before-*, INVALID dropped in ufw-before-input
    "ufw-default.v4.rules": (True, {}, []),
    # the narrow rt-type-0 DROP before the ER accept and echo-reply before the INVALID drop are fine
    "ufw-default.v6.rules": (True, {}, []),
    # fail2ban's REJECT before ufw's ER accept cuts a banned host's sessions on purpose
    "ufw-fail2ban.v4.rules": (True, {}, []),
    # per-bridge ER accepts cover replies; Docker never drops INVALID: its own accepts, so low at most
    "docker-27-published-port.v4.rules": (True, {}, [("NGCT007", "low", "DOCKER", 1)]),
    "docker-28-published-port.v4.rules": (True, {}, [("NGCT007", "low", "DOCKER", 1)]),
    "docker-29-published-port.v4.rules": (True, {}, [("NGCT007", "low", "DOCKER", 1)]),
    # KUBE-FORWARD's INVALID drop is unscoped (kube-proxy's, so low); INPUT accepts by default
    "kube-proxy-iptables.v4.rules": (True, {}, [("NGCT003", "low", "KUBE-FORWARD", 1),
                                                ("NGCT007", "info", "KUBE-NODEPORTS", 1)]),
    # only bans, policy ACCEPT: nothing to report
    "fail2ban-sshd.v4.rules": (True, {}, []),
    # ER accept in mangle only, mark-based filter chains, policy ACCEPT: NOTRACK'd VXLAN is not dropped by a policy
    "calico-felix.v4.rules": (True, {}, [("NGCT007", "info", "FORWARD", 2), ("NGCT007", "info", "cali-INPUT", 3)]),
    # no conntrack at all, everything default-accepted: mistakes that break nothing
    "sshguard-stateless-real.v4.rules": (False, {}, [("NGCT001", "low", "INPUT", 3), ("NGCT007", "info", "INPUT", 3)]),
    # a NAT router that never drops INVALID; 10.0.0.1 is the box itself (it serves DNS/DHCP/ssh on enp3s0), so the
    # DNAT to 10.0.0.1:22 is local delivery and needs no FORWARD accept
    "mistake-invalid-not-dropped-router.v4.rules": (False, {"local_addresses": ["10.0.0.1"]}, [
        ("NGCT007", "high", "FORWARD", 2), ("NGCT007", "medium", "INPUT", 5)]),
    # everything after the unconditional DROPs is dead: ER accepts unreachable, established packets dropped
    "mistake-established-after-drop.v4.rules": (False, {}, [
        ("NGCT006", "high", "FORWARD", 2), ("NGCT006", "high", "INPUT", 2), ("NGCT006", "info", "OUTPUT", 2),
        ("NGCT008", "info", "INPUT", 2)]),
    # no generic ER accept: RELATED (ICMP errors) never accepted
    "mistake-new-without-established.v4.rules": (False, {}, [("NGCT001", "high", "INPUT", 1),
                                                             ("NGCT008", "info", "INPUT", 1)]),
    # ER accept first but -m state, INVALID ends at the REJECT
    "mistake-state-module-rhel-default.v4.rules": (False, {}, [("NGCT007", "low", "INPUT", 5),
                                                               ("NGCT008", "info", "INPUT", 1)]),
    # NOTRACK handled correctly (UNTRACKED accepted); -m state
    "zulip-notrack-dns-untracked-ok.v4.rules": (True, {}, [("NGCT008", "info", "INPUT", 3)]),
    # the same without UNTRACKED: the replies to this host's DNS queries (raw PREROUTING --sport 53) reach the final
    # DROP. Inbound queries (--dport 53) would be dropped tracked as well (nothing accepts NEW udp/53 but loopback,
    # which accepts untracked packets too), and outbound ones pass OUTPUT -j ACCEPT: those NOTRACK rules harm nothing
    "mistake-notrack-without-untracked.v4.rules": (False, {}, [
        ("NGCT009", "high", "PREROUTING", 2), ("NGCT008", "info", "INPUT", 3)]),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_verdict_agrees_with_the_expert(name):
    correct, context, expected = EXPECTED[name]
    findings = _audit(name, **context)
    got = [(f["id"], f["severity"], f["chain"], f["position"]) for f in findings]
    assert sorted(got) == sorted(expected), "\n".join("%s %s %s" % (f["id"], f["severity"], f["detail"])
                                                      for f in findings)
    for finding in findings:
        assert finding["affects"] and finding["detail"] and finding["fix"], finding
    if correct:
        assert not [f for f in findings if f["severity"] in ("medium", "high")]


def test_every_file_has_a_verdict():
    _load("README.md")
    names = sorted(n for n in os.listdir(rulesets_dir()) if n.endswith(".rules"))
    assert names == sorted(EXPECTED)


def test_the_router_findings_say_which_packets():
    findings = _audit("mistake-invalid-not-dropped-router.v4.rules", local_addresses=["10.0.0.1"])
    forward = [f for f in findings if f["chain"] == "FORWARD"][0]
    assert "untranslated" in forward["affects"] and "skip NAT" in forward["detail"]
    inbound = [f for f in findings if f["chain"] == "INPUT"][0]
    assert "-i enp3s0 -p tcp --dport 80" in inbound["affects"]
    # without knowing 10.0.0.1 is local, the DNAT target looks remote, and FORWARD's accept names the
    # pre-translation port 47171: nothing accepts the translated flow to port 22
    dnat = [f for f in _audit("mistake-invalid-not-dropped-router.v4.rules") if f["id"] == "NGCT004"]
    assert [(f["severity"], f["table"], f["chain"]) for f in dnat] == [("high", "nat", "PREROUTING")]
    assert "10.0.0.1:22" in dnat[0]["detail"]


def test_new_without_established_says_what_is_missing():
    finding = [f for f in _audit("mistake-new-without-established.v4.rules") if f["id"] == "NGCT001"][0]
    assert "ICMP errors (RELATED, -i eth0 -p icmp) end at the INPUT policy DROP" in finding["detail"]
    assert "INPUT has no general RELATED,ESTABLISHED accept" in finding["detail"]


def test_established_after_drop_names_the_drop():
    findings = _audit("mistake-established-after-drop.v4.rules")
    inbound = [f for f in findings if f["id"] == "NGCT006" and f["chain"] == "INPUT"][0]
    assert "-A INPUT -j DROP (INPUT position 1)" in inbound["detail"]
    assert "dropped" in inbound["affects"]


def test_notrack_findings_name_the_drop_and_the_packets():
    findings = [f for f in _audit("mistake-notrack-without-untracked.v4.rules") if f["id"] == "NGCT009"]
    assert "-A INPUT -j DROP (INPUT position 4)" in findings[0]["detail"]
    assert "INPUT packets matching -p udp --sport 53 (UNTRACKED): dropped" in findings[0]["affects"]


def test_kube_firewall_negated_states_are_not_any_state():
    ruleset = parse_save(_load("kube-proxy-iptables.v4.rules"))
    rule = parse_rule('-m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 '
                      '-m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP')
    assert rule["states"] == ({"RELATED", "ESTABLISHED", "DNAT"}, True)
    localnet = [("-d", "127.0.0.1", False), ("-s", "192.0.2.9", False)]
    # established packets to 127/8 pass KUBE-FIREWALL; new ones from outside 127/8 end at it, DNATed ones do not
    assert evaluate(ruleset, "filter", "INPUT", ("ESTABLISHED", None), localnet).verdict == "ACCEPT"
    new = evaluate(ruleset, "filter", "INPUT", ("NEW", False), localnet)
    assert (new.verdict, new.end["chain"]) == ("DROP", "KUBE-FIREWALL")
    assert evaluate(ruleset, "filter", "INPUT", ("NEW", True), localnet).verdict == "ACCEPT"


def test_docker_replies_are_covered_by_the_per_bridge_accepts():
    for version in ("27", "28", "29"):
        ruleset = parse_save(_load("docker-%s-published-port.v4.rules" % version))
        # replies to a client of the published port leave the container through bridge1
        reply = [("-s", "192.0.2.2", False), ("-i", "bridge1", False), ("-o", "eth0", False), ("-p", "tcp", False),
                 ("--sport", "80", False)]
        assert evaluate(ruleset, "filter", "FORWARD", ("ESTABLISHED", None), reply).verdict == "ACCEPT", version
        # a NEW flow from outside to an unpublished container port is dropped
        other = [("-d", "192.0.2.2", False), ("-i", "eth0", False), ("-o", "bridge1", False), ("-p", "tcp", False),
                 ("--dport", "22", False)]
        assert evaluate(ruleset, "filter", "FORWARD", ("NEW", True), other).verdict == "DROP", version
