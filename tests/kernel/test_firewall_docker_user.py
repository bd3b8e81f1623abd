"""forward.accept_dnat on a Docker host, with packets: a namespace router carries the FORWARD / DOCKER-USER /
DOCKER-FORWARD / DOCKER layout Docker 28 writes for one container publishing 8080->80 (FORWARD policy DROP, the
DNAT in nat DOCKER, MASQUERADE), plus a user's DROP in DOCKER-USER for one source. With the baseline applied
(forward section on, accept_dnat, final drop) the published port still answers the other source and the dropped
source stays out. IPv4 and IPv6, both backends."""

import pytest

import traffic
from firewall_lab import BACKENDS, module, restore
from netns_lab import wait_until

# the published-port layout of Docker 28 for a user-defined bridge named bridge1 (see
# /work/shared/reference/rulesets/docker-28-published-port.v4.rules for what dockerd writes)
LAYOUT = """*filter
:FORWARD DROP [0:0]
:DOCKER - [0:0]
:DOCKER-BRIDGE - [0:0]
:DOCKER-CT - [0:0]
:DOCKER-FORWARD - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-FORWARD
-A DOCKER -d {container} ! -i bridge1 -o bridge1 -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER ! -i bridge1 -o bridge1 -j DROP
-A DOCKER-BRIDGE -o bridge1 -j DOCKER
-A DOCKER-CT -o bridge1 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A DOCKER-FORWARD -j DOCKER-CT
-A DOCKER-FORWARD -j DOCKER-BRIDGE
-A DOCKER-FORWARD -i bridge1 -j ACCEPT
-A DOCKER-USER -s {banned} -j DROP
COMMIT
*nat
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s {subnet} ! -o bridge1 -j MASQUERADE
-A DOCKER -i bridge1 -j RETURN
-A DOCKER ! -i bridge1 -p tcp -m tcp --dport 8080 -j DNAT --to-destination {target}
COMMIT
"""
FAMILY = {
    "ipv4": dict(outside=("203.0.113.1/24", "203.0.113.10/24", "203.0.113.66/24"), inside=("192.0.2.1/24", "192.0.2.2/24"),
                 container="192.0.2.2/32", subnet="192.0.2.0/24", target="192.0.2.2:80", banned="203.0.113.66/32"),
    "ipv6": dict(outside=("2001:db8:95::1/64", "2001:db8:95::10/64", "2001:db8:95::66/64"),
                 inside=("fd00:95:c::1/64", "fd00:95:c::2/64"), container="fd00:95:c::2/128",
                 subnet="fd00:95:c::/64", target="[fd00:95:c::2]:80", banned="2001:db8:95::66/128"),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_docker_user_drop_still_applies_to_a_published_port(lab, backend, family):
    spec = FAMILY[family]
    outside, router, container = lab.add("out", False), lab.add("rt", False), lab.add("ctr", False)
    lab.link(outside, spec["outside"][1], router, spec["outside"][0])
    outside.run(["ip", "addr", "add", spec["outside"][2], "dev", "v0a"] + (["nodad"] if family == "ipv6" else []))
    bridge = lab.link(router, spec["inside"][0], container, spec["inside"][1])[0]
    router.run(["ip", "link", "set", bridge, "down"])
    router.run(["ip", "link", "set", bridge, "name", "bridge1"])
    router.run(["ip", "link", "set", "bridge1", "up"])
    if family == "ipv6":  # a link going down loses its IPv6 addresses
        router.run(["ip", "-6", "addr", "add", spec["inside"][0], "dev", "bridge1", "nodad"])
    gateway = spec["inside"][0].split("/")[0]
    container.run(["ip"] + (["-6"] if family == "ipv6" else []) + ["route", "add", "default", "via", gateway])
    router.run(["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])
    restore(router, backend, family, LAYOUT.format(**spec))
    traffic.serve(container, "ctr", tcp=[80])
    published = spec["outside"][0].split("/")[0]
    allowed, banned = spec["outside"][1].split("/")[0], spec["outside"][2].split("/")[0]

    def reach():
        return (traffic.tcp(outside, published, 8080, source=allowed),
                traffic.tcp(outside, published, 8080, source=banned))

    # the lab is ready once the published port answers (IPv6 neighbour discovery on fresh links may take a moment)
    assert wait_until(lambda: traffic.tcp(outside, published, 8080, source=allowed) == "open", 15)
    assert reach() == ("open", "timeout")  # Docker's own rules: published, and the user's DROP applies
    model = {"backend": backend, "families": [family], "state_dir": "/tmp/ngct-unused",
             "forward": {"enabled": True, "accept_dnat": True, "final_action": "drop"}}
    result = module(router, "iptables_baseline", model)
    assert result["_rc"] == 0 and result["changed"], result
    assert reach() == ("open", "timeout")
    assert module(router, "iptables_baseline", model)["changed"] is False
    # a DNAT nobody else decides on (no Docker ACCEPT for it) is still accepted by accept_dnat, at the end of FORWARD
    router.run(["%s-%s" % ("iptables" if family == "ipv4" else "ip6tables", backend), "-w", "-F", "DOCKER"])
    assert reach() == ("open", "timeout")
