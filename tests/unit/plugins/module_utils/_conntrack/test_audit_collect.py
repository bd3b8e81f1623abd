"""The audit's one-dump entry statistics equal the three separate queries they replace; collect() degrades
without entry statistics instead of failing, as the role did with the separate modules."""
import errno
import os
import struct

import pytest

from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import audit_collect as C
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import dump as D
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import entries as E
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import netlink as N

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "fixtures", "entries")


def load_dump(name):
    with open(os.path.join(FIXTURES, name + ".hex")) as handle:
        return [bytes.fromhex(line.strip()) for line in handle if line.strip()]


class FakeCt:
    """A CtnetlinkSocket that answers every dump request of a family with the recorded dump."""

    def __init__(self, answer):
        self.answer = answer
        self.requests = []
        self.sock = self
        self.queue = []

    def __call__(self, **_kwargs):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def send(self, msg_type, family=0, flags=0, payload=b"", res_id=0):
        self.requests.append(family)
        self.queue.extend(self.answer(family))

    def recv_into(self, buf, _size=0, _flags=0):
        data = self.queue.pop(0)
        buf[:len(data)] = data
        return len(data)


def recorded(family):
    return list(load_dump("dump_ipv4" if family == E.AF_INET else "dump_ipv6"))


def test_one_dump_gives_the_states_and_nat_counts_of_three_queries():
    ct = FakeCt(recorded)
    stats = C.read_entry_statistics(socket_factory=ct)
    assert ct.requests == [E.AF_INET, E.AF_INET6]  # one dump: each family once
    states, _info = D.query(E.EntryFilter.from_params({}), group_by=["proto", "state"], limit=0,
                            socket_factory=FakeCt(recorded))
    assert sorted(map(repr, stats["states"])) == sorted(map(repr, states.group_list(0)))
    for kind in ("dnat", "snat"):
        alone, _info = D.query(E.EntryFilter.from_params({"status": [kind]}), limit=0, socket_factory=FakeCt(recorded))
        assert stats["nat"][kind] == alone.matched
    assert stats["nat"]["dnat"] > 0 and stats["matched"] == stats["scanned"] == 7
    assert stats["dump_interrupted"] is False


def test_entry_statistics_folds_and_orders_largest_first():
    groups = [{"key": {"proto": "udp", "state": None, "dnat": True, "snat": False}, "count": 2},
              {"key": {"proto": "tcp", "state": "ESTABLISHED", "dnat": False, "snat": True}, "count": 3},
              {"key": {"proto": "udp", "state": None, "dnat": False, "snat": False}, "count": 2},
              {"key": {"proto": "tcp", "state": "ESTABLISHED", "dnat": True, "snat": True}, "count": 1}]
    states, nat = C.entry_statistics(groups)
    assert states == [{"key": {"proto": "tcp", "state": "ESTABLISHED"}, "count": 4},
                      {"key": {"proto": "udp", "state": None}, "count": 4}]
    assert nat == {"dnat": 3, "snat": 4}
    assert C.entry_statistics([]) == ([], {"dnat": 0, "snat": 0})


def _facts(available=True):
    return lambda subsets, **kwargs: ({"available": available, "gather_subset": list(subsets), "notes": []}, [])


class FakeFirewallHost:
    """Stands in for _firewall.apply.Host: save outputs per (family, backend), the context as given."""

    def __init__(self, saves=None):
        self.saves = saves or {}
        self.asked = []

    def audit_context(self, multi_homed=None, tcp_be_liberal=None):
        return {"multi_homed": bool(multi_homed), "tcp_be_liberal": False}

    def read_rulesets(self, families, backends):
        from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import save_parser
        self.asked.append((list(families), list(backends)))
        rulesets, sources, skipped = [], [], []
        for family in families:
            for backend in backends:
                text = self.saves.get((family, backend))
                if text is None:
                    skipped.append("%s/%s: not found" % (family, backend))
                    continue
                sources.append("%s-%s-save" % (family, backend))
                rulesets.append({"family": family, "backend": backend, "ruleset": save_parser.parse_save(text)})
        return rulesets, sources, skipped


def _never_asked():
    host = FakeFirewallHost()
    host.read_rulesets = None  # calling it fails the test
    return host


def test_collect_without_permission_keeps_facts_and_says_why(monkeypatch):
    monkeypatch.setattr(C._ct_facts, "gather", _facts())
    eperm = struct.pack("=IHHII", 36, N.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -errno.EPERM) + b"\0" * 16
    result, warnings = C.collect(["limits"], _never_asked(), firewall=False,
                                 socket_factory=FakeCt(lambda family: [eperm]))
    assert result["facts"]["available"] is True and result["entry_stats"] is None and result["firewall"] is None
    assert "CAP_NET_ADMIN" in result["entry_stats_error"] and warnings == []


def test_collect_skips_the_dump_where_conntrack_is_absent(monkeypatch):
    monkeypatch.setattr(C._ct_facts, "gather", _facts(available=False))

    def refuse(**_kwargs):
        raise AssertionError("no netlink socket may be opened")

    result, _warnings = C.collect(["limits"], _never_asked(), firewall=False, socket_factory=refuse)
    assert result["entry_stats"] is None and "not loaded" in result["entry_stats_error"]


def test_collect_everything_off_reads_only_facts(monkeypatch):
    monkeypatch.setattr(C._ct_facts, "gather", _facts())
    result, _warnings = C.collect(["limits"], _never_asked(), entry_stats=False, firewall=False)
    assert result == {"facts": {"available": True, "gather_subset": ["limits"], "notes": []}, "entry_stats": None,
                      "entry_stats_error": None, "firewall": None}


NEW_NO_EST = "*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n"


@pytest.mark.parametrize("families", [["ipv4"], ["ipv4", "ipv6"]])
def test_collect_audits_the_rule_sets_as_iptables_audit(monkeypatch, families):
    monkeypatch.setattr(C._ct_facts, "gather", _facts())
    host = FakeFirewallHost({("ipv4", "nft"): NEW_NO_EST})
    result, _warnings = C.collect(["limits"], host, entry_stats=False, families=families, multi_homed=False)
    firewall = result["firewall"]
    assert host.asked == [(families, ["nft", "legacy"])]
    from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import audit as fw_audit
    from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import save_parser
    expected = fw_audit.audit([{"family": "ipv4", "backend": "nft", "ruleset": save_parser.parse_save(NEW_NO_EST)}],
                              {"multi_homed": False, "tcp_be_liberal": False})
    assert firewall["findings"] == expected and ("NGCT001", "high") in [(f["id"], f["severity"]) for f in expected]
    assert firewall["summary"] == fw_audit.summary(expected) and firewall["sources"] == ["ipv4-nft-save"]
    assert len(firewall["skipped"]) == 2 * len(families) - 1
    assert firewall["context"] == {"multi_homed": False, "tcp_be_liberal": False}
