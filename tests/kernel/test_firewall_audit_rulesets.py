"""iptables_audit on rule sets written by other projects and real users, loaded with the real iptables-restore into
a namespace (both backends; both families where the file exists): the module reads the real iptables-save output.
Where a finding says packets are affected, the packets are sent and the claim is checked:

- the NAT router that never drops INVALID forwards an INVALID packet with its internal source address (it skips
  MASQUERADE) and accepts one on a local port; with an INVALID drop added it does neither;
- with the ESTABLISHED accept after an unconditional DROP, replies to the host's own connection (and loopback) are
  dropped and the accept's counter stays 0; with the DROP removed the connection works;
- NOTRACK without an UNTRACKED accept: the reply to a DNS-shaped query is dropped; Zulip's correct set lets it in.

The rule sets live outside the repository (see tests/unit/plugins/module_utils/_firewall/test_audit_rulesets.py):
without them these tests skip with the reason, under CI=true they fail.
"""

import os
import re
import subprocess
import time

import pytest

from firewall_lab import BACKENDS, TOOL, module, save
import shared_reference


def _text(name):
    path = os.path.join(shared_reference.require("reference", "rulesets"), name)
    if not os.path.isfile(path):
        pytest.fail("foreign rule set %s is missing from the shared reference" % path)
    with open(path) as handle:
        return handle.read()


def _load(ns, backend, name):
    family = "ipv6" if ".v6." in name else "ipv4"
    ns.run(["%s-%s-restore" % (TOOL[family], backend)], input_text=_text(name))
    return family


def _audit(ns, families):
    result = module(ns, "iptables_audit", {"multi_homed": False, "tcp_be_liberal": False, "families": families})
    assert result["_rc"] == 0, result
    return result


def _got(result):
    return sorted((f["id"], f["severity"], f["family"], f["chain"], f["position"]) for f in result["findings"])


def _own_address(ns, address):
    """Give the namespace an address of its own (a veth pair inside it; no dummy driver needed)."""
    ns.run(["ip", "link", "add", "enp3s0", "type", "veth", "peer", "name", "enp3s0p"])
    ns.run(["ip", "addr", "add", address, "dev", "enp3s0"])
    ns.run(["ip", "link", "set", "enp3s0", "up"])


