"""The audit evaluator: thresholds, counter deltas between runs, sizing against the declared peak, rule findings."""
import copy

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.nodeguard.conntrack.plugins.plugin_utils import _audit_checks as checks
from ansible_collections.nodeguard.conntrack.plugins.plugin_utils import _audit_eval as ev
from ansible_collections.nodeguard.conntrack.plugins.plugin_utils import _sizing

COUNTERS = dict((name, 0) for name in ev.COUNTER_NAMES)


def facts(count=100, max_entries=262144, buckets=262144, counters=None, inode=4026532390, **extra):
    data = {
        "available": True,
        "limits": {"max": max_entries, "count": count,
                   "usage_pct": round(count * 100.0 / max_entries, 2) if max_entries else None,
                   "buckets": buckets, "hashsize": buckets, "expect_max": 4096},
        "counters": dict(COUNTERS, **(counters or {})),
        "counters_source": "netlink",
        "environment": {"kernel_release": "6.1.0-27-amd64", "container": "podman", "init_netns": False,
                        "netns_inode": inode, "iptables_backend": "nft", "readonly_knobs": ["count", "max", "buckets"],
                        "writable_knobs": ["udp_timeout"]},
        "notes": [],
    }
    data.update(extra)
    return data


def collected(host="web-1", **kwargs):
    return {"host": host, "facts": facts(**kwargs), "firewall": None, "states": None, "nat": None}


def state(result):
    return ev.state_record(result)


@pytest.mark.parametrize("count, level", [
    (0, "ok"), (196607, "ok"), (196608, "warning"), (235929, "warning"), (235930, "critical"), (262144, "critical"),
])
def test_usage_thresholds_at_the_edges(count, level):
    # 75 % of 262144 = 196608 entries, 90 % = 235929.6
    result = ev.evaluate(collected(count=count), now=1000)
    assert result["usage"]["level"] == level
    assert result["status"] == level
    assert ("NGCA001" in [f["id"] for f in result["findings"]]) == (level != "ok")


def test_custom_thresholds_and_unlimited_max():
    assert ev.evaluate(collected(count=50, max_entries=100), {"warning_pct": 40, "critical_pct": 60}, now=1)["status"] \
        == "warning"
    unlimited = ev.evaluate(collected(count=10 ** 6, max_entries=0), now=1)
    assert unlimited["usage"]["usage_pct"] is None and unlimited["status"] == "ok"


@pytest.mark.parametrize("options, field", [
    ({"warning_pct": 0}, "warning_pct"),
    ({"warning_pct": "75"}, "warning_pct"),
    ({"critical_pct": 101}, "critical_pct"),
    ({"warning_pct": 90, "critical_pct": 80}, "critical_pct"),
    ({"counter_rise": {"drop": "fatal"}}, "counter_rise.drop"),
    ({"counter_rise": {"dropped": "critical"}}, "counter_rise.dropped"),
    ({"firewall_severity": {"urgent": "critical"}}, "firewall_severity.urgent"),
    ({"max_chain_ratio": -1}, "max_chain_ratio"),
    ({"sizing": {"peak_flows": 10, "cpus": 1, "memory_mb": 1024, "colour": 1}}, "sizing.colour"),
    ({"sizing": {"peak_flows": -10, "cpus": 1, "memory_mb": 1024}}, "sizing.peak_flows"),
    ({"bogus": 1}, "bogus"),
])
def test_bad_options_name_the_field(options, field):
    with pytest.raises(ev.AuditError) as info:
        ev.evaluate(collected(), options, now=1)
    assert info.value.field == field


@pytest.mark.parametrize("bad, field", [
    ("nope", "collected"), ({"facts": {}}, "collected.host"), ({"host": "h", "facts": None}, "collected.facts"),
])
def test_bad_collected_input(bad, field):
    with pytest.raises(ev.AuditError) as info:
        ev.evaluate(bad, now=1)
    assert info.value.field == field


