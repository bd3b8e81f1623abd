"""What IPv6 and path MTU discovery need, with real packets between namespaces (python raw sockets, no scapy):

* under a drop default with ``icmp: false`` and ``icmp_echo: false``, neighbour discovery still works (a TCP
  connection to the one declared port succeeds), MLD reports and queries (ICMPv6 130-132, 143, hop limit 1) and
  DHCPv6 replies (udp 547 -> 546 between link-local addresses) reach the host, while an echo request, an MLD
  packet with another hop limit and a "DHCPv6 reply" from a global address do not;
* an ICMP "fragmentation needed" / ICMPv6 "packet too big" about a NOTRACK flow reaches the server, whose route
  then carries the smaller path MTU (the error is INVALID to conntrack, so it must be accepted before the INVALID
  drop)."""

import subprocess
import sys

import pytest

import traffic
from firewall_lab import BACKENDS, module
from netns_lab import wait_until

# A raw ICMPv6 receiver: prints "<type> <hop limit> <source>" for every ICMPv6 packet delivered to this host;
# exits after 3 s without one.
RAW_RECEIVER = r"""
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
s.settimeout(3)
print("ready", flush=True)
while True:
    try:
        data, anc, _flags, peer = s.recvmsg(2048, socket.CMSG_SPACE(4))
    except socket.timeout:
        break
    hops = [int.from_bytes(d, "little") for level, kind, d in anc if kind == socket.IPV6_HOPLIMIT]
    print(data[0], hops[0] if hops else -1, peer[0], flush=True)
"""
# Send one ICMPv6 message of a type to a destination (link scope via the interface) with a hop limit.
RAW_SEND = r"""
import socket, struct, sys
kind, dest, ifname, hops = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, hops)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, hops)
index = socket.if_nametoindex(ifname)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
group = socket.inet_pton(socket.AF_INET6, "ff02::1:3")
body = struct.pack("!BBHHH", kind, 0, 0, 0, 0) + group   # the kernel fills in the ICMPv6 checksum
s.sendto(body, (dest, 0, 0, index))
"""
DHCP_SEND = r"""
import socket, sys
source, dest, ifname = sys.argv[1], sys.argv[2], sys.argv[3]
index = socket.if_nametoindex(ifname)
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind((source, 547, 0, index if source.startswith("fe80") else 0))
s.sendto(b"\x07dhcpv6-reply", (dest, 546, 0, index))
"""
DHCP_RECEIVE = r"""
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::", 546))
s.settimeout(3)
print("ready", flush=True)
while True:
    try:
        data, peer = s.recvfrom(512)
    except socket.timeout:
        break
    print("dhcp", peer[0].split("%")[0], flush=True)
"""


def _link_local(ns, dev):
    def ready():
        out = ns.run(["ip", "-6", "addr", "show", "dev", dev, "scope", "link"]).stdout
        return "tentative" not in out and "inet6 fe80" in out and out.split("inet6 ")[1].split("/")[0]
    return wait_until(ready, 15)