# the same verdicts the unit tier asserts on the file text, here on the real iptables-save output
CASES = {
    ("ufw-default.v4.rules", "ufw-default.v6.rules"): [],
    ("ufw-fail2ban.v4.rules",): [],
    ("docker-28-published-port.v4.rules",): [("NGCT007", "low", "ipv4", "DOCKER", 1)],
    ("kube-proxy-iptables.v4.rules",): [("NGCT003", "low", "ipv4", "KUBE-FORWARD", 1),
                                        ("NGCT007", "info", "ipv4", "KUBE-NODEPORTS", 1)],
    ("zulip-notrack-dns-untracked-ok.v4.rules",): [("NGCT008", "info", "ipv4", "INPUT", 3)],
    ("mistake-notrack-without-untracked.v4.rules",): [("NGCT008", "info", "ipv4", "INPUT", 3),
                                                      ("NGCT009", "high", "ipv4", "PREROUTING", 2)],
    ("mistake-invalid-not-dropped-router.v4.rules",): [("NGCT007", "high", "ipv4", "FORWARD", 2),
                                                       ("NGCT007", "medium", "ipv4", "INPUT", 5)],
    ("mistake-established-after-drop.v4.rules",): [
        ("NGCT006", "high", "ipv4", "FORWARD", 2), ("NGCT006", "high", "ipv4", "INPUT", 2),
        ("NGCT006", "info", "ipv4", "OUTPUT", 2), ("NGCT008", "info", "ipv4", "INPUT", 2)],
    ("mistake-state-module-rhel-default.v4.rules",): [("NGCT007", "low", "ipv4", "INPUT", 5),
                                                      ("NGCT008", "info", "ipv4", "INPUT", 1)],
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("names", sorted(CASES), ids=lambda names: names[0].split(".")[0])
def test_real_save_output_gets_the_expert_verdict(lab, backend, names):
    ns = lab.add("rs", conntrack_rule=False)
    if "router" in names[0]:
        _own_address(ns, "10.0.0.1/24")  # the box's own LAN address: its DNAT to 10.0.0.1:22 is local
    families = sorted(set(_load(ns, backend, name) for name in names))
    result = _audit(ns, families)
    assert _got(result) == sorted(CASES[names]), "\n".join("%s %s %s" % (f["id"], f["severity"], f["detail"])
                                                           for f in result["findings"])
    tool = "iptables" if families == ["ipv4"] else "ip6tables"
    assert "/usr/sbin/%s-%s-save" % (tool, backend) in result["sources"]
    # the audit read the real save output, which iptables rewrites (e.g. "-p tcp --dport" -> "-p tcp -m tcp")
    for finding in result["findings"]:
        if finding["rule"]:
            assert finding["rule"] in save(ns, backend, finding["family"]), finding["rule"]


def test_router_dnat_to_a_remote_address_needs_forward(lab):
    ns = lab.add("rs", conntrack_rule=False)
    _load(ns, "nft", "mistake-invalid-not-dropped-router.v4.rules")  # 10.0.0.1 is not this namespace's
    result = _audit(ns, ["ipv4"])
    dnat = [f for f in result["findings"] if f["id"] == "NGCT004"]
    assert [(f["severity"], f["table"], f["chain"], f["position"]) for f in dnat] == [("high", "nat", "PREROUTING", 1)]
    assert "10.0.0.1" not in result["context"]["local_addresses"]


# ---- traffic -----------------------------------------------------------------------------------------------------

SNIFF = r"""
import json, socket, struct, sys, time
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
sock.bind((sys.argv[1], 0))
sock.settimeout(0.2)
ports = set(int(p) for p in sys.argv[3].split(","))
print("ready", flush=True)
seen = []
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        frame = sock.recv(65535)
    except socket.timeout:
        continue
    ip = frame[14:]
    if len(ip) < 40 or ip[9] != 6:
        continue
    ihl = (ip[0] & 15) * 4
    sport, dport = struct.unpack("!HH", ip[ihl:ihl + 4])
    if dport in ports:
        seen.append({"src": socket.inet_ntoa(ip[12:16]), "dport": dport, "flags": ip[ihl + 13]})
print(json.dumps(seen), flush=True)
"""

# one TCP segment with no flags (conntrack: "invalid tcp flag combination" -> INVALID), correct checksum
NULL_SEGMENT = r"""
import socket, struct, sys
src, dst, dport = sys.argv[1], sys.argv[2], int(sys.argv[3])
header = struct.pack("!HHIIBBHHH", 40000, dport, 1000, 0, 5 << 4, 0, 65535, 0, 0)
pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(header))
data = pseudo + header
total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
while total >> 16:
    total = (total & 0xffff) + (total >> 16)
header = header[:16] + struct.pack("!H", ~total & 0xffff) + header[18:]
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
sock.sendto(header, (dst, 0))
"""


def _rename(ns, old, new):
    ns.run(["ip", "link", "set", old, "down"])
    ns.run(["ip", "link", "set", old, "name", new])
    ns.run(["ip", "link", "set", new, "up"])


def _counter(ns, backend, family, fragment):
    """Packet counter of the one rule whose iptables-save -c line contains ``fragment``."""
    text = ns.run(["%s-%s-save" % (TOOL[family], backend), "-c"]).stdout
    hits = [line for line in text.splitlines() if fragment in line]
    assert len(hits) == 1, (fragment, hits)
    return int(re.match(r"\[(\d+):\d+\]", hits[0]).group(1))


def _sniffed(wan, device, ports, action, seconds=3.0):
    import json
    proc = wan.spawn(["python3", "-c", SNIFF, device, str(seconds), ",".join(str(p) for p in ports)],
                     stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    action()
    out, _err = proc.communicate(timeout=seconds + 20)
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_nat_router_forwards_invalid_packets_untranslated(lab, backend):
    lan, router, wan = lab.add("lan", conntrack_rule=False), lab.add("rtr", conntrack_rule=False), \
        lab.add("wan", conntrack_rule=False)
    lab.link(router, "10.0.0.1/24", lan, "10.0.0.2/24")
    wan_side = lab.link(router, "198.51.100.1/24", wan, "198.51.100.2/24")[1]
    _rename(router, "v0a", "enp3s0")
    _rename(router, "v1a", "tun0")
    lan.run(["ip", "route", "add", "default", "via", "10.0.0.1"])
    wan.run(["ip", "route", "add", "default", "via", "198.51.100.1"])
    router.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])  # this namespace's own knob
    _load(router, backend, "mistake-invalid-not-dropped-router.v4.rules")
    findings = _audit(router, ["ipv4"])["findings"]
    claim = [f for f in findings if f["id"] == "NGCT007" and f["chain"] == "FORWARD"][0]
    assert claim["severity"] == "high" and "untranslated" in claim["affects"]

    def traffic():
        # a tracked flow (masqueraded) and an INVALID segment, both from the LAN host to the WAN host
        lan.python("import socket\ntry:\n socket.create_connection(('198.51.100.2', 8081), timeout=1)\n"
                   "except OSError:\n pass")
        lan.run(["python3", "-c", NULL_SEGMENT, "10.0.0.2", "198.51.100.2", "8082"])

    seen = _sniffed(wan, wan_side, (8081, 8082), traffic)
    syn = [p for p in seen if p["dport"] == 8081]
    null = [p for p in seen if p["dport"] == 8082]
    assert syn and syn[0]["src"] == "198.51.100.1", seen  # NAT works for tracked flows
    assert null and null[0]["src"] == "10.0.0.2" and null[0]["flags"] == 0, seen  # the INVALID one leaks unNATed

    # INPUT: an INVALID segment to a local service port is accepted by the stateless port accept
    before = _counter(router, backend, "ipv4", "-i enp3s0 -p tcp -m tcp --dport 80 -j ACCEPT")
    lan.run(["python3", "-c", NULL_SEGMENT, "10.0.0.2", "10.0.0.1", "80"])
    time.sleep(0.3)
    assert _counter(router, backend, "ipv4", "-i enp3s0 -p tcp -m tcp --dport 80 -j ACCEPT") == before + 1

    # the fix the finding names: drop INVALID before the accepts; the leak stops, NAT still works, the finding goes
    for chain in ("INPUT", "FORWARD"):
        router.run(["iptables-%s" % backend, "-w", "-I", chain, "1", "-m", "conntrack", "--ctstate", "INVALID",
                    "-j", "DROP"])
    seen = _sniffed(wan, wan_side, (8081, 8082), traffic)
    assert [p["src"] for p in seen if p["dport"] == 8081][:1] == ["198.51.100.1"], seen
    assert not [p for p in seen if p["dport"] == 8082], seen
    assert not [f for f in _audit(router, ["ipv4"])["findings"] if f["id"] == "NGCT007"]


