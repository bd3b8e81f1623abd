"""nftables_baseline in real namespaces: coexistence with firewalld's, Docker's, kube-proxy's and libvirt's tables
(byte-identical in nft list ruleset after apply and after removal), established flows surviving apply and removal,
NEW to undeclared ports dropped, IPv6 essentials, idempotence, check mode, rollback, persistence, bad input."""
import os
import time

import pytest

from firewall_lab import module
from netns_lab import wait_until
from nft_lab import HeldFlow, connects, listen, load_file, nft_reference, stateless_ruleset, without_table

TABLE = "nodeguard_conntrack"
MODEL = {"input": {"services": [{"name": "web", "ports": [8080]}], "final_action": "drop"}}
FOREIGN = ("firewalld-public-server.nft", "docker-29-nftables-published-port.nft", "kube-proxy-nftables.nft",
           "libvirt-nat-default.nft")


def _baseline(ns, check_mode=False, diff=False, **args):
    result = module(ns, "nftables_baseline", dict(args), check_mode=check_mode, diff=diff)
    assert result["_rc"] == 0 or result.get("failed"), result
    return result


ECHO_REQUEST = r"""
import socket, struct, sys, time
addr = sys.argv[1]
v6 = ":" in addr
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW,
                  socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
s.settimeout(3)
packet = struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, 0x4e47, 1) + b"nodeguard"
if not v6:
    total = sum(struct.unpack("!%dH" % ((len(packet) + 1) // 2), packet + b"\0" * (len(packet) % 2)))
    total = (total >> 16) + (total & 0xFFFF); total += total >> 16
    packet = packet[:2] + struct.pack("!H", ~total & 0xFFFF) + packet[4:]
s.sendto(packet, (addr, 0))
deadline = time.time() + 3
while time.time() < deadline:
    try:
        data = s.recv(2048)
    except OSError:
        break
    icmp = data if v6 else data[(data[0] & 0x0F) * 4:]
    if icmp[0] == (129 if v6 else 0) and icmp[4:6] == b"\x4e\x47":
        print("echo-reply"); break
"""


def _echo(ns, address):
    return ns.run(["python3", "-c", ECHO_REQUEST, address], check=False).stdout.strip() == "echo-reply"


def _pair(lab):
    # conntrack already active in the server's namespace (an iptables-nft rule, as on a host with any stateful rule):
    # a flow opened while nothing tracks is picked up mid-stream as ct state new, which no firewall keeps alive
    srv = lab.add("nbs", conntrack_rule=True)
    srv.run(["ip6tables", "-w", "-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"])
    cli = lab.add("nbc", conntrack_rule=False)
    lab.link(srv, "10.79.0.1/24", cli, "10.79.0.2/24")
    lab.link(srv, "fd79::1/64", cli, "fd79::2/64")
    return srv, cli


def test_foreign_tables_byte_identical_after_apply_and_removal(lab):
    ref = nft_reference()
    ns = lab.add("nbf", conntrack_rule=False)
    for name in FOREIGN:
        load_file(ns, os.path.join(ref, name))
    before = stateless_ruleset(ns)
    result = _baseline(ns, **MODEL)
    assert result["changed"] and not result.get("failed"), result
    after = stateless_ruleset(ns)
    assert "table inet %s {" % TABLE in after
    assert without_table(after, "inet", TABLE) == before
    # what it says it cannot override: firewalld's input and forward chains end in a reject
    blocked = sorted((i["table"], i["chain"]) for i in result["cannot_override"] if i["drops_by_default"])
    assert ("firewalld", "filter_INPUT") in blocked and ("firewalld", "filter_FORWARD") in blocked, result
    assert "filter_INPUT (input hook, priority 10) drops what it does not accept" in str(result.get("warnings")), result
    again = _baseline(ns, **MODEL)
    assert again["changed"] is False, again
    removed = _baseline(ns, state="absent")
    assert removed["changed"] is True
    assert stateless_ruleset(ns) == before


