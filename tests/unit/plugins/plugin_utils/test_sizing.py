"""Sizing rules: examples, the kernel's own rules (issue 13), properties (hypothesis) and bad input."""
import math

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import kernel_model
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.knobs import INT_MAX, MAX_TIMEOUT_SECONDS
from ansible_collections.nodeguard.conntrack.plugins.plugin_utils._sizing import (
    BUCKET_GRANULARITY,
    INPUT_FIELDS,
    LINUX_KEEPALIVE_SECONDS,
    MAX_INSERT_FAILURE,
    PEER_TIME_WAIT_SECONDS,
    TIMEOUT_PROFILES,
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
    out = _size(peak_flows=400000, headroom=1.5)
    assert out["demand"] == 400000
    assert out["settings"]["max"] == 600000
    # buckets = max (the kernel's own ratio), rounded up to a multiple of 512
    assert out["settings"]["buckets"] == 600064
    assert out["warnings"] == []
    assert out["memory"]["bytes"] == 600000 * 384 + 600064 * 8


def test_littles_law_wins_when_larger_than_peak():
    out = _size(peak_flows=1000, new_flows_per_second=2000, avg_flow_lifetime=150, headroom=1.0)
    assert out["demand"] == 300000
    assert out["settings"]["max"] == 300000
    assert any("Little's law" in line for line in out["rationale"])


# ---- defect 1: the kube_proxy preset is kube-proxy's rule, without a cap ---------------------------------------

def test_kube_proxy_preset_floor_no_cap():
    small = _size(preset="kube_proxy", peak_flows=10)
    assert small["settings"]["max"] == 32768 * 8  # per-CPU floor beats the 131072 minimum on 8 CPUs
    two_cpu = size({"memory_mb": 16384, "cpus": 2, "preset": "kube_proxy"})
    assert two_cpu["settings"]["max"] == 262144  # 131072 minimum, then the 16 GiB kernel default
    two_cpu_small = size({"memory_mb": 2048, "cpus": 2, "preset": "kube_proxy", "kernel_release": "6.1.0"})
    assert two_cpu_small["settings"]["max"] == 131072
    big = size({"memory_mb": 262144, "cpus": 64, "preset": "kube_proxy"})
    assert big["settings"]["max"] == 32768 * 64  # 2,097,152: no 1,048,576 cap


def test_kube_proxy_preset_sizes_a_big_load_balancer():
    # was: "max_cap (1,048,576) is below the peak demand (2,000,000)"
    out = size({"memory_mb": 262144, "cpus": 64, "peak_flows": 2000000, "preset": "kube_proxy"})
    assert out["settings"]["max"] == 3000000


def test_cap_below_headroom_warns():
    out = _size(peak_flows=300000, headroom=2, max_cap=450000)
    assert out["settings"]["max"] == 450000
    assert any("max_cap" in w for w in out["warnings"])


# ---- defect 2: chain model ----------------------------------------------------------------------------------

def test_default_buckets_equal_max():
    out = _size(peak_flows=400000)
    assert out["settings"]["buckets"] == buckets_for(out["settings"]["max"], 1)
    assert out["chains"]["nodes_per_bucket"] == pytest.approx(2.0, rel=1e-3)  # every entry hashed twice


def test_kernel_chain_limits_by_version():
    assert kernel_model.chain_limit((5, 14)) is None
    assert kernel_model.chain_limit((5, 15)) == (8, 31)
    assert kernel_model.chain_limit((6, 2)) == (8, 31)
    assert kernel_model.chain_limit((6, 3)) == (50, 79)
    assert kernel_model.chain_limit(None) == (8, 31)  # unknown: the strictest


def test_insert_failure_model():
    # ratio 4 (the old default): 8 nodes per bucket at a full table; on 5.15-6.2 about 9 % of inserts fail
    assert kernel_model.insert_failure(4, 1, (8, 31)) == pytest.approx(0.0909, rel=0.02)
    assert kernel_model.insert_failure(1, 1, (8, 31)) < MAX_INSERT_FAILURE
    assert kernel_model.insert_failure(64, 1, (8, 31)) > 0.999
    assert kernel_model.insert_failure(64, 1, None) == 0.0


@pytest.mark.parametrize("release, ratio, accepted", [
    ("6.1.0-18-amd64", 1, True),
    ("6.1.0-18-amd64", 2, False),
    ("6.1.0-18-amd64", 4, False),   # the old default
    ("5.15.0-91-generic", 2, False),
    ("6.8.0-45-generic", 4, True),
    ("6.8.0-45-generic", 12, True),
    ("6.8.0-45-generic", 16, False),
    ("6.8.0-45-generic", 64, False),  # was accepted with a warning about CPU
    ("5.10.0-28-amd64", 16, True),    # no chain limit before 5.15
    (None, 2, False),                 # unknown kernel: the strictest limit
])
def test_ratio_refused_when_inserts_would_fail(release, ratio, accepted):
    spec = dict(HOST, peak_flows=400000, buckets_ratio=ratio)
    if release:
        spec["kernel_release"] = release
    if accepted:
        out = size(spec)
        assert out["chains"]["acceptable"]
    else:
        with pytest.raises(SizingError) as info:
            size(spec)
        assert info.value.field == "buckets_ratio"
        assert "drop" in str(info.value)


def test_pinned_long_chains_warn_that_packets_drop():
    out = _size(peak_flows=400000, knobs={"buckets": 65536}, kernel_release="6.1.0")
    assert any("packets drop" in w and "chaintoolong" in w for w in out["warnings"])


# ---- defect 3: floor at the kernel default --------------------------------------------------------------------

@pytest.mark.parametrize("memory_mb, version, expected", [
    (1900, (6, 1), {"max": 65536, "buckets": 65536}),
    (16384, (6, 1), {"max": 262144, "buckets": 262144}),
    (512, (6, 1), {"max": 4096, "buckets": 4096}),
    (64, (6, 1), {"max": 1024, "buckets": 1024}),
    (1900, (5, 10), {"max": 65536, "buckets": 16384}),
    (16384, (5, 10), {"max": 262144, "buckets": 65536}),
    (512, (5, 10), {"max": 16384, "buckets": 4096}),
    (512, None, {"max": 16384, "buckets": 4096}),
])
def test_kernel_default_size(memory_mb, version, expected):
    assert kernel_model.default_size(memory_mb * 1048576, version) == expected


def test_small_vm_never_below_kernel_default():
    # was 7,500 / 2,048 on a 2-CPU/2-GB VM with a 5k peak: below the kernel's 65,536 / 65,536
    out = size({"memory_mb": 1900, "cpus": 2, "peak_flows": 5000, "kernel_release": "6.1.0-18-amd64"})
    assert out["settings"]["max"] == 65536 and out["settings"]["buckets"] == 65536
    assert any("kernel default" in line for line in out["rationale"])


def test_explicit_pin_may_go_below_the_default():
    out = size({"memory_mb": 1900, "cpus": 2, "peak_flows": 5000, "knobs": {"max": 8000, "buckets": 8192},
                "kernel_release": "6.1.0"})
    assert out["settings"]["max"] == 8000 and out["settings"]["buckets"] == 8192
    assert any("below the kernel's own default" in w for w in out["warnings"])


def test_budget_below_kernel_default_keeps_the_default():
    out = size({"memory_mb": 2048, "cpus": 1, "peak_flows": 100000, "memory_budget_pct": 0.5, "kernel_release": "6.6"})
    assert out["settings"]["max"] == kernel_model.default_size(2048 * 1048576, (6, 6))["max"] == 65536
    assert any("fewer entries than the kernel" in w for w in out["warnings"])


# ---- defect 4: ranges validated, the field named ---------------------------------------------------------------

@pytest.mark.parametrize("spec, field", [
    ({"peak_flows": 1000, "headroom": 1e308}, "headroom"),          # was a raw OverflowError
    ({"peak_flows": 1000, "knobs": {"max": 2 ** 40}}, "knobs.max"),  # was accepted
    ({"peak_flows": 1000, "knobs": {"max": INT_MAX + 1}}, "knobs.max"),
    ({"peak_flows": 1000, "timeouts": {"tcp_timeout_established": MAX_TIMEOUT_SECONDS + 1}},
     "timeouts.tcp_timeout_established"),
    ({"peak_flows": INT_MAX + 1}, "peak_flows"),
    ({"peak_flows": INT_MAX // 2, "headroom": 3}, "headroom"),
    ({"new_flows_per_second": 1e9, "avg_flow_lifetime": 1e9}, "avg_flow_lifetime"),
    ({"peak_flows": 1000, "per_cpu_floor": INT_MAX, "cpus": 4}, "per_cpu_floor"),
    ({"peak_flows": 1000, "knobs": {"events": 3}}, "knobs.events"),
    ({"peak_flows": 1000, "kernel_release": "latest"}, "kernel_release"),
    ({"peak_flows": 1000, "knobs": {"helper": 1}}, "knobs.helper"),  # removed in 6.0, an anti-pattern before
])
def test_out_of_range_names_the_field(spec, field):
    full = dict(HOST)
    full.update(spec)
    with pytest.raises(SizingError) as info:
        size(full)
    assert info.value.field == field


def test_timeout_at_the_kernel_limit_is_accepted():
    out = _size(peak_flows=1000, timeouts={"tcp_timeout_established": MAX_TIMEOUT_SECONDS})
    assert out["settings"]["tcp_timeout_established"] == 2147483


def test_unlimited_max_blames_nothing():
    # was: "memory_budget_pct: leaves room for no conntrack entry at all"
    out = _size(peak_flows=1000, knobs={"max": 0})
    assert out["settings"]["max"] == 0
    assert any("unlimited" in w for w in out["warnings"])


def test_one_flow_per_second_for_one_second():
    # was max 2: now the kernel's own default for the host
    out = _size(new_flows_per_second=1, avg_flow_lifetime=1, kernel_release="6.1.0")
    assert out["settings"]["max"] == 262144 and out["settings"]["buckets"] == 262144


# ---- defect 6: timeout profiles, one test per claim -------------------------------------------------------------

def test_udp_heavy_raises_only_the_stream_timeout():
    profile = TIMEOUT_PROFILES["udp_heavy"]
    assert "udp_timeout" not in profile  # one-shot (DNS) flows keep the kernel's 30 s
    assert profile["udp_timeout_stream"] > 120
    out = _size(peak_flows=1000, timeout_profile="udp_heavy")
    assert "udp_timeout" not in out["settings"]


def test_high_churn_keeps_established_above_keepalive():
    assert TIMEOUT_PROFILES["high_churn"]["tcp_timeout_established"] > LINUX_KEEPALIVE_SECONDS == 7200


def test_high_churn_keeps_time_wait_at_least_the_peers():
    effective = TIMEOUT_PROFILES["high_churn"].get("tcp_timeout_time_wait", 120)
    assert effective >= PEER_TIME_WAIT_SECONDS >= 60
    assert TIMEOUT_PROFILES["high_churn"].get("tcp_timeout_fin_wait", 120) >= 60  # Linux tcp_fin_timeout


@pytest.mark.parametrize("profile", sorted(TIMEOUT_PROFILES))
def test_no_profile_warns_by_itself(profile):
    assert _size(peak_flows=1000, timeout_profile=profile)["warnings"] == []


def test_short_established_and_time_wait_warn():
    out = _size(peak_flows=1000, timeouts={"tcp_timeout_established": 3600, "tcp_timeout_time_wait": 30})
    assert any("keepalive" in w for w in out["warnings"])
    assert any("SNAT port" in w for w in out["warnings"])


# ---- defect 8: peak_flows is the conntrack count at peak ---------------------------------------------------------

def test_peak_flows_is_the_conntrack_count():
    out = _size(peak_flows=400000)
    assert any("conntrack count" in line and "TIME_WAIT" in line for line in out["rationale"])


def test_budget_forces_cap_and_warns():
    out = size({"memory_mb": 8192, "cpus": 1, "peak_flows": 1000000, "memory_budget_pct": 5})
    limit = int(8192 * 1048576 * 0.05 // (384 + 8 / 1.0))
    assert limit - 2 <= out["settings"]["max"] <= limit
    assert any("memory budget forced max" in w for w in out["warnings"])
    assert out["memory"]["bytes"] <= out["memory"]["budget_bytes"]
    starved = size({"memory_mb": 8192, "cpus": 1, "peak_flows": 2000000, "memory_budget_pct": 5})
    assert starved["settings"]["max"] == out["settings"]["max"]
    assert any("below the peak demand 2,000,000 itself" in w for w in starved["warnings"])


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
    out = _size(peak_flows=1000, timeout_profile="high_churn", longest_idle_tcp_flow=10000)
    assert any("tcp_timeout_established (7800 s) is shorter" in w for w in out["warnings"])
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
releases = st.sampled_from([None, "4.19.0-27-amd64", "5.10.0-28-amd64", "5.15.0-91-generic", "6.1.0-18-amd64",
                            "6.2.16", "6.3.0", "6.8.0-45-generic", "6.18.0"])
hosts = st.fixed_dictionaries({
    "memory_mb": st.integers(min_value=64, max_value=1048576),
    "cpus": st.integers(min_value=1, max_value=256),
}, optional={"kernel_release": releases})
options = st.fixed_dictionaries({}, optional={
    "headroom": st.floats(min_value=1, max_value=4),
    "per_cpu_floor": st.integers(min_value=1, max_value=65536),
    "min_max": st.integers(min_value=1, max_value=262144),
    "memory_budget_pct": st.floats(min_value=0.5, max_value=50),
    "buckets_ratio": st.integers(min_value=1, max_value=16),
    "entry_bytes": st.integers(min_value=256, max_value=512),
})


def _version(spec):
    return kernel_model.parse_release(spec.get("kernel_release"))


@settings(max_examples=300, deadline=None)
@given(host=hosts, opts=options, a=peaks, b=peaks)
def test_more_peak_never_lowers_max(host, opts, a, b):
    low, high = sorted((a, b))
    spec = dict(host, **opts)
    try:
        lo = size(dict(spec, peak_flows=low))["settings"]["max"]
    except SizingError as exc:
        assert exc.field == "buckets_ratio"
        return
    assert lo <= size(dict(spec, peak_flows=high))["settings"]["max"]


@settings(max_examples=400, deadline=None)
@given(host=hosts, opts=options, peak=peaks, cap=st.one_of(st.none(), st.integers(min_value=1, max_value=10000000)))
def test_respects_kernel_floor_chains_cap_budget(host, opts, peak, cap):
    spec = dict(host, peak_flows=peak, **opts)
    if cap is not None:
        spec["max_cap"] = cap
    try:
        out = size(spec)
    except SizingError as exc:
        # the only refusals for valid-typed input: cap below demand or the minimum, or a ratio that drops inserts
        assert exc.field in ("max_cap", "buckets_ratio")
        if exc.field == "max_cap":
            assert cap < peak or cap < opts.get("min_max", 0)
        else:
            limits = kernel_model.chain_limit(_version(spec))
            assert kernel_model.insert_failure(opts["buckets_ratio"], 1, limits) > MAX_INSERT_FAILURE
        return
    s = out["settings"]
    default = kernel_model.default_size(host["memory_mb"] * 1048576, _version(spec))
    # never below the kernel's own default (nothing is pinned here)
    assert s["max"] >= default["max"] and s["buckets"] >= default["buckets"]
    # chains within the kernel's limit: expected insert failure at a full table negligible
    limits = kernel_model.chain_limit(_version(spec))
    assert kernel_model.insert_failure(s["max"], s["buckets"], limits) <= MAX_INSERT_FAILURE
    assert out["chains"]["acceptable"]
    budget = out["memory"]["budget_bytes"]
    ratio = opts.get("buckets_ratio", 1)
    entry = opts.get("entry_bytes", 384)
    if s["max"] > default["max"]:
        # above the default: never above the cap or the budget
        if cap is not None:
            assert s["max"] <= cap
        assert s["max"] * (entry + 8.0 / ratio) <= budget + 1e-6 * budget
        floor = max(opts.get("min_max", 0), opts.get("per_cpu_floor", 0) * host["cpus"],
                    int(math.ceil(peak * opts.get("headroom", 1.5))))
        if s["max"] < floor:
            budget_max = int(budget // (entry + 8.0 / ratio))
            slack = BUCKET_GRANULARITY * 8 // entry + 2  # buckets rounding taken back from max
            assert (cap is not None and s["max"] == cap) or budget_max - slack <= s["max"] <= budget_max
    # buckets: multiple of 512, at least max/ratio
    assert s["buckets"] % BUCKET_GRANULARITY == 0
    assert s["buckets"] * ratio >= s["max"]
    assert s["max"] <= INT_MAX


_anything = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-2 ** 70, max_value=2 ** 70),
              st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=30), inner, max_size=3)),
    max_leaves=6)
