"""nftables_audit against every foreign rule set in the shared reference (loaded with nft -f into a fresh
namespace, the real module run there): its verdicts must agree with what an expert reads from each file (the
reference README). Plus traffic proofs that the mistakes it reports are real: two tables on one hook, and a drop
policy without an established,related accept."""

import os

import pytest

from firewall_lab import module
from nft_lab import connects, listen, load_file, nft_reference, reference_files

# file -> (findings that must be there: (id, severity, chain, rule text), ids allowed at low severity)
# From the README of the reference rule sets ("Expected audit facts" / "Expected verdict").
EXPERT = {
    "debian-default.nft": ([], []),
    "debian-example-workstation.nft": ([], []),
    "arch-default.nft": ([("NGNF007", "low", "input", "ip6 nexthdr ipv6-icmp accept")], []),
    # firewalld drops INVALID on forward (firewalld#1061): reported, but low on a host that is not a router
    "firewalld-public.nft": ([], ["NGNF003"]),
    "firewalld-public-server.nft": ([], ["NGNF003"]),
    "docker-29-nftables-published-port.nft": ([], []),
    "kube-proxy-nftables.nft": ([], []),
    "libvirt-nat-default.nft": ([], []),
    "mistake-no-established-accept.nft": ([("NGNF001", "high", "input", "udp dport 53 accept")], []),
    "mistake-invalid-drop-multihomed-router.nft": ([("NGNF003", "medium", "forward", "ct state invalid drop"),
                                                   ("NGNF007", "low", "input", "ip6 nexthdr ipv6-icmp accept")], []),
    "notrack-stateless-accepts-ok.nft": ([("NGNF007", "low", "input", "ip6 nexthdr ipv6-icmp accept")], []),
    "mistake-notrack-without-untracked.nft": ([("NGNF006", "high", "prerouting", "ip saddr 172.19.151.0/24 notrack"),
                                              ("NGNF007", "low", "input", "ip6 nexthdr ipv6-icmp accept")], []),
}
OWNERS = {"firewalld-public.nft": "firewalld", "firewalld-public-server.nft": "firewalld",
          "docker-29-nftables-published-port.nft": "docker", "kube-proxy-nftables.nft": "kube-proxy",
          "libvirt-nat-default.nft": "libvirt"}


def _audit(ns, **args):
    args.setdefault("nftables_conf", "/nonexistent/nftables.conf")
    result = module(ns, "nftables_audit", dict(args))
    assert result["_rc"] == 0 or result.get("failed"), result
    return result


def _summary(findings):
    return sorted((f["id"], f["severity"], f["chain"], f["rule"]) for f in findings)


def test_every_reference_file_has_an_expert_verdict():
    directory = nft_reference()
    assert sorted(reference_files()) == sorted(EXPERT), "a reference file without an expert verdict here, in %s" % (
        directory)


@pytest.mark.parametrize("name", sorted(EXPERT))
def test_audit_agrees_with_the_expert(lab, name):
    path = os.path.join(nft_reference(), name)
    ns = lab.add("nfa", conntrack_rule=False)
    load_file(ns, path)
    result = _audit(ns, multi_homed=False, tcp_be_liberal=False)
    assert not result.get("failed"), result
    expected, allowed_low = EXPERT[name]
    found = _summary(result["findings"])
    required = sorted(expected)
    missing = [item for item in required if item not in found]
    assert not missing, "expert finding not reported: %s\nfound: %s" % (missing, found)
    extra = [item for item in found if item not in required and not (item[0] in allowed_low and item[1] == "low")]
    assert not extra, "finding the expert does not read from %s: %s" % (name, extra)
    # visibility: every table is listed with its owner, and none of these is in the iptables view
    assert result["tables"], result
    for table in result["tables"]:
        assert table["iptables_view"] is False, table
        if name in OWNERS:
            assert table["owner"] == OWNERS[name], table


def test_router_invalid_drop_is_high_when_multi_homed(lab):
    ns = lab.add("nfr", conntrack_rule=False)
    load_file(ns, os.path.join(nft_reference(), "mistake-invalid-drop-multihomed-router.nft"))
    result = _audit(ns, multi_homed=True, tcp_be_liberal=False, fail_on="high")
    assert result.get("failed") and result["_rc"] != 0, result
    assert [(f["id"], f["severity"]) for f in result["findings"] if f["id"] == "NGNF003"] == [("NGNF003", "high")]


def test_coexisting_foreign_tables_each_get_a_say(lab):
    """The README's coexistence namespace: workstation, firewalld, Docker, kube-proxy and libvirt together.
    Docker's and libvirt's forward accepts do not pass firewalld's final reject; firewalld's ssh accept does not
    pass the workstation's final drop on input."""
    ref = nft_reference()
    ns = lab.add("nfc", conntrack_rule=False)
    for name in ("debian-example-workstation.nft", "firewalld-public-server.nft",
                 "docker-29-nftables-published-port.nft", "kube-proxy-nftables.nft", "libvirt-nat-default.nft"):
        load_file(ns, os.path.join(ref, name))
    result = _audit(ns, multi_homed=False, tcp_be_liberal=False)
    overridden = sorted((f["table"], f["dropping_table"], f["hook"]) for f in result["findings"]
                        if f["id"] == "NGNF005")
    assert ("docker-bridges", "inet firewalld", "forward") in overridden, result["findings"]
    assert ("libvirt_network", "inet firewalld", "forward") in overridden, result["findings"]
    assert ("firewalld", "inet filter", "input") in overridden, result["findings"]
    owners = sorted(set((t["family"], t["name"], t["owner"]) for t in result["tables"]))
    assert ("inet", "firewalld", "firewalld") in owners and ("ip", "kube-proxy", "kube-proxy") in owners, owners
    assert not [f for f in result["findings"] if f["severity"] == "high"], result["findings"]