def test_first_run_is_a_baseline_then_rises_are_findings():
    first = ev.evaluate(collected(counters={"drop": 5, "insert_failed": 2}), now=1000)
    assert first["deltas"]["baseline"] is True and first["rising"] == []
    assert first["status"] == "ok"
    # the since-boot totals are reported as information, not hidden
    assert [f["id"] for f in first["findings"]] == ["NGCA008"] and first["findings"][0]["severity"] == "info"
    assert "drop 5" in first["findings"][0]["detail"]
    second = ev.evaluate(collected(counters={"drop": 9, "insert_failed": 2, "early_drop": 3, "chaintoolong": 1,
                                             "invalid": 50}), previous=state(first), now=1060)
    deltas = second["deltas"]
    assert deltas["baseline"] is False and deltas["reset"] is False
    assert deltas["elapsed_seconds"] == 60 and deltas["since"] == "1970-01-01T00:16:40Z"
    assert deltas["counters"]["drop"] == {"previous": 5, "current": 9, "delta": 4, "rate_per_second": 0.0666667}
    assert deltas["counters"]["insert_failed"]["delta"] == 0
    assert second["rising"] == ["invalid", "drop", "early_drop", "chaintoolong"]  # invalid is watched by default
    assert second["drop_cause"] == "table_full"  # drop without insert_failed
    by_counter = dict((f["counter"], f) for f in second["findings"] if f["id"] == "NGCA002")
    assert by_counter["drop"]["severity"] == "critical" and by_counter["drop"]["delta"] == 4
    assert by_counter["early_drop"]["severity"] == "warning"
    assert second["status"] == "critical"


def test_counter_rise_severity_is_configurable_and_ok_means_recorded_only():
    first = ev.evaluate(collected(counters={"drop": 0}), now=1)
    second = ev.evaluate(collected(counters={"drop": 3, "invalid": 7}), {"counter_rise": {"drop": "ok", "invalid": "warning"}},
                         previous=state(first), now=2)
    assert second["rising"] == ["invalid", "drop"] or sorted(second["rising"]) == ["drop", "invalid"]
    assert [f["counter"] for f in second["findings"] if f["id"] == "NGCA002"] == ["invalid"]
    assert second["status"] == "warning"


@pytest.mark.parametrize("change", ["counter_went_down", "new_netns"])
def test_reset_is_not_a_rise(change):
    first = ev.evaluate(collected(counters={"drop": 100}), now=1)
    if change == "counter_went_down":
        second = ev.evaluate(collected(counters={"drop": 3}), previous=state(first), now=2)
    else:
        second = ev.evaluate(collected(counters={"drop": 500}, inode=1234), previous=state(first), now=2)
    assert second["deltas"]["reset"] is True
    assert all(c["delta"] is None for c in second["deltas"]["counters"].values())
    assert second["rising"] == [] and second["status"] == "ok"


def test_missing_counters_are_a_finding_not_a_crash():
    data = collected()
    data["facts"]["counters"] = None
    data["facts"]["notes"] = ["netlink: EPERM"]
    result = ev.evaluate(data, now=1)
    assert _ids(result) == ["NGCA005"] and "EPERM" in result["findings"][0]["detail"]
    assert result["deltas"]["baseline"] is True
    unavailable = ev.evaluate({"host": "h", "facts": {"available": False}}, now=1)
    assert unavailable["available"] is False and _ids(unavailable) == ["NGCA005"]


def _ids(result):
    return [f["id"] for f in result["findings"]]


def test_sizing_uses_the_tuning_rules():
    spec = {"peak_flows": 150000, "headroom": 1.5, "memory_mb": 16384, "cpus": 4}
    result = ev.evaluate(collected(), {"sizing": spec}, now=1)
    planned = _sizing.size(spec)
    sizing = result["sizing"]
    assert sizing["demand"] == planned["demand"] == 150000
    assert sizing["needed_max"] == 225000 and sizing["recommended_max"] == planned["settings"]["max"]
    assert sizing["recommended_buckets"] == planned["settings"]["buckets"]
    assert sizing["verdict"] == "sufficient" and result["status"] == "ok"


