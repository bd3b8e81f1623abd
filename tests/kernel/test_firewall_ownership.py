"""What the baseline owns, with packets: a foreign chain whose name merely starts with the prefix (SSH-GUARD under
the prefix SSH-) keeps its rules and its jump through apply and removal, so the source it bans stays out. And two
model spellings iptables-save prints differently ('+' as an interface, IPv4-mapped IPv6 sources) read back equal:
a second run changes nothing."""

import pytest

import traffic
from firewall_lab import BACKENDS, module, restore, rule_lines, save

GUARD = {"ipv4": "*filter\n:SSH-GUARD - [0:0]\n-A INPUT -j SSH-GUARD\n-A SSH-GUARD -s 10.97.0.66/32 -j DROP\nCOMMIT\n",
         "ipv6": "*filter\n:SSH-GUARD - [0:0]\n-A INPUT -j SSH-GUARD\n-A SSH-GUARD -s fd00:97::66/128 -j DROP\nCOMMIT\n"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_foreign_chain_starting_with_the_prefix_is_left_alone(lab, backend):
    client, server = lab.add("cl", False), lab.add("sv", False)
    dev = lab.link(client, "10.97.0.1/24", server, "10.97.0.2/24")[0]
    lab.link(client, "fd00:97::1/64", server, "fd00:97::2/64")
    client.run(["ip", "addr", "add", "10.97.0.66/24", "dev", dev])
    client.run(["ip", "-6", "addr", "add", "fd00:97::66/64", "dev", "v1a", "nodad"])
    traffic.serve(server, "sv", tcp=[22])
    for family, text in GUARD.items():
        restore(server, backend, family, text)

    def banned():
        return (traffic.tcp(client, "10.97.0.2", 22, source="10.97.0.66"),
                traffic.tcp(client, "fd00:97::2", 22, source="fd00:97::66"),
                traffic.tcp(client, "10.97.0.2", 22, source="10.97.0.1"))

    assert banned() == ("timeout", "timeout", "open")
    model = {"prefix": "SSH-", "backend": backend, "state_dir": "/tmp/ngct-unused",
             "input": {"services": [{"ports": [9000]}], "final_action": "return"}}
    for state in ("present", "present", "absent"):
        result = module(server, "iptables_baseline", dict(model, state=state))
        assert result["_rc"] == 0, result
        assert banned() == ("timeout", "timeout", "open"), state
        assert "-A SSH-GUARD -s 10.97.0.66/32 -j DROP" in rule_lines(save(server, backend, "ipv4"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_wildcard_interface_and_mapped_sources_read_back_equal(lab, backend):
    ns = lab.add("fw", False)
    model = {"backend": backend, "state_dir": "/tmp/ngct-unused",
             "input": {"invalid_drop": {"in_interfaces": ["+"]},
                       "services": [{"ports": [22], "interfaces": ["+"], "sources": ["::ffff:10.1.2.3/104"]}]}}
    first = module(ns, "iptables_baseline", model)
    assert first["_rc"] == 0 and first["changed"], first
    second = module(ns, "iptables_baseline", model)
    assert second["_rc"] == 0 and second["changed"] is False, second
    assert "-A NG-CT-INPUT -s ::ffff:10.0.0.0/104 -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT" in \
        rule_lines(save(ns, backend, "ipv6"))