TWO_TABLES = """
table inet ngt_alpha {
    chain input {
        type filter hook input priority %(alpha)d; policy accept;
        tcp dport 8080 accept
    }
}
table inet ngt_beta {
    chain input {
        type filter hook input priority %(beta)d; policy drop;
        ct state established,related accept
        iif "lo" accept
        meta l4proto ipv6-icmp accept
        tcp dport 9090 accept
    }
}
"""


@pytest.mark.parametrize("alpha,beta", [(0, 10), (10, 0)], ids=["accept-first", "drop-first"])
def test_two_tables_on_one_hook_traffic(lab, alpha, beta):
    """An accept in one table does not stop another table's drop on the same hook, in either priority order: the
    audit says so (NGNF005), and the packets agree; once the dropping table accepts the port too, both agree
    again."""
    srv = lab.add("nfs", conntrack_rule=False)
    cli = lab.add("nfk", conntrack_rule=False)
    lab.link(srv, "10.77.0.1/24", cli, "10.77.0.2/24")
    lab.link(srv, "fd77::1/64", cli, "fd77::2/64")
    srv.run(["nft", "-f", "-"], input_text=TWO_TABLES % {"alpha": alpha, "beta": beta})
    for port in (8080, 9090):
        listen(srv, "0.0.0.0", port)
        listen(srv, "::", port + 1)
    result = _audit(srv, multi_homed=False, tcp_be_liberal=False)
    found = [(f["id"], f["table"], f["dropping_table"], f["rule"]) for f in result["findings"]]
    assert ("NGNF005", "ngt_alpha", "inet ngt_beta", "tcp dport 8080 accept") in found, result["findings"]
    assert not connects(cli, "10.77.0.1", 8080), "alpha's accept let the packet past beta's drop policy"
    assert connects(cli, "10.77.0.1", 9090), "beta's own accept must work"
    srv.run(["nft", "add", "rule", "inet", "ngt_beta", "input", "tcp", "dport", "{ 8080, 8081 }", "accept"])
    assert connects(cli, "10.77.0.1", 8080)
    assert connects(cli, "fd77::1", 8081), "IPv6 to the port both tables accept"
    after = _audit(srv, multi_homed=False, tcp_be_liberal=False)
    assert not [f for f in after["findings"] if f["id"] == "NGNF005"], after["findings"]


def test_no_established_accept_traffic(lab):
    """mistake-no-established-accept.nft loaded on a client: its own outgoing connection gets no reply (the
    SYN-ACK hits the drop policy), exactly what NGNF001 says."""
    cli = lab.add("nfe", conntrack_rule=False)
    peer = lab.add("nfp", conntrack_rule=False)
    lab.link(cli, "10.78.0.2/24", peer, "10.78.0.1/24")
    listen(peer, "10.78.0.1", 8000)
    assert connects(cli, "10.78.0.1", 8000), "before the rule set the connection works"
    load_file(cli, os.path.join(nft_reference(), "mistake-no-established-accept.nft"))
    assert not connects(cli, "10.78.0.1", 8000), "a reply passed a drop policy with no established accept"
    ids = [f["id"] for f in _audit(cli)["findings"]]
    assert "NGNF001" in ids
    cli.run(["nft", "insert", "rule", "inet", "filter", "input", "ct", "state", "established,related", "accept"])
    assert connects(cli, "10.78.0.1", 8000)
    assert "NGNF001" not in [f["id"] for f in _audit(cli)["findings"]]


LATE_ER = """
table inet ngt_late {
    chain input {
        type filter hook input priority 0; policy drop;
        iifname "lo" accept
        iifname "%(ifname)s" %(kind)s svc
        ct state established,related accept
    }
    chain svc {
        ct state new tcp dport 2222 accept
    }
}
"""


@pytest.mark.parametrize("kind", ["jump", "goto"])
def test_established_accept_after_a_jump_or_goto_traffic(lab, kind):
    """A NEW accept in a chain called before the established,related accept: after a jump the replies to this
    host's own connection come back to that accept and pass (no NGNF001); after a goto the called chain's end is the
    drop policy, the reply is dropped and the audit says so."""
    cli = lab.add("nfj", conntrack_rule=False)
    peer = lab.add("nfq", conntrack_rule=False)
    lab.link(cli, "10.79.0.2/24", peer, "10.79.0.1/24")
    ifname = cli.run(["ip", "-o", "-4", "addr", "show", "to", "10.79.0.2"]).stdout.split()[1]
    listen(peer, "10.79.0.1", 8000)
    cli.run(["nft", "-f", "-"], input_text=LATE_ER % {"ifname": ifname, "kind": kind})
    ids = [f["id"] for f in _audit(cli)["findings"]]
    if kind == "jump":
        assert connects(cli, "10.79.0.1", 8000), "the reply should come back to the established accept"
        assert "NGNF001" not in ids
    else:
        assert not connects(cli, "10.79.0.1", 8000), "a reply passed after a goto'd chain ended"
        assert "NGNF001" in ids