@pytest.mark.parametrize("peak, verdict, level", [
    (174762, "sufficient", "ok"),        # 174762 x 1.5 = 262143 <= 262144
    (174763, "below_headroom", "warning"),
    (262144, "below_headroom", "warning"),
    (262145, "below_peak", "critical"),
])
def test_sizing_verdicts_at_the_edges(peak, verdict, level):
    result = ev.evaluate(collected(), {"sizing": {"peak_flows": peak, "memory_mb": 65536, "cpus": 8}}, now=1)
    assert result["sizing"]["verdict"] == verdict and result["sizing"]["level"] == level
    ids = _ids(result)
    assert ("NGCA003" in ids) == (level != "ok")
    if level != "ok":
        finding = [f for f in result["findings"] if f["id"] == "NGCA003"][0]
        # max is read-only in this netns: the fix says where to raise it
        assert "host-scope" in finding["fix"]


def test_sizing_from_rate_and_lifetime_and_no_declaration():
    result = ev.evaluate(collected(max_entries=100000, buckets=65536),
                         {"sizing": {"new_flows_per_second": 1000, "avg_flow_lifetime": 120, "memory_mb": 8192, "cpus": 2}},
                         now=1)
    assert result["sizing"]["demand"] == 120000 and result["sizing"]["verdict"] == "below_peak"
    assert ev.evaluate(collected(), {"sizing": {"peak_flows": None, "memory_mb": 1, "cpus": 1}}, now=1)["sizing"] is None


def test_long_hash_chains():
    result = ev.evaluate(collected(max_entries=1048576, buckets=65536), now=1)
    assert "NGCA004" in _ids(result) and result["status"] == "critical"
    assert result["chains"]["nodes_per_bucket"] == 32.0


def _with_kernel(release, **kwargs):
    data = collected(**kwargs)
    data["facts"]["environment"]["kernel_release"] = release
    return data


@pytest.mark.parametrize("release, max_entries, buckets, fires", [
    # the old threshold (max / buckets > 8) let ratio 4 pass: 8 nodes per bucket drop ~9 % of inserts on 5.15-6.2
    ("6.1.0-27-amd64", 262144, 65536, True),
    ("6.1.0-27-amd64", 524288, 65536, True),   # ratio 8: was silent
    ("6.1.0-27-amd64", 262144, 262144, False),  # the kernel's own default
    ("6.8.0-45-generic", 262144, 65536, False),  # 50-79 since 6.3: ratio 4 is safe
    ("6.8.0-45-generic", 1048576, 65536, True),  # ratio 16
    ("5.10.0-28-amd64", 262144, 65536, False),   # no limit before 5.15, ratio below max_chain_ratio
])
def test_chain_finding_follows_the_kernel(release, max_entries, buckets, fires):
    result = ev.evaluate(_with_kernel(release, max_entries=max_entries, buckets=buckets), now=1)
    assert ("NGCA004" in _ids(result)) == fires
    if fires:
        finding = [f for f in result["findings"] if f["id"] == "NGCA004"][0]
        assert "drop" in finding["detail"] and "hashed twice" in finding["detail"]


def test_chaintoolong_meaning_says_packets_drop():
    assert "dropped" in checks.COUNTER_MEANING["chaintoolong"]


def test_sizing_recommendation_never_below_kernel_default():
    # a 2 GB VM with a 5k peak: the audit must not recommend 7,500 (below the kernel's 65,536)
    data = _with_kernel("6.1.0-27-amd64", max_entries=4096, buckets=4096)
    result = ev.evaluate(data, {"sizing": {"peak_flows": 5000, "memory_mb": 1900, "cpus": 2}}, now=1)
    assert result["sizing"]["recommended_max"] == 65536 and result["sizing"]["recommended_buckets"] == 65536


