"""conntrack_sizing_declared: the one "sizing declared" rule, and the sizing filter refuses exactly what it calls
undeclared."""
import pytest
from ansible.errors import AnsibleFilterError
from hypothesis import given, settings, strategies as st

from ansible_collections.nodeguard.conntrack.plugins.filter.conntrack_sizing import conntrack_sizing
from ansible_collections.nodeguard.conntrack.plugins.filter.conntrack_sizing_declared import (
    FilterModule, conntrack_sizing_declared)


def test_registered():
    assert FilterModule().filters()["conntrack_sizing_declared"] is conntrack_sizing_declared


@pytest.mark.parametrize("spec, declared", [
    ({}, False),
    (None, False),
    ([1], False),
    ({"peak_flows": None, "new_flows_per_second": None, "preset": "none", "knobs": {}}, False),
    ({"peak_flows": "", "preset": ""}, False),
    ({"headroom": 2, "max_cap": 100000, "timeout_profile": "kubernetes"}, False),
    ({"knobs": {"buckets": 65536, "tcp_timeout_established": 3600}}, False),
    ({"knobs": {"no_such_knob": 1}}, False),
    ({"peak_flows": 1000}, True),
    ({"peak_flows": "1000"}, True),
    ({"new_flows_per_second": 10, "avg_flow_lifetime": 60}, True),
    ({"preset": "kube_proxy"}, True),
    ({"per_cpu_floor": 32768}, True),
    ({"min_max": 262144}, True),
    ({"knobs": {"max": 262144}}, True),
    ({"knobs": {"net.netfilter.nf_conntrack_max": 0}}, True),
])
def test_rule(spec, declared):
    assert conntrack_sizing_declared(spec) is declared


_FIELDS = {
    "peak_flows": st.integers(1, 2000000),
    "per_cpu_floor": st.integers(1, 65536),
    "min_max": st.integers(1, 2000000),
    "preset": st.just("kube_proxy"),
    "knobs": st.just({"max": 1048576}),
    "headroom": st.sampled_from([1, 1.5, 2]),
    "timeout_profile": st.sampled_from(["kernel_default", "kubernetes"]),
}


@settings(max_examples=150, deadline=None)
@given(spec=st.fixed_dictionaries({}, optional=_FIELDS), rate=st.booleans())
def test_sizing_refuses_exactly_the_undeclared(spec, rate):
    if rate:
        spec = dict(spec, new_flows_per_second=100, avg_flow_lifetime=60)
    declared = conntrack_sizing_declared(spec)
    try:
        conntrack_sizing(spec, memory_mb=16384, cpus=8)
        refused_as_undeclared = False
    except AnsibleFilterError as exc:
        refused_as_undeclared = "give peak_flows" in str(exc)
    assert refused_as_undeclared is (not declared)
