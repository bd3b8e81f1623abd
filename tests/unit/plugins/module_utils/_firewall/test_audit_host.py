"""Reading the live rule sets through the callables a module passes: what is missing or failing is skipped with
the reason, unparsable output fails naming the command, and the findings are those of the pure audit."""
import pytest

from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import audit_host as H

NEW_NO_EST = "*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n"


def test_missing_and_failing_commands_are_skipped_with_the_reason():
    ran = []

    def find(name):
        return None if "legacy" in name else "/usr/sbin/" + name

    def run(argv):
        ran.append(argv)
        return (0, NEW_NO_EST, "") if argv[0].endswith("/iptables-nft-save") else (1, "", "no table\n")

    result = H.audit_host(find, run, multi_homed=False, tcp_be_liberal=False)
    assert ran == [["/usr/sbin/iptables-nft-save"], ["/usr/sbin/ip6tables-nft-save"]]
    assert result["sources"] == ["/usr/sbin/iptables-nft-save"]
    assert result["skipped"] == ["ipv4/legacy: iptables-legacy-save not found",
                                 "ipv6/nft: ip6tables-nft-save failed (rc=1): no table",
                                 "ipv6/legacy: ip6tables-legacy-save not found"]
    assert [(f["id"], f["severity"], f["family"]) for f in result["findings"]] == [("NGCT001", "high", "ipv4")]
    assert result["summary"]["high"] == 1
    assert result["context"] == {"multi_homed": False, "tcp_be_liberal": False}


def test_unparsable_output_fails_naming_the_command():
    with pytest.raises(H.RuleSetReadError, match="iptables-nft-save"):
        H.audit_host(lambda name: "/sbin/" + name, lambda argv: (0, "-A INPUT outside a table\n", ""),
                     families=["ipv4"], backends=["nft"], multi_homed=False, tcp_be_liberal=False)


def test_context_detected_when_not_given(monkeypatch):
    files = {"/proc/net/route": "Iface\tDestination\neth0\t00000000\neth1\t0000A8C0\n",
             "/proc/net/ipv6_route": "", H.TCP_BE_LIBERAL: "1\n"}
    monkeypatch.setattr(H, "read_or_none", files.get)
    context = H.audit_context()
    assert context == {"multi_homed": True, "route_interfaces": ["eth0", "eth1"], "tcp_be_liberal": True}