def _lines(proc):
    """Everything a receiver printed until it exited (3 s after the last packet)."""
    out, _err = proc.communicate(timeout=60)
    return [line.strip() for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_ipv6_keeps_working_under_a_drop_default_without_icmp(lab, backend):
    client, server = lab.add("cl", False), lab.add("sv", False)
    cdev, sdev = lab.link(client, "fd00:98::1/64", server, "fd00:98::2/64")
    c_ll, s_ll = _link_local(client, cdev), _link_local(server, sdev)
    assert c_ll and s_ll
    traffic.serve(server, "sv", tcp=[9000])
    model = {"backend": backend, "families": ["ipv6"], "state_dir": "/tmp/ngct-unused",
             "input": {"icmp": False, "icmp_echo": False, "final_action": "drop", "services": [{"ports": [9000]}]}}
    result = module(server, "iptables_baseline", model)
    assert result["_rc"] == 0 and result["changed"], result
    # neighbour discovery: the client has no neighbour entry yet; the connection needs NS/NA both ways
    assert traffic.tcp(client, "fd00:98::2", 9000, timeout=5) == "open"
    icmp = server.spawn([sys.executable, "-c", RAW_RECEIVER], stdout=subprocess.PIPE, text=True)
    assert icmp.stdout.readline().strip() == "ready"
    dhcp = server.spawn([sys.executable, "-c", DHCP_RECEIVE], stdout=subprocess.PIPE, text=True)
    assert dhcp.stdout.readline().strip() == "ready"
    for kind in (130, 131, 132, 143):
        client.run([sys.executable, "-c", RAW_SEND, str(kind), "ff02::1", cdev, "1"])
    client.run([sys.executable, "-c", RAW_SEND, "131", "ff02::1", cdev, "64"])      # MLD with a routed hop limit
    client.run([sys.executable, "-c", RAW_SEND, "128", s_ll, cdev, "64"])           # echo request: icmp_echo off
    client.run([sys.executable, "-c", DHCP_SEND, c_ll, s_ll, cdev])                  # DHCPv6 reply, link-local
    client.run([sys.executable, "-c", DHCP_SEND, "fd00:98::1", "fd00:98::2", cdev])  # same from a global address
    seen = _lines(icmp)
    received = sorted(set((int(line.split()[0]), int(line.split()[1])) for line in seen
                          if line.split()[2].split("%")[0] == c_ll and int(line.split()[0]) in (128, 130, 131, 132, 143)))
    assert received == [(130, 1), (131, 1), (132, 1), (143, 1)], seen
    assert _lines(dhcp) == ["dhcp %s" % c_ll]


PMTU_SERVER = r"""
import socket, sys
fam = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
if fam == socket.AF_INET:
    s.setsockopt(socket.IPPROTO_IP, 10, 2)    # IP_MTU_DISCOVER = IP_PMTUDISC_DO: DF set, never fragment
else:
    s.setsockopt(socket.IPPROTO_IPV6, 23, 2)  # IPV6_MTU_DISCOVER = IPV6_PMTUDISC_DO
s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", 9500))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(64)
    try:
        s.sendto(b"x" * 1400, peer)
    except OSError:
        s.sendto(b"small", peer)              # EMSGSIZE once the path MTU is known
"""


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_path_mtu_discovery_works_for_a_notrack_flow(lab, backend, family):
    client, router, server = lab.add("cl", False), lab.add("rt", False), lab.add("sv", False)
    v6 = family == "ipv6"
    addrs = (("fd00:99:1::2/64", "fd00:99:1::1/64", "fd00:99:2::1/64", "fd00:99:2::2/64") if v6 else
             ("10.99.1.2/24", "10.99.1.1/24", "10.99.2.1/24", "10.99.2.2/24"))
    cdev, rdev = lab.link(client, addrs[0], router, addrs[1])
    lab.link(router, addrs[2], server, addrs[3])
    ip = ["ip", "-6"] if v6 else ["ip", "-4"]
    client.run(ip + ["route", "add", "default", "via", addrs[1].split("/", maxsplit=1)[0]])
    server.run(ip + ["route", "add", "default", "via", addrs[2].split("/", maxsplit=1)[0]])
    router.run(["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])
    # the router's link towards the client is narrower than the rest of the path
    router.run(["ip", "link", "set", rdev, "mtu", "1280" if v6 else "1000"])
    proc = server.spawn([sys.executable, "-c", PMTU_SERVER, "6" if v6 else "4"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    model = {"backend": backend, "families": [family], "state_dir": "/tmp/ngct-unused",
             "input": {"final_action": "drop", "icmp_echo": False},
             "notrack": [{"name": "bulk", "proto": "udp", "ports": [9500]}]}
    result = module(server, "iptables_baseline", model)
    assert result["_rc"] == 0 and result["changed"], result
    client_address = addrs[0].split("/", maxsplit=1)[0]
    server_address = addrs[3].split("/", maxsplit=1)[0]
    mtu = "1280" if v6 else "1000"

    def learned():
        traffic.udp(client, server_address, 9500, timeout=1)
        return ("mtu %s" % mtu) in server.run(ip + ["route", "get", client_address]).stdout

    assert wait_until(learned, 10, 0.5), server.run(ip + ["route", "get", client_address]).stdout
    # and the flow really was untracked on the server (no conntrack entry for it)
    assert server.run(["conntrack", "-L", "-f", family, "-p", "udp", "--orig-port-dst", "9500"],
                      check=False).stdout.strip() == ""
