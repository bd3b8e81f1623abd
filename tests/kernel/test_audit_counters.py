"""The audit's counter grading on real kernel counters (issue 13): rises graded on their rate over the interval,
and an induced insert CLASH (drop + insert_failed at an empty table) told apart from a full table.

The clash: two processes on two CPUs send the first packet (a TCP SYN, raw socket) of the same new flow at the same
moment, round after round. Both packets create an unconfirmed entry for one tuple; the second to confirm finds the
first already in the table, TCP does not allow the kernel to merge them (nf_ct_resolve_clash), so it counts
insert_failed and drop and the packet is dropped (sendto gets EPERM): a race, with the table empty.
"""
import os
import sys

import pytest

from netns_lab import COLLECTIONS_PATH

if COLLECTIONS_PATH not in sys.path:
    sys.path.insert(0, COLLECTIONS_PATH)
from ansible_collections.nodeguard.conntrack.plugins.plugin_utils import _audit_eval as ev  # noqa: E402

INVALID_SENDER = r"""
import socket, struct, sys
def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    s = (s >> 16) + (s & 0xffff)
    return ~(s + (s >> 16)) & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
count = int(sys.argv[1])
for n in range(count):
    # a bare ACK of no connection: INVALID with tcp_loose=0 (no mid-stream pickup)
    hdr = struct.pack("!HHIIBBHHH", 30000 + n, 9, 1, 1, 5 << 4, 0x10, 1024, 0, 0)
    pseudo = socket.inet_aton("127.0.0.1") + socket.inet_aton("127.0.0.1") + struct.pack("!BBH", 0, 6, len(hdr))
    pkt = hdr[:16] + struct.pack("!H", csum(pseudo + hdr)) + hdr[18:]
    try:
        s.sendto(pkt, ("127.0.0.1", 0))
    except PermissionError:
        pass
print("sent", count)
"""

CLASH = r"""
import ctypes, multiprocessing as mp, os, socket, struct, sys, time

def csum(data):
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    s = (s >> 16) + (s & 0xffff)
    return ~(s + (s >> 16)) & 0xffff

def syn(sport):
    hdr = struct.pack("!HHIIBBHHH", sport, 9, 1000, 0, 5 << 4, 0x02, 65535, 0, 0)
    pseudo = socket.inet_aton("127.0.0.1") + socket.inet_aton("127.0.0.2") + struct.pack("!BBH", 0, 6, len(hdr))
    return hdr[:16] + struct.pack("!H", csum(pseudo + hdr)) + hdr[18:]

def worker(index, cpu, ready, stop, refused, rounds):
    os.sched_setaffinity(0, {cpu})
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    packets = [syn(20000 + r % 40000) for r in range(rounds)]
    for r in range(rounds):
        ready[index] = r + 1
        while min(ready[0], ready[1]) < r + 1:   # both at this round: go together
            if stop.value:
                return
        if stop.value:
            return
        try:
            s.sendto(packets[r], ("127.0.0.2", 0))
        except PermissionError:
            refused.value += 1          # netfilter dropped it: this process lost the insert race

if __name__ == "__main__":
    want, deadline, rounds = int(sys.argv[1]), time.time() + float(sys.argv[2]), int(sys.argv[3])
    cpus = sorted(os.sched_getaffinity(0))[:2]
    ready = mp.Array(ctypes.c_long, 2, lock=False)
    stop = mp.Value(ctypes.c_int, 0, lock=False)
    refused = mp.Value(ctypes.c_long, 0)
    procs = [mp.Process(target=worker, args=(i, c, ready, stop, refused, rounds)) for i, c in enumerate(cpus)]
    for p in procs:
        p.start()
    while any(p.is_alive() for p in procs) and refused.value < want and time.time() < deadline:
        time.sleep(0.05)
    stop.value = 1
    for p in procs:
        p.join(10)
    print("refused", refused.value, "rounds", min(ready[0], ready[1]))
"""


def facts(ns):
    return ns.run_module("conntrack_facts", {"gather_subset": ["counters", "limits", "environment"]})[
        "ansible_facts"]["conntrack"]


def test_rises_graded_on_their_rate_over_the_interval(lab):
    ns = lab.add("rate")
    ns.run(["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0"])
    before = facts(ns)
    first = ev.evaluate({"host": "h", "facts": before}, now=1000000)
    ns.run([sys.executable, "-c", INVALID_SENDER, "300"])
    after = facts(ns)
    delta = after["counters"]["invalid"] - before["counters"]["invalid"]
    assert delta >= 300, "the kernel counted %d INVALID packets for 300 bare ACKs" % delta
    assert after["counters"]["drop"] == before["counters"]["drop"]
    opts = {"counter_rise": {"invalid": "critical"}, "counter_rate": {"invalid": [0.001, 1]}}
    # the same real rise, seen over a minute and over a day
    minute = ev.evaluate({"host": "h", "facts": after}, opts, previous=ev.state_record(first), now=1000060)
    day = ev.evaluate({"host": "h", "facts": after}, opts, previous=ev.state_record(first), now=1086400)
    assert minute["deltas"]["counters"]["invalid"]["rate_per_second"] == pytest.approx(delta / 60.0, rel=1e-4)
    assert day["deltas"]["counters"]["invalid"]["rate_per_second"] == pytest.approx(delta / 86400.0, rel=1e-4)
    graded = dict((r["collected_epoch"], [f["severity"] for f in r["findings"] if f.get("counter") == "invalid"])
                  for r in (minute, day))
    assert graded == {1000060.0: ["critical"], 1086400.0: ["warning"]}
    # the defaults: 5/s over a minute is a warning (an asymmetric return path), over a day nothing
    assert [f["severity"] for f in ev.evaluate({"host": "h", "facts": after}, previous=ev.state_record(first),
                                               now=1000060)["findings"] if f.get("counter") == "invalid"] == ["warning"]
    assert not [f for f in ev.evaluate({"host": "h", "facts": after}, previous=ev.state_record(first),
                                       now=1086400)["findings"] if f.get("counter") == "invalid"]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="an insert race needs two CPUs")
def test_induced_insert_clash_is_not_called_a_full_table(lab):
    ns = lab.add("clash", conntrack_rule=False)
    ns.run(["iptables", "-w", "-A", "OUTPUT", "-m", "conntrack", "--ctstate", "NEW", "-j", "ACCEPT"])
    before = facts(ns)
    first = ev.evaluate({"host": "h", "facts": before}, now=2000000)
    out = ns.run([sys.executable, "-c", CLASH, "3", "150", "20000"], timeout=200).stdout.split()
    refused = int(out[out.index("refused") + 1])
    after = facts(ns)
    gained = dict((name, after["counters"][name] - before["counters"][name])
                  for name in ("drop", "insert_failed", "early_drop", "clash_resolve", "chaintoolong"))
    assert refused >= 1, "no insert race was lost in %s rounds (a busy machine); nothing to grade" % out
    # the kernel's own account: every lost race is one insert_failed and one drop, the table nearly empty
    assert gained["insert_failed"] == gained["drop"] == refused, (gained, refused)
    assert gained["early_drop"] == 0 and gained["chaintoolong"] == 0
    assert after["limits"]["count"] < after["limits"]["max"] * 0.01
    result = ev.evaluate({"host": "h", "facts": after}, previous=ev.state_record(first), now=2000060)
    assert result["drop_cause"] == "clash"
    drop = [f for f in result["findings"] if f.get("counter") == "drop"][0]
    assert "insert clash" in drop["detail"] and "not a full table" in drop["detail"]
    assert "raising max does not help" in drop["fix"]