SERVER = r"""
import socket, sys
family = socket.AF_INET
srv = socket.socket(family, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(16)
print("ready", flush=True)
while True:
    conn, _ = srv.accept()
    conn.close()
"""


def _connects(ns, address, port):
    code = ("import socket\ntry:\n socket.create_connection((%r, %d), timeout=2).close(); print('yes')\n"
            "except OSError: print('no')" % (address, port))
    return ns.python(code).stdout.strip() == "yes"


@pytest.mark.parametrize("backend", BACKENDS)
def test_established_accept_after_drop_drops_replies(lab, backend):
    host, peer = lab.add("h", conntrack_rule=False), lab.add("p", conntrack_rule=False)
    lab.link(host, "10.0.1.1/24", peer, "10.0.1.2/24")
    for ns, address in ((peer, "10.0.1.2"), (host, "127.0.0.1")):
        proc = ns.spawn(["python3", "-c", SERVER, address, "9000"], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
    assert _connects(host, "10.0.1.2", 9000) and _connects(host, "127.0.0.1", 9000)  # before the rule set
    _load(host, backend, "mistake-established-after-drop.v4.rules")
    claim = [f for f in _audit(host, ["ipv4"])["findings"] if f["id"] == "NGCT006" and f["chain"] == "INPUT"][0]
    assert claim["severity"] == "high" and "dropped" in claim["affects"]
    established = "-A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT"
    # replies to the host's own connection, and loopback, end at the first rule; the ER accept never counts
    assert not _connects(host, "10.0.1.2", 9000)
    assert not _connects(host, "127.0.0.1", 9000)
    assert _counter(host, backend, "ipv4", established) == 0
    assert _counter(host, backend, "ipv4", "-A INPUT -j DROP") > 0
    # the fix: the unconditional DROP out of the way (here: removed) -> the ER accept is reached, replies come in
    host.run(["iptables-%s" % backend, "-w", "-D", "INPUT", "1"])
    assert _connects(host, "10.0.1.2", 9000)
    assert _counter(host, backend, "ipv4", established) > 0
    assert not [f for f in _audit(host, ["ipv4"])["findings"] if f["id"] == "NGCT006" and f["chain"] == "INPUT"]


UDP_ECHO = r"""
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], 53))
print("ready", flush=True)
while True:
    data, peer = sock.recvfrom(2048)
    sock.sendto(data, peer)
"""

QUERY = r"""
import socket
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(1.5)
sock.sendto(b"query", ("10.0.2.2", 53))
try:
    print("answer" if sock.recvfrom(2048)[0] == b"query" else "other")
except socket.timeout:
    print("none")
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_notrack_without_untracked_drops_the_replies(lab, backend):
    host, resolver = lab.add("h", conntrack_rule=False), lab.add("dns", conntrack_rule=False)
    lab.link(host, "10.0.2.1/24", resolver, "10.0.2.2/24")
    proc = resolver.spawn(["python3", "-c", UDP_ECHO, "10.0.2.2"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    _load(host, backend, "mistake-notrack-without-untracked.v4.rules")
    claim = [f for f in _audit(host, ["ipv4"])["findings"] if f["id"] == "NGCT009"]
    assert [(f["severity"], f["chain"]) for f in claim] == [("high", "PREROUTING")]
    assert "--sport 53" in claim[0]["affects"]
    assert host.python(QUERY).stdout.strip() == "none"  # the untracked reply ends at -A INPUT -j DROP
    # Zulip's original accepts UNTRACKED: the same query gets its answer, and the audit has no NGCT009
    _load(host, backend, "zulip-notrack-dns-untracked-ok.v4.rules")
    assert host.python(QUERY).stdout.strip() == "answer"
    assert not [f for f in _audit(host, ["ipv4"])["findings"] if f["id"] == "NGCT009"]
