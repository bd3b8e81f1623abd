"""Sizing rules: examples, properties (hypothesis) and bad input."""
import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.nodeguard.conntrack.plugins.plugin_utils._sizing import (
    BUCKET_GRANULARITY,
    SizingError,
    buckets_for,
    size,
)

HOST = {"memory_mb": 16384, "cpus": 8}


def _size(**kwargs):
    spec = dict(HOST)
    spec.update(kwargs)
    return size(spec)


def test_peak_with_headroom_and_buckets():
    out = _size(peak_flows=100000, headroom=1.5)
    assert out["demand"] == 100000
    assert out["settings"]["max"] == 150000
    # 150000 / 4 = 37500 -> next multiple of 512 is 37888
    assert out["settings"]["buckets"] == 37888
    assert out["warnings"] == []
    assert out["memory"]["bytes"] == 150000 * 384 + 37888 * 8


def test_littles_law_wins_when_larger_than_peak():
    out = _size(peak_flows=1000, new_flows_per_second=2000, avg_flow_lifetime=150, headroom=1.0)
    assert out["demand"] == 300000
    assert out["settings"]["max"] == 300000
    assert any("Little's law" in line for line in out["rationale"])


def test_kube_proxy_preset_floor_and_cap():
    small = _size(preset="kube_proxy", peak_flows=10)
    assert small["settings"]["max"] == 32768 * 8  # per-CPU floor beats the 131072 minimum on 8 CPUs
    two_cpu = size({"memory_mb": 16384, "cpus": 2, "preset": "kube_proxy"})
    assert two_cpu["settings"]["max"] == 131072
    big = size({"memory_mb": 262144, "cpus": 64, "preset": "kube_proxy"})
    assert big["settings"]["max"] == 1048576


def test_cap_below_headroom_warns():
    out = _size(peak_flows=100000, headroom=2, max_cap=150000)
    assert out["settings"]["max"] == 150000
    assert any("max_cap" in w for w in out["warnings"])


