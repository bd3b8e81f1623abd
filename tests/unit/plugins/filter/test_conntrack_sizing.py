"""The conntrack_sizing filter: thin wrapper, AnsibleFilterError naming the field, host facts as arguments."""
import pytest
from ansible.errors import AnsibleFilterError
from hypothesis import given, settings, strategies as st

from ansible_collections.nodeguard.conntrack.plugins.filter.conntrack_sizing import FilterModule, conntrack_sizing


def test_registered():
    assert FilterModule().filters()["conntrack_sizing"] is conntrack_sizing


def test_facts_as_arguments_override_input():
    out = conntrack_sizing({"peak_flows": 400000, "memory_mb": 1}, memory_mb=16384, cpus=4)
    assert out["settings"]["max"] == 600000
    assert out["memory"]["pct_of_ram"] == round(out["memory"]["bytes"] * 100.0 / (16384 * 1048576), 2)
    assert isinstance(out["rationale"], list) and out["rationale"]


@pytest.mark.parametrize("spec, kwargs, field", [
    ({"peak_flows": -5}, {"memory_mb": 1024, "cpus": 1}, "peak_flows"),
    ({"peak_flows": 10}, {"memory_mb": "lots", "cpus": 1}, "memory_mb"),
    ({"peak_flows": 10}, {"memory_mb": 1024, "cpus": True}, "cpus"),
    ({"peak_flows": 10, "timeout_profile": "nope"}, {"memory_mb": 1024, "cpus": 1}, "timeout_profile"),
    ({"peak_flows": 10, "knobs": {"net.ipv4.ip_forward": 1}}, {"memory_mb": 1024, "cpus": 1}, "knobs.net.ipv4.ip_forward"),
])
def test_bad_input_is_a_filter_error_naming_the_field(spec, kwargs, field):
    with pytest.raises(AnsibleFilterError) as info:
        conntrack_sizing(spec, **kwargs)
    assert "conntrack_sizing: %s:" % field in str(info.value)


def test_non_mapping_input():
    with pytest.raises(AnsibleFilterError, match="mapping"):
        conntrack_sizing([1, 2], memory_mb=1024, cpus=1)


@settings(max_examples=200, deadline=None)
@given(a=st.integers(1, 3000000), b=st.integers(1, 3000000), mem=st.integers(512, 524288), cpus=st.integers(1, 128))
def test_monotonic_through_the_filter(a, b, mem, cpus):
    low, high = sorted((a, b))
    spec = {"preset": "kube_proxy"}
    # kube-proxy's rule has no cap: every peak is sized (issue 13), at least the per-CPU floor or the budget
    lo = conntrack_sizing(dict(spec, peak_flows=low), memory_mb=mem, cpus=cpus)["settings"]["max"]
    hi = conntrack_sizing(dict(spec, peak_flows=high), memory_mb=mem, cpus=cpus)["settings"]["max"]
    assert lo <= hi


def test_numeric_strings_size_like_numbers():
    spec = {"peak_flows": 200000, "new_flows_per_second": 2000, "avg_flow_lifetime": 150, "headroom": 1.5,
            "min_max": 65536, "memory_budget_pct": 5, "timeouts": {"tcp_timeout_established": 86400}}
    as_text = {"peak_flows": "200000", "new_flows_per_second": "2000", "avg_flow_lifetime": " 150 ",
               "headroom": "1.5", "min_max": "65536", "memory_budget_pct": "5e0",
               "timeouts": {"tcp_timeout_established": "86400"}}
    assert conntrack_sizing(as_text, memory_mb="8192", cpus="4") == conntrack_sizing(spec, memory_mb=8192, cpus=4)


@pytest.mark.parametrize("spec, kwargs, field", [
    ({"peak_flows": "lots"}, {"memory_mb": 1024, "cpus": 1}, "peak_flows"),
    ({"peak_flows": "1.5"}, {"memory_mb": 1024, "cpus": 1}, "peak_flows"),
    ({"peak_flows": ""}, {"memory_mb": 1024, "cpus": 1}, "peak_flows"),
    ({"peak_flows": 10, "headroom": "1,5"}, {"memory_mb": 1024, "cpus": 1}, "headroom"),
    ({"peak_flows": 10}, {"memory_mb": "1024", "cpus": "two"}, "cpus"),
    ({"peak_flows": 10, "knobs": {"expect_max": "many"}}, {"memory_mb": 1024, "cpus": 1}, "knobs.expect_max"),
    ({"peak_flows": "-5"}, {"memory_mb": 1024, "cpus": 1}, "peak_flows"),
])
def test_non_numeric_strings_fail_naming_the_field(spec, kwargs, field):
    with pytest.raises(AnsibleFilterError) as info:
        conntrack_sizing(spec, **kwargs)
    assert "conntrack_sizing: %s:" % field in str(info.value)