def test_traffic_established_survives_new_undeclared_dropped_ipv6(lab):
    srv, cli = _pair(lab)
    held4 = HeldFlow(srv, cli, "10.79.0.1", 9000)
    held6 = HeldFlow(srv, cli, "fd79::1", 9001)
    listen(srv, "0.0.0.0", 8080)
    listen(srv, "::", 8081)
    assert held4.exchange("before") and held6.exchange("before")
    model = {"input": {"services": [{"name": "web", "ports": [8080, 8081]}], "final_action": "drop"}}
    applied = _baseline(srv, **model)
    assert applied["changed"] and not applied.get("failed"), applied
    assert held4.exchange("applied") and held6.exchange("applied"), "an established flow broke on apply"
    assert connects(cli, "10.79.0.1", 8080) and connects(cli, "fd79::1", 8081), "declared ports"
    assert not connects(cli, "10.79.0.1", 9000), "NEW to an undeclared port passed"
    assert not connects(cli, "fd79::1", 9001), "IPv6 NEW to an undeclared port passed"
    # IPv6 essentials: neighbour discovery and echo work from a fresh neighbour cache
    srv.run(["ip", "-6", "neigh", "flush", "all"])
    cli.run(["ip", "-6", "neigh", "flush", "all"])
    assert connects(cli, "fd79::1", 8081), "IPv6 after the neighbour caches were flushed (ND accepted)"
    assert srv.run(["ip", "-6", "neigh", "show", "fd79::2"]).stdout.strip(), "the server resolved its neighbour"
    assert _echo(cli, "fd79::1") and _echo(cli, "10.79.0.1"), "ICMP/ICMPv6 echo (icmp_echo: true)"
    removed = _baseline(srv, state="absent")
    assert removed["changed"]
    assert held4.exchange("removed") and held6.exchange("removed"), "an established flow broke on removal"
    assert connects(cli, "10.79.0.1", 9000), "removal leaves nothing behind"


def test_check_mode_diff_and_idempotence(lab):
    ns = lab.add("nbi", conntrack_rule=False)
    predicted = _baseline(ns, check_mode=True, diff=True, **MODEL)
    assert predicted["changed"] is True and "tcp dport 8080 ct state new accept" in predicted["diff"]["after"]
    assert "nodeguard" not in stateless_ruleset(ns), "check mode changed the rule set"
    assert _baseline(ns, **MODEL)["changed"] is True
    assert _baseline(ns, **MODEL)["changed"] is False
    full = {"input": {"services": [{"name": "web", "ports": [8080]}], "final_action": "drop"},
            "forward": {"enabled": True, "accept_dnat": True, "final_action": "drop",
                        "invalid_drop": {"enabled": True, "in_interfaces": ["lan0"]}},
            "notrack": [{"name": "dns", "proto": "udp", "ports": [53]}]}
    assert _baseline(ns, **full)["changed"] is True
    audit = module(ns, "nftables_audit", {"nftables_conf": "/nonexistent", "multi_homed": True})
    assert audit["findings"] == [], "the baseline's own table must audit clean: %s" % audit["findings"]
    assert [t["owner"] for t in audit["tables"]] == ["nodeguard.conntrack"]
    assert _baseline(ns, **MODEL)["changed"] is True
    assert _baseline(ns, check_mode=True, **MODEL)["changed"] is False
    # a rule added by hand to the owned table is noticed and the table rewritten
    ns.run(["nft", "add", "rule", "inet", TABLE, "input", "tcp", "dport", "9999", "accept"])
    assert _baseline(ns, **MODEL)["changed"] is True
    assert "9999" not in stateless_ruleset(ns)
    # so is a base chain's policy changed by hand (the rule counts and the digest comment stay the same)
    assert _baseline(ns, **MODEL)["changed"] is False
    ns.run(["nft", "chain", "inet", TABLE, "input", "{ policy drop; }"])
    assert _baseline(ns, check_mode=True, **MODEL)["changed"] is True
    assert _baseline(ns, **MODEL)["changed"] is True
    assert "policy accept" in ns.run(["nft", "list", "chain", "inet", TABLE, "input"]).stdout
    # one family: the table becomes ip, the inet one goes in the same transaction
    ipv4 = _baseline(ns, families=["ipv4"], **MODEL)
    assert ipv4["changed"] and ipv4["table"] == "ip %s" % TABLE
    listing = stateless_ruleset(ns)
    assert "table ip %s {" % TABLE in listing and "table inet %s" % TABLE not in listing


