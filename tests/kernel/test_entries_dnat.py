"""conntrack_info and conntrack_flush against a real DNAT router built in namespaces.

client 203.0.113.5 --veth-- router (203.0.113.10 = the VIP, 10.0.1.1) --veth-- backend 10.0.1.10 / 10.0.1.11

The router DNATs 203.0.113.10:443/tcp to 10.0.1.10:8443 and 203.0.113.10:53/udp to 10.0.1.10:5353; forwarding is
enabled inside the router namespace only. conntrack-tools in the router namespace is the oracle: every entry
the module returns is compared with the line ``conntrack -L`` prints for it.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import pytest

from netns_lab import C_ENV, COLLECTIONS_PATH, MODULES_DIR, wait_line

CLIENT_ADDR = "203.0.113.5"
VIP = "203.0.113.10"
BACKEND = "10.0.1.10"
BACKEND_NEW = "10.0.1.11"

TCP_SERVER = r"""
import socket, sys, threading
def echo(conn):
    while True:
        data = conn.recv(64)
        if not data:
            break
        conn.sendall(data)
    conn.close()
srv = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(8)
print("ready", flush=True)
while True:
    conn, _ = srv.accept()
    threading.Thread(target=echo, args=(conn,), daemon=True).start()
"""

# connects, says "connected <port>", echoes one message, closes when told to on stdin
TCP_CLIENT = r"""
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
c = socket.socket(family); c.settimeout(30)
c.bind((sys.argv[3], 0))
c.connect((sys.argv[1], int(sys.argv[2])))
c.sendall(b"ping"); assert c.recv(64) == b"ping"
print("connected", c.getsockname()[1], flush=True)
sys.stdin.readline()
c.close()
print("closed", flush=True)
sys.stdin.readline()
"""

# bound to one address so replies come from the address the client was DNATed to
UDP_ECHO = r"""
import socket, sys
s = socket.socket(); s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(64)
    s.sendto(data, peer)
"""

# N UDP flows from distinct source ports; "send" on stdin sends one datagram on each and waits for the echoes
UDP_FLOWS = r"""
import socket, sys
target = (sys.argv[1], int(sys.argv[2])); n = int(sys.argv[3])
socks = []
for _ in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5); s.bind((sys.argv[4], 0)); socks.append(s)
print("ports", " ".join(str(s.getsockname()[1]) for s in socks), flush=True)
for line in sys.stdin:
    got = 0
    for s in socks:
        s.sendto(b"x", target)
    for s in socks:
        try:
            s.recvfrom(64); got += 1
        except OSError:
            pass
    print("echoed", got, flush=True)
