"""Another tool's untracked flows, with packets: a raw-table NOTRACK rule the baseline does not own (as kube-proxy or
a CNI writes for VXLAN, udp 4789) makes its packets UNTRACKED, which a drop default drops; input.untracked_services
accepts exactly that flow (the port next to it stays closed). IPv4 and IPv6, both backends."""

import pytest

import traffic
from firewall_lab import BACKENDS, module, restore

FOREIGN = "*raw\n:KUBE-NOTRACK - [0:0]\n-A PREROUTING -j KUBE-NOTRACK\n" \
          "-A KUBE-NOTRACK -p udp -m udp --dport 4789 -j CT --notrack\n" \
          "-A OUTPUT -p udp -m udp --sport 4789 -j CT --notrack\nCOMMIT\n"


@pytest.mark.parametrize("backend", BACKENDS)
def test_another_tools_untracked_flow_can_be_allowed(lab, backend):
    client, server = lab.add("cl", False), lab.add("sv", False)
    lab.link(client, "10.90.0.1/24", server, "10.90.0.2/24")
    lab.link(client, "fd00:90::1/64", server, "fd00:90::2/64")
    for family in ("ipv4", "ipv6"):
        restore(server, backend, family, FOREIGN)
    traffic.serve(server, "sv", udp=[4789, 4790])
    base = {"backend": backend, "state_dir": "/tmp/ngct-unused",
            "input": {"final_action": "drop", "services": [{"proto": "udp", "ports": [4790], "sources": ["192.0.2.0/24"]}]}}
    assert module(server, "iptables_baseline", base)["changed"]

    def answers():
        return [traffic.udp(client, address, port).startswith("sv:") for address in ("10.90.0.2", "fd00:90::2")
                for port in (4789, 4790)]

    assert answers() == [False, False, False, False]
    vxlan = [{"name": "vxlan", "proto": "udp", "ports": [4789]}]
    allowed = dict(base, input=dict(base["input"], untracked_services=vxlan))
    result = module(server, "iptables_baseline", allowed)
    assert result["_rc"] == 0 and result["changed"], result
    assert answers() == [True, False, True, False]
    assert module(server, "iptables_baseline", allowed)["changed"] is False