def test_bad_input_fails_before_anything_changes(lab):
    ns = lab.add("nbb", conntrack_rule=False)
    result = _baseline(ns, input={"services": [{"name": "x", "ports": [70000]}]})
    assert result.get("failed") and "input.services[0].ports" in result["msg"], result
    assert stateless_ruleset(ns).strip() == ""


def test_rollback_restores_the_previous_table_unless_confirmed(lab, tmp_path):
    ns = lab.add("nbr", conntrack_rule=False)
    first = _baseline(ns, **MODEL)
    assert first["changed"]
    previous = stateless_ruleset(ns)
    other = {"input": {"services": [{"name": "other", "ports": [8443]}], "final_action": "drop"}}
    state_dir = str(tmp_path / "state")
    started = _baseline(ns, rollback_timeout=3, rollback_method="fork", state_dir=state_dir, **other)
    assert started["rollback_token"] and "8443" in stateless_ruleset(ns)
    wait_until(lambda: stateless_ruleset(ns) == previous, timeout=30)
    late = _baseline(ns, confirm=True, rollback_token=started["rollback_token"], state_dir=state_dir, **other)
    assert late.get("failed") and "too late" in late["msg"], late
    confirmed_run = _baseline(ns, rollback_timeout=3, rollback_method="fork", state_dir=state_dir, **other)
    confirm = _baseline(ns, confirm=True, rollback_token=confirmed_run["rollback_token"], state_dir=state_dir,
                        **other)
    assert confirm["confirmed"] == [confirmed_run["rollback_token"]], confirm
    time.sleep(5)
    assert "8443" in stateless_ruleset(ns), "a confirmed change was rolled back"


def test_persisted_file_loads_only_the_owned_table(lab, tmp_path):
    ref = nft_reference()
    ns = lab.add("nbp", conntrack_rule=False)
    rules, unit = str(tmp_path / "nftables.nft"), str(tmp_path / "unit.service")
    result = _baseline(ns, persist=True, rules_path=rules, unit_path=unit, **MODEL)
    assert sorted(result["files_changed"]) == sorted([rules, unit]), result
    assert "ExecStart=/usr/sbin/nft -f %s" % rules in open(unit).read()
    assert _baseline(ns, persist=True, rules_path=rules, unit_path=unit, **MODEL)["changed"] is False
    # at boot: a namespace holding Docker's table, the file loaded twice; Docker's table untouched
    boot = lab.add("nbq", conntrack_rule=False)
    load_file(boot, os.path.join(ref, "docker-29-nftables-published-port.nft"))
    docker = stateless_ruleset(boot)
    boot.run(["nft", "-f", rules])
    boot.run(["nft", "-f", rules])
    listing = stateless_ruleset(boot)
    assert without_table(listing, "inet", TABLE) == docker
    assert without_table(stateless_ruleset(ns), "nothing", "x") == listing.replace(docker, "")
    removed = _baseline(ns, state="absent", rules_path=rules, unit_path=unit)
    assert sorted(removed["files_changed"]) == sorted([rules, unit]) and not os.path.exists(rules)


@pytest.mark.parametrize("priority", [-10, 20])
def test_priority_does_not_let_foreign_accepts_through(lab, priority):
    """Docker's table accepts the published port on forward; our forward chain (before or after it) with
    final_action drop still drops it, and says so. Accepting DNATed flows here lets it through."""
    ns = lab.add("nbd", conntrack_rule=False)
    load_file(ns, os.path.join(nft_reference(), "docker-29-nftables-published-port.nft"))
    result = _baseline(ns, priority=priority, forward={"enabled": True, "final_action": "drop"})
    audit = module(ns, "nftables_audit", {"nftables_conf": "/nonexistent"})
    overridden = [(f["table"], f["dropping_table"]) for f in audit["findings"] if f["id"] == "NGNF005"]
    assert ("docker-bridges", "inet %s" % TABLE) in overridden, audit["findings"]
    assert result["changed"]