def test_table_full_events():
    events = {"readable": True, "table_full_this_netns": 3, "window_seconds": 600}
    result = ev.evaluate({"host": "h", "facts": facts(events=events)}, now=1)
    assert _ids(result) == ["NGCA006"] and result["status"] == "critical"
    unreadable = ev.evaluate({"host": "h", "facts": facts(events={"readable": False, "reason": "no /dev/kmsg"})}, now=1)
    assert unreadable["findings"] == []


FIREWALL = {
    "findings": [
        {"id": "NGCT001", "severity": "high", "title": "NEW accepted with no ESTABLISHED,RELATED accept before it",
         "family": "ipv4", "backend": "nft", "table": "filter", "chain": "INPUT", "position": 1,
         "rule": "-A INPUT -p tcp -m tcp --dport 80 -m conntrack --ctstate NEW -j ACCEPT", "detail": "d1", "fix": "f1",
         "affects": "ipv4 INPUT replies to connections of this host: dropped"},
        {"id": "NGCT002", "severity": "low", "title": "t2", "family": "ipv6", "backend": "nft", "table": "filter",
         "chain": "INPUT", "position": 2, "rule": "-A INPUT -j LOG", "detail": "d2", "fix": "f2"},
        {"id": "NGCT005", "severity": "info", "title": "t5", "detail": "d5", "fix": "f5"},
    ],
    "summary": {"info": 1, "low": 1, "medium": 0, "high": 1}, "sources": ["/usr/sbin/iptables-nft-save"], "skipped": [],
}


def test_rule_findings_keep_their_ids_and_map_severity():
    data = collected()
    data["firewall"] = copy.deepcopy(FIREWALL)
    result = ev.evaluate(data, now=1)
    assert [(f["id"], f["severity"], f["original_severity"]) for f in result["findings"]] == [
        ("NGCT001", "critical", "high"), ("NGCT002", "warning", "low"), ("NGCT005", "info", "info")]
    assert result["findings"][0]["rule"].startswith("-A INPUT -p tcp")
    # which packets a rule finding affects reaches the fleet report; a finding without it has no such key
    assert result["findings"][0]["affects"] == "ipv4 INPUT replies to connections of this host: dropped"
    assert "affects" not in result["findings"][1]
    assert result["status"] == "critical" and result["firewall"]["audited"] is True
    relaxed = ev.evaluate(data, {"firewall_severity": {"high": "warning", "low": "ok"}}, now=1)
    assert [f["severity"] for f in relaxed["findings"]] == ["warning", "info", "info"]
    assert relaxed["status"] == "warning"


def test_states_and_nat_are_normalised():
    data = collected()
    data["states"] = [{"key": {"proto": "udp", "state": None}, "count": 7},
                      {"key": {"proto": "tcp", "state": "ESTABLISHED"}, "count": 9}, {"junk": 1}]
    data["nat"] = {"dnat": 4, "snat": "x"}
    result = ev.evaluate(data, now=1)
    assert result["states"] == [{"proto": "tcp", "state": "ESTABLISHED", "count": 9},
                                {"proto": "udp", "state": "none", "count": 7}]
    assert result["nat"] == {"dnat": 4, "snat": None}


def test_fleet_summary_order_and_gate():
    ok = ev.evaluate(collected("b-ok"), now=1)
    warn = ev.evaluate(collected("a-warn", count=200000), now=1)
    crit_data = collected("c-crit")
    crit_data["firewall"] = copy.deepcopy(FIREWALL)
    crit = ev.evaluate(crit_data, now=1)
    report = ev.fleet([ok, warn, crit], now=5, fail_on="critical")
    assert [h["host"] for h in report["hosts"]] == ["c-crit", "a-warn", "b-ok"]
    summary = report["summary"]
    assert (summary["ok"], summary["warning"], summary["critical"], summary["status"]) == (1, 1, 1, "critical")
    assert summary["near_full"] == ["a-warn"] and summary["rule_findings"] == ["c-crit"]
    assert summary["findings_by_id"] == {"NGCA001": 1, "NGCT001": 1, "NGCT002": 1, "NGCT005": 1}
    assert report["gate_failed"] is True and report["schema_version"] == ev.SCHEMA_VERSION
    assert ev.fleet([ok, warn], now=5, fail_on="critical")["gate_failed"] is False
    assert ev.fleet([ok, warn], now=5, fail_on="warning")["gate_failed"] is True
    missing = ev.fleet([ok], missing=["gone", "b-ok"], now=5)
    assert missing["missing_hosts"] == ["gone"] and missing["summary"]["status"] == "critical"


