"""conntrack_info / conntrack_flush on IPv6 DNAT, SNAT, conntrack zones and connection marks, in real namespaces.

conntrack-tools in the same namespace is the oracle (parsed entry by entry).
"""

import subprocess
import time

from test_entries_dnat import (
    TCP_CLIENT,
    TCP_SERVER,
    _tuple_key,
    assert_same_entries,
    build_dnat_lab,
    conntrack_list,
    info,
)
from netns_lab import wait_line

V6_CLIENT = "2001:db8:1::5"
V6_VIP = "2001:db8:1::10"
V6_BACKEND = "2001:db8:2::10"


def test_ipv6_dnat_entries_match_conntrack(lab):
    client = lab.add("cli6")
    router = lab.add("rtr6")
    backend = lab.add("be6")
    lab.link(client, V6_CLIENT + "/64", router, V6_VIP + "/64")
    lab.link(router, "2001:db8:2::1/64", backend, V6_BACKEND + "/64")
    backend.run(["ip", "-6", "route", "add", "default", "via", "2001:db8:2::1"])
    router.run(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
    router.run(["ip6tables", "-w", "-t", "nat", "-A", "PREROUTING", "-d", V6_VIP, "-p", "tcp", "--dport", "443",
                "-j", "DNAT", "--to-destination", "[%s]:8443" % V6_BACKEND])
    server = backend.spawn(["python3", "-c", TCP_SERVER, "::", "8443"], stdout=subprocess.PIPE, text=True)
    wait_line(server, "ready")
    conns = []
    for _conn_index in range(3):
        conn = client.spawn(["python3", "-c", TCP_CLIENT, V6_VIP, "443", V6_CLIENT], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
        conns.append(int(wait_line(conn, "connected", timeout=20).split()[1]))

    result = info(router, family="ipv6", orig_dst=[V6_VIP], proto="tcp")
    assert result["families"] == ["ipv6"] and result["total_matched"] == 3
    assert sorted(entry["original"]["sport"] for entry in result["entries"]) == sorted(conns)
    for entry in result["entries"]:
        assert entry["family"] == "ipv6" and entry["state"] == "ESTABLISHED"
        assert entry["original"]["src"] == V6_CLIENT and entry["reply"]["src"] == V6_BACKEND
        assert entry["nat"]["summary"] == "dst [%s]:443 -> [%s]:8443" % (V6_VIP, V6_BACKEND)
    assert_same_entries(result["entries"], conntrack_list(router, "-f", "ipv6", "-p", "tcp", "--dst-nat"))

    # CIDR on the reply side, and the other family selects nothing
    by_cidr = info(router, reply_src=["2001:db8:2::/64"], proto="tcp")
    assert by_cidr["families"] == ["ipv6"] and by_cidr["total_matched"] == 3
    assert info(router, family="ipv4", proto="tcp")["total_matched"] == 0
    grouped = info(router, group_by=["family", "reply_src", "reply_sport"], limit=0)
    assert {"key": {"family": "ipv6", "reply_src": V6_BACKEND, "reply_sport": 8443}, "count": 3} in grouped["groups"]


def test_snat_and_dnat_both_shown(lab):
    client, router, backend = build_dnat_lab(lab)
    # the backend sees the router, not the client: masquerade towards the backend
    router.run(["iptables", "-w", "-t", "nat", "-A", "POSTROUTING", "-o", "v1a", "-j", "SNAT",
                "--to-source", "10.0.1.1"])
    server = backend.spawn(["python3", "-c", TCP_SERVER, "0.0.0.0", "8443"], stdout=subprocess.PIPE, text=True)
    wait_line(server, "ready")
    conn = client.spawn(["python3", "-c", TCP_CLIENT, "203.0.113.10", "443", "203.0.113.5"], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, text=True)
    sport = int(wait_line(conn, "connected", timeout=20).split()[1])
    result = info(router, status=["snat", "dnat"])
    assert result["total_matched"] == 1, result
    entry = result["entries"][0]
    nat = entry["nat"]
    assert nat["dnat"]["from"] == "203.0.113.10:443" and nat["dnat"]["to"] == "10.0.1.10:8443"
    assert nat["snat"]["from"] == "203.0.113.5:%d" % sport and nat["snat"]["address"] == "10.0.1.1"
    assert nat["summary"].startswith("dst 203.0.113.10:443 -> 10.0.1.10:8443; src 203.0.113.5:%d -> 10.0.1.1:" % sport)
    assert info(router, reply_dst=["10.0.1.1"], proto="tcp")["total_matched"] == 1
    assert_same_entries(result["entries"], conntrack_list(router, "--src-nat", "--dst-nat"))


SEND = r"""
import socket, sys
for port in sys.argv[1:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"x", ("127.0.0.1", int(port)))
"""


def test_zones_and_marks(lab):
    host = lab.add("zm")
    host.run(["sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=300"])
    host.run(["iptables", "-w", "-t", "raw", "-A", "OUTPUT", "-p", "udp", "--dport", "7000", "-j", "CT",
              "--zone", "7"])
    host.run(["iptables", "-w", "-t", "mangle", "-A", "OUTPUT", "-p", "udp", "--dport", "7001", "-j", "CONNMARK",
              "--set-mark", "0x101"])
    host.run(["iptables", "-w", "-t", "mangle", "-A", "OUTPUT", "-p", "udp", "--dport", "7002", "-j", "CONNMARK",
              "--set-mark", "0x200"])
    host.run(["python3", "-c", SEND, "7000", "7000", "7000", "7001", "7002", "7003"])
    time.sleep(0.2)

    zone7 = info(host, zone=7)
    assert zone7["total_matched"] == 3, zone7
    assert all(e["zone"] == 7 and e["original"]["dport"] == 7000 for e in zone7["entries"])
    assert_same_entries(zone7["entries"], conntrack_list(host, "-w", "7"))
    zone0 = info(host, zone=0, proto="udp")
    assert sorted(e["original"]["dport"] for e in zone0["entries"]) == [7001, 7002, 7003]

    masked = info(host, mark=0x100, mark_mask=0x100)
    assert [e["original"]["dport"] for e in masked["entries"]] == [7001] and masked["entries"][0]["mark"] == 0x101
    assert_same_entries(masked["entries"], conntrack_list(host, "-m", "0x100/0x100"))
    exact = info(host, mark=0x200)
    assert [e["original"]["dport"] for e in exact["entries"]] == [7002]
    assert_same_entries(exact["entries"], conntrack_list(host, "-m", "0x200"))
    # kernel-side and userspace-only filtering agree
    for args in ({"zone": 7}, {"mark": 0x100, "mark_mask": 0x100}, {"status": ["unreplied"], "proto": "udp"}):
        fast = info(host, **args)
        slow = info(host, kernel_filter=False, **args)
        assert fast["kernel_filter"] is True and slow["kernel_filter"] is False
        assert sorted(_tuple_key(e["original"]) for e in fast["entries"]) == sorted(
            _tuple_key(e["original"]) for e in slow["entries"]), args

    groups = info(host, proto="udp", group_by=["zone", "mark"], top=0, limit=0)["groups"]
    assert groups == [{"key": {"zone": 7, "mark": 0}, "count": 3},
                      {"key": {"zone": 0, "mark": 0}, "count": 1},
                      {"key": {"zone": 0, "mark": 0x101}, "count": 1},
                      {"key": {"zone": 0, "mark": 0x200}, "count": 1}], groups

    preview = host.run_module("conntrack_flush", {"zone": 7}, check_mode=True)
    assert preview["matched"] == 3 and preview["deleted"] == 0 and preview["changed"] is True
    assert len(conntrack_list(host, "-w", "7")) == 3
    flushed = host.run_module("conntrack_flush", {"zone": 7})
    assert flushed["deleted"] == 3 and flushed["changed"] is True, flushed
    assert conntrack_list(host, "-w", "7") == []
    assert sorted(e["original"]["dport"] for e in conntrack_list(host, "-p", "udp")) == [7001, 7002, 7003]
    flushed = host.run_module("conntrack_flush", {"mark": 0x100, "mark_mask": 0x100})
    assert flushed["deleted"] == 1
    assert sorted(e["original"]["dport"] for e in conntrack_list(host, "-p", "udp")) == [7002, 7003]


FAN_OUT = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for address, count in (("127.0.0.2", int(sys.argv[1])), ("127.0.0.3", int(sys.argv[2]))):
    for port in range(20000, 20000 + count):
        s.sendto(b"x", (address, port))
"""


def test_flush_of_several_delete_batches(lab):
    """More entries than one delete datagram holds: every batch is acknowledged and really deleted."""
    host = lab.add("batch")
    host.run(["sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=300"])
    host.run(["python3", "-c", FAN_OUT, "700", "5"])
    assert len(conntrack_list(host, "-d", "127.0.0.2")) == 700
    flushed = host.run_module("conntrack_flush", {"orig_dst": ["127.0.0.2"], "proto": "udp", "sample": 0})
    assert flushed["_rc"] == 0 and flushed["matched"] == 700 and flushed["deleted"] == 700, flushed
    assert flushed["vanished"] == 0 and flushed["sample"] == []
    assert conntrack_list(host, "-d", "127.0.0.2") == []
    assert len(conntrack_list(host, "-d", "127.0.0.3")) == 5