def test_budget_forces_cap_and_warns():
    out = size({"memory_mb": 1024, "cpus": 1, "peak_flows": 100000, "memory_budget_pct": 5})
    limit = int(1024 * 1048576 * 0.05 // (384 + 8 / 4.0))
    assert limit - 2 <= out["settings"]["max"] <= limit
    assert any("memory budget forced max" in w for w in out["warnings"])
    assert out["memory"]["bytes"] <= out["memory"]["budget_bytes"]
    starved = size({"memory_mb": 1024, "cpus": 1, "peak_flows": 200000, "memory_budget_pct": 5})
    assert starved["settings"]["max"] == out["settings"]["max"]
    assert any("below the peak demand 200,000 itself" in w for w in starved["warnings"])


def test_profiles_and_overrides():
    out = _size(peak_flows=1000, timeout_profile="kubernetes", timeouts={"net.netfilter.nf_conntrack_udp_timeout": 45})
    s = out["settings"]
    assert s["tcp_timeout_established"] == 86400 and s["tcp_timeout_close_wait"] == 3600
    assert s["udp_timeout"] == 45
    default = _size(peak_flows=1000)
    assert set(default["settings"]) == {"max", "buckets"}


def test_udp_timeout_above_stream_warns():
    out = _size(peak_flows=1000, timeouts={"udp_timeout": 300})
    assert any("udp_timeout (300 s) is above udp_timeout_stream" in w for w in out["warnings"])


def test_established_shorter_than_idle_flow_warns():
    out = _size(peak_flows=1000, timeout_profile="high_churn", longest_idle_tcp_flow=7200)
    assert any("tcp_timeout_established (3600 s)" in w for w in out["warnings"])
    ok = _size(peak_flows=1000, timeout_profile="kubernetes", longest_idle_tcp_flow=7200)
    assert not any("tcp_timeout_established" in w for w in ok["warnings"])


def test_lifetime_without_time_wait_warns():
    out = _size(new_flows_per_second=100, avg_flow_lifetime=5)
    assert any("TIME_WAIT" in w for w in out["warnings"])


def test_explicit_knobs_pass_through():
    out = _size(peak_flows=1000, knobs={"tcp_be_liberal": 1, "expect_max": 8192})
    assert out["settings"]["tcp_be_liberal"] == 1
    assert out["settings"]["expect_max"] == 8192


def test_deterministic():
    spec = dict(HOST, peak_flows=123457, new_flows_per_second=77.5, avg_flow_lifetime=130, timeout_profile="udp_heavy")
    assert size(dict(spec)) == size(dict(spec))


@pytest.mark.parametrize("spec, field", [
    ({"peak_flows": -1}, "peak_flows"),
    ({"peak_flows": 0}, "peak_flows"),
    ({"peak_flows": "1000"}, "peak_flows"),
    ({"peak_flows": True}, "peak_flows"),
    ({"peak_flows": 1000, "headroom": 0.5}, "headroom"),
    ({"peak_flows": 1000, "headroom": "2"}, "headroom"),
    ({"peak_flows": 1000, "memory_mb": 0}, "memory_mb"),
    ({"peak_flows": 1000, "cpus": False}, "cpus"),
    ({"peak_flows": 1000, "max_cap": 500}, "max_cap"),
    ({"peak_flows": 1000, "knobs": {"max": 999}}, "knobs.max"),
    ({"peak_flows": 1000, "timeout_profile": "fast"}, "timeout_profile"),
    ({"peak_flows": 1000, "preset": "openshift"}, "preset"),
    ({"peak_flows": 1000, "timeouts": {"bogus_timeout": 5}}, "timeouts.bogus_timeout"),
    ({"peak_flows": 1000, "timeouts": {"../../kernel/panic": 5}}, "timeouts.../../kernel/panic"),
    ({"peak_flows": 1000, "timeouts": {"max": 5}}, "timeouts.max"),
    ({"peak_flows": 1000, "timeouts": {"udp_timeout": 0}}, "timeouts.udp_timeout"),
    ({"peak_flows": 1000, "knobs": {"count": 5}}, "knobs.count"),
    ({"peak_flows": 1000, "knobs": {"tcp_be_liberal": 2}}, "knobs.tcp_be_liberal"),
    ({"peak_flows": 1000, "memory_budget_pct": 0}, "memory_budget_pct"),
    ({"peak_flows": 1000, "memory_budget_pct": 150}, "memory_budget_pct"),
    ({"peak_flows": 1000, "peak_flow": 5}, "peak_flow"),
    ({"new_flows_per_second": 100}, "avg_flow_lifetime"),
    ({}, "peak_flows"),
    ({"peak_flows": 1000, "min_max": 200000, "max_cap": 100000}, "max_cap"),
])
def test_bad_input_names_field(spec, field):
    full = dict(HOST)
    full.update(spec)
    with pytest.raises(SizingError) as info:
        size(full)
    assert info.value.field == field
    assert str(info.value).startswith(field + ":")


def test_missing_host_facts():
    with pytest.raises(SizingError) as info:
        size({"peak_flows": 10, "cpus": 2})
    assert info.value.field == "memory_mb"


# ---- properties -------------------------------------------------------------------------------

peaks = st.integers(min_value=1, max_value=5000000)
hosts = st.fixed_dictionaries({
    "memory_mb": st.integers(min_value=256, max_value=1048576),
    "cpus": st.integers(min_value=1, max_value=256),
})
options = st.fixed_dictionaries({}, optional={
    "headroom": st.floats(min_value=1, max_value=4),
    "per_cpu_floor": st.integers(min_value=1, max_value=65536),
    "min_max": st.integers(min_value=1, max_value=262144),
    "memory_budget_pct": st.floats(min_value=0.5, max_value=50),
    "buckets_ratio": st.integers(min_value=1, max_value=8),
    "entry_bytes": st.integers(min_value=256, max_value=512),
})


@settings(max_examples=300, deadline=None)
@given(host=hosts, opts=options, a=peaks, b=peaks)
def test_more_peak_never_lowers_max(host, opts, a, b):
    low, high = sorted((a, b))
    spec = dict(host, **opts)
    assert size(dict(spec, peak_flows=low))["settings"]["max"] <= size(dict(spec, peak_flows=high))["settings"]["max"]


@settings(max_examples=300, deadline=None)
@given(host=hosts, opts=options, peak=peaks, cap=st.one_of(st.none(), st.integers(min_value=1, max_value=10000000)))
def test_respects_floor_cap_budget(host, opts, peak, cap):
    spec = dict(host, peak_flows=peak, **opts)
    if cap is not None:
        spec["max_cap"] = cap
    try:
        out = size(spec)
    except SizingError as exc:
        # the only refusals for valid-typed input: cap below demand or below the minimum
        assert exc.field == "max_cap"
        assert cap < peak or cap < opts.get("min_max", 0)
        return
    s = out["settings"]
    budget = out["memory"]["budget_bytes"]
    ratio = opts.get("buckets_ratio", 4)
    entry = opts.get("entry_bytes", 384)
    # never above the cap or the budget
    if cap is not None:
        assert s["max"] <= cap
    assert s["max"] * (entry + 8.0 / ratio) <= budget + 1e-6 * budget
    if any("memory budget" in line for line in out["rationale"]):
        assert out["memory"]["bytes"] <= budget
    # floors hold unless the budget or the cap had to win
    floor = max(opts.get("min_max", 0), opts.get("per_cpu_floor", 0) * host["cpus"],
                int(-(-peak * opts.get("headroom", 1.5) // 1)))
    if s["max"] < floor:
        budget_max = int(budget // (entry + 8.0 / ratio))
        slack = BUCKET_GRANULARITY * 8 // entry + 2  # buckets rounding taken back from max
        assert (cap is not None and s["max"] == cap) or budget_max - slack <= s["max"] <= budget_max
    # buckets: multiple of 512, at least max/ratio
    assert s["buckets"] % BUCKET_GRANULARITY == 0
    assert s["buckets"] * ratio >= s["max"]
    assert s["buckets"] == buckets_for(s["max"], ratio)