_knob_names = st.sampled_from(["max", "buckets", "expect_max", "udp_timeout", "tcp_timeout_established",
                               "nf_conntrack_events", "helper", "tcp_be_liberal", "count", "../x", "bogus"])
_fields = st.sampled_from(INPUT_FIELDS)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.dictionaries(_fields, _anything, max_size=8),
       knobs=st.dictionaries(_knob_names, st.one_of(st.integers(min_value=-5, max_value=2 ** 41), _anything),
                             max_size=3),
       numbers=st.dictionaries(_fields, st.one_of(st.integers(min_value=-10, max_value=2 ** 40),
                                                  st.floats(allow_nan=True, allow_infinity=True)), max_size=6))
def test_no_traceback_for_any_input(base, knobs, numbers):
    spec = dict(base)
    spec.update(numbers)
    if knobs:
        spec["knobs"] = knobs
    try:
        out = size(spec)
    except SizingError as exc:
        assert exc.field and str(exc).startswith(str(exc.field) + ":")
        return
    s = out["settings"]
    assert 0 <= s["max"] <= INT_MAX and 1 <= s["buckets"]
    pinned = spec.get("knobs") or {}
    version = _version(spec) if isinstance(spec.get("kernel_release"), str) else None
    default = kernel_model.default_size(spec["memory_mb"] * 1048576, version)
    if "max" not in pinned and "nf_conntrack_max" not in pinned:
        assert s["max"] >= default["max"]
    if not pinned:
        assert out["chains"]["acceptable"]