"""


# ---------------------------------------------------------------------------------------------------------
# conntrack -L as the oracle


def parse_conntrack_line(line):
    """One ``conntrack -L`` line -> dict comparable with a conntrack_info entry."""
    tokens = line.split()
    entry = {"proto": tokens[0], "proto_num": int(tokens[1]), "timeout": int(tokens[2]), "state": None,
             "assured": False, "unreplied": False, "mark": 0, "zone": 0}
    rest = tokens[3:]
    if rest and "=" not in rest[0] and not rest[0].startswith("["):
        entry["state"] = rest[0]
        rest = rest[1:]
    tuples = [{}, {}]
    side = 0
    for token in rest:
        if token == "[ASSURED]":
            entry["assured"] = True
            continue
        if token == "[UNREPLIED]":
            entry["unreplied"] = True
            continue
        if "=" not in token:
            continue
        key, value = token.split("=", 1)
        if key in ("src", "dst", "sport", "dport", "type", "code", "id"):
            if key in tuples[side] and side == 0:
                side = 1
            tuples[side][key] = value if key in ("src", "dst") else int(value)
        elif key in ("mark", "zone", "use"):
            entry[key] = int(value)
    entry["original"], entry["reply"] = tuples
    return entry


def conntrack_list(ns, *args):
    proc = ns.run(["conntrack", "-L"] + list(args), check=False)
    assert proc.returncode == 0, proc.stderr
    return [parse_conntrack_line(line) for line in proc.stdout.splitlines() if line.strip()]


def _tuple_key(tup):
    return tuple(sorted(tup.items()))


def assert_same_entries(module_entries, oracle_entries, timeout_slack=3):
    """Entry by entry: same tuples, state, flags, mark, zone; timeouts within the time between the two reads."""
    ours = dict((_tuple_key(entry["original"]), entry) for entry in module_entries)
    assert len(ours) == len(module_entries), "duplicate original tuples in the module result"
    theirs = dict((_tuple_key(entry["original"]), entry) for entry in oracle_entries)
    assert sorted(ours) == sorted(theirs), "different entries:\nmodule %s\nconntrack %s" % (sorted(ours), sorted(theirs))
    for key, oracle in theirs.items():
        entry = ours[key]
        assert entry["proto"] == oracle["proto"] and entry["proto_num"] == oracle["proto_num"], (entry, oracle)
        assert entry["reply"] == oracle["reply"], (entry, oracle)
        assert entry["state"] == oracle["state"], (entry, oracle)
        assert ("assured" in entry["flags"]) == oracle["assured"], (entry, oracle)
        assert ("unreplied" in entry["flags"]) == oracle["unreplied"], (entry, oracle)
        assert entry["mark"] == oracle["mark"] and entry["zone"] == oracle["zone"], (entry, oracle)
        assert abs(entry["timeout"] - oracle["timeout"]) <= timeout_slack, (entry, oracle)


# ---------------------------------------------------------------------------------------------------------
# the lab


def build_dnat_lab(lab):
    client = lab.add("cli")
    router = lab.add("rtr")
    backend = lab.add("be")
    lab.link(client, CLIENT_ADDR + "/24", router, VIP + "/24")
    lab.link(router, "10.0.1.1/24", backend, BACKEND + "/24")
    backend.run(["ip", "addr", "add", BACKEND_NEW + "/24", "dev", "v1b"])
    backend.run(["ip", "route", "add", "default", "via", "10.0.1.1"])
    # forwarding only inside the router namespace
    router.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    router.run(["iptables", "-w", "-t", "nat", "-A", "PREROUTING", "-d", VIP, "-p", "tcp", "--dport", "443",
                "-j", "DNAT", "--to-destination", BACKEND + ":8443"])
    router.run(["iptables", "-w", "-t", "nat", "-A", "PREROUTING", "-d", VIP, "-p", "udp", "--dport", "53",
                "-j", "DNAT", "--to-destination", BACKEND + ":5353"])
    return client, router, backend


def info(router, **args):
    result = router.run_module("conntrack_info", args)
    assert result["_rc"] == 0 and not result.get("failed"), result
    return result


def _poll_state(router, sport, wanted, timeout=15):
    deadline = time.time() + timeout
    seen = None
    while time.time() < deadline:
        result = info(router, proto="tcp", orig_src=CLIENT_ADDR, orig_sport=sport)
        if result["entries"]:
            seen = result["entries"][0]["state"]
            if seen == wanted:
                return result
        time.sleep(0.3)
    raise AssertionError("entry of port %d never reached %s (last seen %s)" % (sport, wanted, seen))


# ---------------------------------------------------------------------------------------------------------


def test_tcp_dnat_mapping_and_states_over_a_connection(lab):
    client, router, backend = build_dnat_lab(lab)
    server = backend.spawn(["python3", "-c", TCP_SERVER, "0.0.0.0", "8443"], stdout=subprocess.PIPE, text=True)
    wait_line(server, "ready")

    # hold the handshake: the backend drops SYNs, so the router's entry stays in SYN_SENT (a NEW connection)
    backend.run(["iptables", "-w", "-I", "INPUT", "-p", "tcp", "--dport", "8443", "--syn", "-j", "DROP"])
    conn = client.spawn(["python3", "-c", TCP_CLIENT, VIP, "443", CLIENT_ADDR], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 10
    new_entries = []
    while time.time() < deadline and not new_entries:
        new_entries = info(router, proto="tcp", orig_dst=VIP, state=["SYN_SENT"])["entries"]
        time.sleep(0.2)
    assert len(new_entries) == 1, new_entries
    entry = new_entries[0]
    sport = entry["original"]["sport"]
    assert entry["original"] == {"src": CLIENT_ADDR, "dst": VIP, "sport": sport, "dport": 443}
    assert entry["reply"] == {"src": BACKEND, "dst": CLIENT_ADDR, "sport": 8443, "dport": sport}
    assert "unreplied" in entry["flags"] and "dnat" in entry["flags"]
    assert entry["nat"]["dnat"]["from"] == "%s:443" % VIP and entry["nat"]["dnat"]["to"] == "%s:8443" % BACKEND
    assert entry["nat"]["snat"] is None
    assert entry["nat"]["summary"] == "dst %s:443 -> %s:8443" % (VIP, BACKEND)
    assert_same_entries(new_entries, conntrack_list(router, "--dst-nat", "-p", "tcp", "--state", "SYN_SENT"))

    # let the handshake through: the retransmitted SYN establishes the connection
    backend.run(["iptables", "-w", "-D", "INPUT", "-p", "tcp", "--dport", "8443", "--syn", "-j", "DROP"])
    assert int(wait_line(conn, "connected", timeout=20).split()[1]) == sport
    established = _poll_state(router, sport, "ESTABLISHED")
    entry = established["entries"][0]
    assert "assured" in entry["flags"] and "seen_reply" in entry["flags"] and "unreplied" not in entry["flags"]
    assert entry["status"] & (1 << 5) and entry["timeout"] > 400000  # DNAT bit, 5-day established timeout
    assert entry["nat"]["summary"] == "dst %s:443 -> %s:8443" % (VIP, BACKEND)
    assert_same_entries(info(router, orig_dst=VIP, status=["dnat"])["entries"],
                        conntrack_list(router, "--dst-nat", "-d", VIP))

    # close: FINs both ways put the entry into TIME_WAIT
    conn.stdin.write("close\n")
    conn.stdin.flush()
    wait_line(conn, "closed")
    closed = _poll_state(router, sport, "TIME_WAIT")
    assert closed["entries"][0]["timeout"] <= 120
    assert_same_entries(closed["entries"], conntrack_list(router, "-p", "tcp", "--sport", str(sport)))

    # the same query as groups: one TIME_WAIT entry for this VIP, no entries returned
    grouped = info(router, orig_dst=VIP, group_by=["state", "reply_src"], limit=0)
    assert grouped["entries"] == [] and grouped["truncated"] is True and grouped["total_matched"] == 1
    assert grouped["groups"] == [{"key": {"state": "TIME_WAIT", "reply_src": BACKEND}, "count": 1}]


def test_udp_entries_with_timeouts_match_conntrack(lab):
    client, router, backend = build_dnat_lab(lab)
    # per-netns timeouts, changed inside the router namespace only
    router.run(["sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=45"])
    router.run(["sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout_stream=150"])
    echo = backend.spawn(["python3", "-c", UDP_ECHO, BACKEND, "5353"], stdout=subprocess.PIPE, text=True)
    wait_line(echo, "ready")
    flows = client.spawn(["python3", "-c", UDP_FLOWS, VIP, "53", "5", CLIENT_ADDR], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    ports = [int(port) for port in wait_line(flows, "ports").split()[1:]]
    flows.stdin.write("send\n")
    flows.stdin.flush()
    assert wait_line(flows, "echoed").split()[1] == "5"

    result = info(router, proto="udp", orig_dst=VIP)
    assert result["total_matched"] == 5 and result["truncated"] is False
    assert sorted(entry["original"]["sport"] for entry in result["entries"]) == sorted(ports)
    for entry in result["entries"]:
        assert entry["state"] is None
        assert 40 <= entry["timeout"] <= 45, entry  # one exchange: not yet a stream, udp_timeout applies
        assert entry["nat"]["dnat"]["to"] == "%s:5353" % BACKEND
        assert "seen_reply" in entry["flags"] and "assured" not in entry["flags"]
    assert_same_entries(result["entries"], conntrack_list(router, "-p", "udp", "--dst-nat"))

    # a flow still talking after 2 s is a stream (6.x): assured, with the stream timeout
    time.sleep(2.5)
    flows.stdin.write("send\n")
    flows.stdin.flush()
    wait_line(flows, "echoed")
    result = info(router, proto="udp", orig_dst=VIP, status=["assured"])
    assert result["total_matched"] == 5
    assert all(140 <= entry["timeout"] <= 150 for entry in result["entries"]), result["entries"]
    assert_same_entries(result["entries"], conntrack_list(router, "-p", "udp", "--dst-nat"))

    # kernel-side filtering changes nothing but speed
    slow = info(router, proto="udp", orig_dst=VIP, status=["assured"], kernel_filter=False)
    assert slow["kernel_filter"] is False and result["kernel_filter"] is True
    assert slow["total_matched"] == result["total_matched"]
    assert sorted(_tuple_key(e["original"]) for e in slow["entries"]) == sorted(
        _tuple_key(e["original"]) for e in result["entries"])


def test_flush_stale_mappings_after_backend_replacement(lab):
    client, router, backend = build_dnat_lab(lab)
    for address in (BACKEND, BACKEND_NEW):
        echo = backend.spawn(["python3", "-c", UDP_ECHO, address, "5353"], stdout=subprocess.PIPE, text=True)
        wait_line(echo, "ready")
    old_flows = client.spawn(["python3", "-c", UDP_FLOWS, VIP, "53", "6", CLIENT_ADDR], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    wait_line(old_flows, "ports")
    old_flows.stdin.write("send\n")
    old_flows.stdin.flush()
    assert wait_line(old_flows, "echoed").split()[1] == "6"

    # the backend is replaced: the DNAT rule now points at 10.0.1.11
    router.run(["iptables", "-w", "-t", "nat", "-R", "PREROUTING", "2", "-d", VIP, "-p", "udp", "--dport", "53",
                "-j", "DNAT", "--to-destination", BACKEND_NEW + ":5353"])
    new_flows = client.spawn(["python3", "-c", UDP_FLOWS, VIP, "53", "3", CLIENT_ADDR], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    wait_line(new_flows, "ports")
    new_flows.stdin.write("send\n")
    new_flows.stdin.flush()
    assert wait_line(new_flows, "echoed").split()[1] == "3"
    # the old flows keep talking: their entries keep the stale mapping
    old_flows.stdin.write("send\n")
    old_flows.stdin.flush()
    wait_line(old_flows, "echoed")
    stale_before = conntrack_list(router, "-p", "udp", "--reply-src", BACKEND)
    fresh_before = conntrack_list(router, "-p", "udp", "--reply-src", BACKEND_NEW)
    assert len(stale_before) == 6 and len(fresh_before) == 3

    # check mode: the count and a sample, nothing deleted
    preview = router.run_module("conntrack_flush", {"proto": "udp", "reply_src": [BACKEND], "sample": 2},
                                check_mode=True, diff=True)
    assert preview["_rc"] == 0, preview
    assert preview["matched"] == 6 and preview["deleted"] == 0 and preview["changed"] is True
    assert len(preview["sample"]) == 2 and all(e["reply"]["src"] == BACKEND for e in preview["sample"])
    assert preview["diff"] == {"before": "6 matching conntrack entries\n", "after": "0 matching conntrack entries\n"}
    assert len(conntrack_list(router, "-p", "udp", "--reply-src", BACKEND)) == 6

    # an empty filter is refused before anything is read
    refused = router.run_module("conntrack_flush", {})
    assert refused["failed"] and refused["field"] == "all"
    assert len(conntrack_list(router, "-p", "udp")) == 9

    flushed = router.run_module("conntrack_flush", {"proto": "udp", "reply_src": [BACKEND]})
    assert flushed["_rc"] == 0, flushed
    assert flushed["changed"] is True and flushed["deleted"] == 6 and flushed["vanished"] == 0
    assert conntrack_list(router, "-p", "udp", "--reply-src", BACKEND) == []
    fresh_after = conntrack_list(router, "-p", "udp", "--reply-src", BACKEND_NEW)
    assert sorted(_tuple_key(e["original"]) for e in fresh_after) == sorted(
        _tuple_key(e["original"]) for e in fresh_before)

    # the next packets of the old flows go through NAT again and reach the new backend
    old_flows.stdin.write("send\n")
    old_flows.stdin.flush()
    wait_line(old_flows, "echoed")
    assert len(conntrack_list(router, "-p", "udp", "--reply-src", BACKEND_NEW)) == 9

    # check mode and a real run again: nothing left to do (check, real, check, real = changed, changed, not, not)
    again_check = router.run_module("conntrack_flush", {"proto": "udp", "reply_src": [BACKEND]}, check_mode=True)
    assert again_check["changed"] is False and again_check["matched"] == 0
    again = router.run_module("conntrack_flush", {"proto": "udp", "reply_src": [BACKEND]})
    assert again["changed"] is False and again["deleted"] == 0 and again["matched"] == 0


def test_bad_filter_values_fail_naming_the_field(lab):
    router = lab.add("rtr")
    cases = [
        ("conntrack_info", {"orig_dst": ["10.0.0.300"]}, "orig_dst"),
        ("conntrack_info", {"reply_src": ["not-an-ip/8"]}, "reply_src"),
        ("conntrack_info", {"orig_dport": 70000}, "orig_dport"),
        ("conntrack_info", {"state": ["ESTABLISHED", "HALF_OPEN"]}, "state"),
        ("conntrack_info", {"status": ["assured", "sleepy"]}, "status"),
        ("conntrack_info", {"proto": "tcpp"}, "proto"),
        ("conntrack_info", {"group_by": ["colour"]}, "group_by"),
        ("conntrack_info", {"limit": 1000000}, "limit"),
        ("conntrack_info", {"mark_mask": 255}, "mark_mask"),
        ("conntrack_flush", {"zone": 70000}, "zone"),
        ("conntrack_flush", {"proto": "icmp", "orig_dport": 80}, "orig_dport"),
    ]
    for module, args, field in cases:
        result = router.run_module(module, args)
        assert result["_rc"] == 1 and result["failed"], (module, args, result)
        assert result["field"] == field and field in result["msg"], (module, args, result)
        assert "Traceback" not in result["msg"]


@pytest.mark.parametrize("module", ["conntrack_info", "conntrack_flush"])
def test_without_cap_net_admin_the_error_says_so(lab, module):
    host = lab.add("host")
    fd, args = tempfile.mkstemp(suffix=".json")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump({"ANSIBLE_MODULE_ARGS": {"proto": "udp"}}, handle)
        os.chmod(args, 0o644)
        # still root (so a checkout in a 0700 folder stays readable) but without CAP_NET_ADMIN: dropped from
        # the bounding set, root cannot regain it at exec
        proc = subprocess.run(host.argv(["setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin", sys.executable,
                                         os.path.join(MODULES_DIR, module + ".py"), args]),
                              capture_output=True, text=True, env=dict(C_ENV, PYTHONPATH=COLLECTIONS_PATH),
                              check=False)
    finally:
        os.unlink(args)
    result = json.loads(proc.stdout)
    assert proc.returncode == 1 and result["failed"], result
    assert "CAP_NET_ADMIN" in result["msg"] and result["errno"] == 1, result
