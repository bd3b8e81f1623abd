"""NOTRACK is bounded to the flow it declares, with packets: an outgoing NOTRACK flow does not open local ports to
its remote port, and NOTRACK on a router leaves forwarded (MASQUERADEd) packets tracked so NAT keeps working.
Both families; both backends."""

import pytest

import traffic
from firewall_lab import BACKENDS, module


def _args(backend, model):
    return dict(model, backend=backend, state_dir="/tmp/ngct-unused")


def _conntrack_lines(ns, family, *match):
    return [line for line in ns.run(["conntrack", "-L", "-f", family] + list(match), check=False).stdout.splitlines()
            if line.strip()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_outgoing_notrack_opens_no_local_port_to_its_remote_port(lab, backend):
    client, server = lab.add("cl", conntrack_rule=False), lab.add("sv", conntrack_rule=False)
    lab.link(client, "10.92.0.1/24", server, "10.92.0.2/24")
    lab.link(client, "fd00:92::1/64", server, "fd00:92::2/64")
    traffic.serve(server, "sv", tcp=[9000, 9001, 40000])
    # the server is a client of port 443 elsewhere and exempts that flow from conntrack
    model = {"input": {"services": [{"ports": [9000]}], "final_action": "drop"},
             "notrack": [{"name": "https-out", "proto": "tcp", "ports": [443], "direction": "out"}]}
    result = module(server, "iptables_baseline", _args(backend, model))
    assert result["_rc"] == 0 and result["changed"], result
    for address in ("10.92.0.2", "fd00:92::2"):
        # the declared service answers; a listening port that is not declared and a closed one do not, even to
        # packets sent from the remote port of the NOTRACK flow (inside and outside the local client port range)
        assert traffic.tcp(client, address, 9000) == "open", address
        for port in (9001, 9002, 40000, 40001):
            assert traffic.tcp(client, address, port, sport=443) == "timeout", (address, port)
            assert traffic.tcp(client, address, port) == "timeout", (address, port)
    # the declared flow works, statelessly: the server connects out to port 443 and keeps no conntrack entry
    traffic.serve(client, "cl", tcp=[443])
    for address, family in (("10.92.0.1", "ipv4"), ("fd00:92::1", "ipv6")):
        assert traffic.tcp(server, address, 443) == "open", address
        assert _conntrack_lines(server, family, "-p", "tcp", "--dport", "443") == [], family


def _router_lab(lab, backend):
    """lan -- router -- upstream; the router MASQUERADEs the LAN behind its uplink address and serves DNS itself.
    The upstream host has no route to the LAN: only a MASQUERADEd (tracked) query can be answered."""
    lan, router, upstream = lab.add("lan", False), lab.add("rt", False), lab.add("up", False)
    lab.link(lan, "10.93.1.2/24", router, "10.93.1.1/24")
    lab.link(lan, "fd00:93:1::2/64", router, "fd00:93:1::1/64")
    rt_wan, _up = lab.link(router, "198.51.100.1/24", upstream, "198.51.100.53/24")
    rt_wan6, _up6 = lab.link(router, "2001:db8:93::1/64", upstream, "2001:db8:93::53/64")
    lan.run(["ip", "route", "add", "default", "via", "10.93.1.1"])
    lan.run(["ip", "-6", "route", "add", "default", "via", "fd00:93:1::1"])
    router.run(["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])
    for tool, device in (("iptables", rt_wan), ("ip6tables", rt_wan6)):
        router.run(["%s-%s" % (tool, backend), "-w", "-t", "nat", "-A", "POSTROUTING", "-o", device, "-j",
                    "MASQUERADE"])
    traffic.serve(upstream, "up", udp=[53])
    traffic.serve(router, "rt", udp=[53])
    return lan, router


@pytest.mark.parametrize("backend", BACKENDS)
def test_router_notrack_for_dns_keeps_masquerade_working(lab, backend):
    lan, router = _router_lab(lab, backend)
    for address in ("198.51.100.53", "2001:db8:93::53"):
        assert traffic.udp(lan, address, 53).startswith("up:53:"), address  # the lab works before the baseline
    # the module's own "router with port forwarding" example
    model = {"forward": {"enabled": True, "accept_dnat": True, "invalid_drop": {"enabled": True}},
             "notrack": [{"name": "dns", "proto": "udp", "ports": [53]}]}
    result = module(router, "iptables_baseline", _args(backend, model))
    assert result["_rc"] == 0 and result["changed"], result
    # LAN clients still resolve through the MASQUERADE (the upstream host sees the router's address)
    assert traffic.udp(lan, "198.51.100.53", 53) == "up:53:198.51.100.1"
    assert traffic.udp(lan, "2001:db8:93::53", 53) == "up:53:2001:db8:93::1"
    # and the router's own DNS service is still exempt from conntrack (answered, no entry kept)
    for address, family in (("10.93.1.1", "ipv4"), ("fd00:93:1::1", "ipv6")):
        assert traffic.udp(lan, address, 53).startswith("rt:53:"), address
        assert _conntrack_lines(router, family, "-p", "udp", "--dport", "53", "-d", address) == [], family