@pytest.mark.parametrize("args, field", [
    (({"host": "x"},), "results"), (([{"host": "x", "status": "bad"}],), "results[0]"),
])
def test_fleet_bad_input(args, field):
    with pytest.raises(ev.AuditError) as info:
        ev.fleet(*args)
    assert info.value.field == field
    with pytest.raises(ev.AuditError) as info:
        ev.fleet([], fail_on="sometimes")
    assert info.value.field == "fail_on"


@settings(max_examples=200, deadline=None)
@given(before=st.dictionaries(st.sampled_from(ev.COUNTER_NAMES), st.integers(0, 2 ** 40)),
       after=st.dictionaries(st.sampled_from(ev.COUNTER_NAMES), st.integers(0, 2 ** 40)))
def test_deltas_are_never_negative_and_add_up(before, after):
    previous = {"epoch": 1, "netns_inode": 1, "counters": dict(COUNTERS, **before)}
    current = dict(COUNTERS, **after)
    deltas = ev.counter_deltas(current, previous, 2, netns_inode=1)
    went_down = any(current[n] < previous["counters"][n] for n in ev.COUNTER_NAMES)
    assert deltas["reset"] is went_down
    for name, entry in deltas["counters"].items():
        if went_down:
            assert entry["delta"] is None
        else:
            assert entry["delta"] >= 0 and entry["previous"] + entry["delta"] == entry["current"]


NATIVE = [{"family": "ip", "name": "filter", "owner": "iptables-nft", "iptables_view": True, "rules": 3},
          {"family": "inet", "name": "firewalld", "owner": "firewalld", "iptables_view": False, "rules": 92}]


def _with_tables(tables, reason=None):
    data = collected()
    data["facts"]["environment"].update(nft_tables=tables, nft_tables_reason=reason)
    return data


def test_native_nft_tables_not_audited_are_never_a_clean_bill():
    result = ev.evaluate(_with_tables(NATIVE), now=1)
    assert [f["id"] for f in result["findings"]] == ["NGCA007"]
    assert "inet firewalld (firewalld)" in result["findings"][0]["detail"] and result["status"] == "warning"
    assert result["environment"]["nft_tables"][1] == NATIVE[1]
    # only iptables-nft's tables: the iptables audit read them all
    assert ev.evaluate(_with_tables(NATIVE[:1]), now=1)["findings"] == []
    unreadable = ev.evaluate(_with_tables(None, "nft -j list ruleset failed (rc=1): Operation not permitted"), now=1)
    assert [f["id"] for f in unreadable["findings"]] == ["NGCA007"]
    assert ev.evaluate(_with_tables(None, "nft not found"), now=1)["findings"] == []


def test_nftables_audit_findings_are_merged():
    data = _with_tables(NATIVE)
    data["nftables"] = {"findings": [{"id": "NGNF001", "severity": "high", "title": "t", "detail": "d", "fix": "f",
                                      "family": "inet", "table": "filter", "chain": "input", "position": 2,
                                      "rule": "udp dport 53 accept"}],
                        "summary": {"high": 1}, "source": "/usr/sbin/nft -j list ruleset", "skipped": ""}
    result = ev.evaluate(data, now=1)
    assert [(f["id"], f["source"], f["severity"]) for f in result["findings"]] == [("NGNF001", "nftables", "critical")]
    assert result["firewall"]["nftables_audited"] is True
    assert result["firewall"]["sources"] == ["/usr/sbin/nft -j list ruleset"]
    assert ev.fleet([result], now=2)["summary"]["rule_findings"] == ["web-1"]


