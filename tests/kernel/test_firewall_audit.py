"""iptables_audit against crafted rule sets loaded into real namespaces (each classic mistake, both backends),
and against the baseline written by iptables_baseline, which must audit clean."""

import pytest

from firewall_lab import BACKENDS, module, restore, seed_foreign

NO_ESTABLISHED = """*filter
:INPUT DROP [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT
COMMIT
"""
ESTABLISHED_LATE = """*filter
:SSH-GUARD - [0:0]
-A INPUT -p tcp -m tcp --dport 22 -j SSH-GUARD
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT
-A SSH-GUARD -m recent --rcheck --seconds 60 --hitcount 4 --name ssh --mask 255.255.255.255 --rsource -j DROP
COMMIT
"""
INVALID_FORWARD = """*filter
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -m conntrack --ctstate INVALID -j DROP
COMMIT
"""
DNAT_DROPPED = """*nat
-A PREROUTING -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.50.0.5:80
COMMIT
*filter
:FORWARD DROP [0:0]
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
"""
DNAT_ACCEPTED = """*nat
-A PREROUTING -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.50.0.5:80
COMMIT
*filter
:FORWARD DROP [0:0]
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -m conntrack --ctstate DNAT -j ACCEPT
COMMIT
"""


def _audit(ns, **args):
    result = module(ns, "iptables_audit", dict(args))
    assert result["_rc"] == 0 or result.get("failed"), result
    return result


def _ids(result):
    return sorted(set(f["id"] for f in result["findings"]))


V6 = {"203.0.113.9/32": "2001:db8::9/128", "10.50.0.5:80": "[fd00::5]:80",
      "--mask 255.255.255.255": "--mask ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}


def _for_family(ruleset, family):
    if family == "ipv6":
        for old, new in V6.items():
            ruleset = ruleset.replace(old, new)
    return ruleset


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ruleset,expected,severity,chain", [
    (NO_ESTABLISHED, "NGCT001", "high", "INPUT"),
    (ESTABLISHED_LATE, "NGCT002", "medium", "SSH-GUARD"),
    (INVALID_FORWARD, "NGCT003", "medium", "FORWARD"),
    (DNAT_DROPPED, "NGCT004", "high", "PREROUTING"),
])
def test_each_mistake_is_found(lab, backend, family, ruleset, expected, severity, chain):
    ns = lab.add("au", conntrack_rule=False)
    restore(ns, backend, family, _for_family(ruleset, family))
    result = _audit(ns, multi_homed=False, tcp_be_liberal=False)
    assert _ids(result) == [expected], result["findings"]
    finding = result["findings"][0]
    assert (finding["severity"], finding["chain"], finding["family"], finding["backend"]) == (
        severity, chain, family, backend)
    assert finding["rule"].startswith("-A %s " % chain) and finding["fix"]
    tool = "iptables" if family == "ipv4" else "ip6tables"
    assert "/usr/sbin/%s-%s-save" % (tool, backend) in result["sources"]


def test_invalid_drop_is_worse_when_multi_homed_or_liberal(lab):
    ns = lab.add("au", conntrack_rule=False)
    restore(ns, "nft", "ipv4", INVALID_FORWARD)
    assert _audit(ns, multi_homed=True, tcp_be_liberal=False)["findings"][0]["severity"] == "high"
    # detection from the namespace itself: two routed interfaces and be_liberal read from /proc
    other = lab.add("peer", conntrack_rule=False)
    lab.link(ns, "10.61.0.1/24", other, "10.61.0.2/24")
    lab.link(ns, "10.62.0.1/24", other, "10.62.0.2/24")
    auto = _audit(ns)
    assert auto["context"]["multi_homed"] is True and auto["findings"][0]["severity"] == "high"
    ns.run(["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_be_liberal=1"])
    liberal = _audit(ns, multi_homed=False)
    assert liberal["context"]["tcp_be_liberal"] is True and liberal["findings"][0]["severity"] == "high"


def test_dnat_with_accept_is_clean_and_fail_on_gates(lab):
    ns = lab.add("au", conntrack_rule=False)
    restore(ns, "nft", "ipv4", DNAT_ACCEPTED)
    assert _audit(ns, multi_homed=False)["findings"] == []
    restore(ns, "nft", "ipv6", NO_ESTABLISHED)
    gated = _audit(ns, multi_homed=False, fail_on="high")
    assert gated.get("failed") is True and "NGCT001" in gated["msg"]
    assert gated["findings"][0]["family"] == "ipv6"


def test_split_backends_are_found(lab):
    ns = lab.add("au")  # the lab's conntrack rule lives in the nft backend
    restore(ns, "legacy", "ipv4", "*filter\n-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n")
    result = _audit(ns, multi_homed=False)
    assert _ids(result) == ["NGCT005"]
    assert result["findings"][0]["severity"] == "high" and result["findings"][0]["family"] == "ipv4"


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_baseline_audits_clean(lab, backend):
    ns = lab.add("au", conntrack_rule=False)
    model = {"backend": backend, "input": {"services": [{"ports": [22]}, {"ports": [443], "sources": ["10.0.0.0/8"]}],
                                           "final_action": "drop", "invalid_drop": {"log": True}},
             "forward": {"enabled": True, "accept_dnat": True, "final_action": "drop",
                         "invalid_drop": {"enabled": True, "in_interfaces": ["eth0"]}},
             "notrack": [{"proto": "udp", "ports": [53]}], "policies": {"forward": "DROP"}}
    assert module(ns, "iptables_baseline", model)["changed"]
    restore(ns, backend, "ipv4", DNAT_DROPPED.split("*filter", maxsplit=1)[0])  # a DNAT: the baseline's accept_dnat covers it
    result = _audit(ns, multi_homed=True, tcp_be_liberal=True)
    assert result["findings"] == [], result["findings"]
    # the same host with Docker and kube-proxy chains next to the baseline: only their own findings remain
    seed_foreign(ns, backend)
    findings = _audit(ns, multi_homed=False)["findings"]
    # what remains is about the other tools' rules (e.g. Docker's ER accept in FORWARD, dead behind the baseline's
    # final drop), at low severity at most; nothing about the baseline's own chains
    assert findings and all(f["severity"] in ("info", "low") for f in findings), findings
    assert not [f for f in findings if (f["chain"] or "").startswith("NG-CT-")], findings
