"""Property test against the real kernel: for random valid models, what iptables_baseline renders is exactly what
iptables-save prints back (so every apply is followed by a no-change run), on both backends, and every transition
from the previous random model to the next leaves other software's chains alone."""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from firewall_lab import BACKENDS, FAMILIES, foreign, module, save, seed_foreign

SOURCES = ["10.1.2.3/8", "192.0.2.7", "198.51.100.0/24", "2001:db8::/32", "2001:DB8:0:0::5", "fd00:1::/64"]
INTERFACES = ["eth0", "veth+", "wg0", "br-lan", "bond0.100"]
COMMENT = st.text(alphabet="abcXYZ019 _.,:;/=+()[]#@%-", min_size=1, max_size=30)

port = st.one_of(st.integers(1, 65535),
                 st.tuples(st.integers(1, 30000), st.integers(1, 30000)).map(
                     lambda t: "%d:%d" % (t[0], t[0] + t[1])).filter(lambda p: int(p.split(":")[1]) <= 65535))
service = st.fixed_dictionaries({
    "proto": st.sampled_from(["tcp", "udp", "sctp"]),
    "ports": st.lists(port, min_size=1, max_size=18),
}, optional={
    "sources": st.lists(st.sampled_from(SOURCES), max_size=3, unique=True),
    "interfaces": st.lists(st.sampled_from(INTERFACES), max_size=2, unique=True),
    "comment": COMMENT,
    "name": st.from_regex(r"[a-z][a-z0-9_.-]{0,15}", fullmatch=True),
})
invalid = st.fixed_dictionaries({}, optional={
    "enabled": st.booleans(),
    "in_interfaces": st.lists(st.sampled_from(INTERFACES), max_size=2, unique=True),
    "sources": st.lists(st.sampled_from(SOURCES), max_size=2, unique=True),
    "exempt_sources": st.lists(st.sampled_from(SOURCES), max_size=2, unique=True),
    "exempt_interfaces": st.lists(st.sampled_from(INTERFACES), max_size=2, unique=True),
    "log": st.booleans(),
    "log_rate": st.sampled_from(["5/min", "1/second", "10/hour", "8/d", "60/min", "24/day", "10000/sec"]),
    "log_prefix": st.text(alphabet="abc XYZ09_.:=-", min_size=1, max_size=29),
})
model = st.fixed_dictionaries({
    "input": st.fixed_dictionaries({}, optional={
        "loopback": st.booleans(), "icmp": st.booleans(), "icmp_echo": st.booleans(),
        "final_action": st.sampled_from(["return", "drop", "reject"]),
        "services": st.lists(service, max_size=4), "invalid_drop": invalid}),
    "forward": st.fixed_dictionaries({"enabled": st.booleans()}, optional={
        "accept_dnat": st.booleans(), "final_action": st.sampled_from(["return", "drop", "reject"]),
        "invalid_drop": invalid}),
    "notrack": st.lists(st.fixed_dictionaries({
        "proto": st.sampled_from(["tcp", "udp"]), "ports": st.lists(port, min_size=1, max_size=3),
    }, optional={"direction": st.sampled_from(["in", "out", "both"]), "accept": st.booleans(),
                 "local_ports": st.lists(port, min_size=1, max_size=3),
                 "sources": st.lists(st.sampled_from(SOURCES), max_size=2, unique=True),
                 "comment": COMMENT}).filter(lambda d: d.get("direction", "in") != "in" or "local_ports" not in d),
        max_size=2),
    "policies": st.fixed_dictionaries({}, optional={"forward": st.sampled_from(["ACCEPT", "DROP"])}),
})


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_models_read_back_exactly(lab, backend):
    ns = lab.add("rt", conntrack_rule=False)
    seed_foreign(ns, backend)
    before = dict((family, foreign(save(ns, backend, family))) for family in FAMILIES)
    policies_seen = []

    @settings(max_examples=15, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(model)
    def apply_twice(params):
        args = dict(params, backend=backend, state_dir="/tmp/ngct-unused")
        first = module(ns, "iptables_baseline", args)
        assert first["_rc"] == 0, first
        second = module(ns, "iptables_baseline", args)
        assert second["_rc"] == 0 and second["changed"] is False, (params, first.get("rules"), second)
        policies_seen.append(params["policies"].get("forward"))
        for family in FAMILIES:
            current = foreign(save(ns, backend, family))
            # the FORWARD policy is the one foreign line a model may own (policies.forward)
            strip = [line for line in current if not line.startswith(":FORWARD ")]
            assert strip == [line for line in before[family] if not line.startswith(":FORWARD ")], family

    apply_twice()
    assert policies_seen