# ---- issue 13, defect 5: counters graded on their rate, clash told from table full, since-boot totals ------------

def _two_audits(before, after, seconds, options=None, **kwargs):
    first = ev.evaluate(collected(counters=before, **kwargs), options, now=1000)
    return ev.evaluate(collected(counters=after, **kwargs), options, previous=state(first), now=1000 + seconds)


def _ngca002(result, counter):
    return [f for f in result["findings"] if f["id"] == "NGCA002" and f["counter"] == counter][0]


def test_one_drop_a_minute_is_critical_one_a_day_a_warning():
    minute = _two_audits({"drop": 0}, {"drop": 1}, 60)
    day = _two_audits({"drop": 0}, {"drop": 1}, 86400)
    assert _ngca002(minute, "drop")["severity"] == "critical"
    assert _ngca002(day, "drop")["severity"] == "warning"   # was critical too: the interval was ignored
    assert day["deltas"]["counters"]["drop"]["rate_per_second"] == pytest.approx(1 / 86400.0, rel=1e-3)
    assert "/s over 86,400 s" in _ngca002(day, "drop")["detail"]


def test_rate_thresholds_are_configurable_and_capped_by_counter_rise():
    opts = {"counter_rate": {"drop": [0.5, 2]}, "counter_rise": {"drop": "warning"}}
    assert not [f for f in _two_audits({"drop": 0}, {"drop": 10}, 60, opts)["findings"] if f["id"] == "NGCA002"]
    fast = _two_audits({"drop": 0}, {"drop": 600}, 60, opts)
    assert _ngca002(fast, "drop")["severity"] == "warning"  # 10/s, but counter_rise caps it at warning


@pytest.mark.parametrize("options, field", [
    ({"counter_rate": {"drop": [2, 1]}}, "counter_rate.drop"),
    ({"counter_rate": {"bogus": [0, 1]}}, "counter_rate.bogus"),
    ({"counter_rate": {"drop": "fast"}}, "counter_rate.drop"),
    ({"counter_rate": [1]}, "counter_rate"),
])
def test_bad_rate_options(options, field):
    with pytest.raises(ev.AuditError) as info:
        ev.evaluate(collected(), options, now=1)
    assert info.value.field == field


def test_clash_told_apart_from_table_full():
    clash = _two_audits({"drop": 0, "insert_failed": 0}, {"drop": 40, "insert_failed": 40}, 60, count=100)
    assert clash["drop_cause"] == "clash"
    detail = _ngca002(clash, "drop")["detail"]
    assert "insert clash" in detail and "not a full table" in detail
    assert "raising max does not help" in _ngca002(clash, "drop")["fix"]
    full = _two_audits({"drop": 0}, {"drop": 40}, 60, count=100)
    assert full["drop_cause"] == "table_full" and "table was full" in _ngca002(full, "drop")["detail"]
    # at a full table the same pair is not called a race
    busy = _two_audits({"drop": 0, "insert_failed": 0}, {"drop": 40, "insert_failed": 40}, 60, count=262000)
    assert busy["drop_cause"] == "table_full"


def test_invalid_is_watched_by_default():
    assert "invalid" in ev.DEFAULT_COUNTER_RISE
    result = _two_audits({"invalid": 0}, {"invalid": 6000}, 60)
    finding = _ngca002(result, "invalid")
    assert finding["severity"] == "warning" and "asymmetric" in finding["detail"]
    quiet = _two_audits({"invalid": 0}, {"invalid": 30}, 60)  # 0.5/s: normal background
    assert not [f for f in quiet["findings"] if f["id"] == "NGCA002"]
