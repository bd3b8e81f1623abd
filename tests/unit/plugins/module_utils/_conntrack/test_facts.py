"""conntrack_facts backend: gather_subset resolution, limits, counters assembly, kernel-log events."""
import json
import os

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import facts
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import events
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import procfs

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "fixtures", "facts")
ALL = ["counters", "environment", "events", "limits", "owners", "settings", "timeouts"]


@pytest.mark.parametrize("requested, expected", [
    (None, ["counters", "environment", "limits", "owners", "settings", "timeouts"]),
    (["all", "!events"], ["counters", "environment", "limits", "owners", "settings", "timeouts"]),
    (["all"], ALL),
    ("all", ALL),
    (["!events"], ["counters", "environment", "limits", "owners", "settings", "timeouts"]),
    (["min"], ["limits"]),
    (["!all"], ["limits"]),
    (["!all", "!min"], []),
    (["counters"], ["counters", "limits"]),
    (["!min", "counters"], ["counters"]),
    (["events", "!limits"], ["events", "limits"]),  # min stays unless !min
    ([" timeouts "], ["limits", "timeouts"]),
])
def test_resolve_subsets(requested, expected):
    assert facts.resolve_subsets(requested) == expected


@pytest.mark.parametrize("bad", [["everything"], ["!"], ["counter"], [3]])
def test_resolve_subsets_names_the_option(bad):
    with pytest.raises(facts.FactsInputError, match="gather_subset"):
        facts.resolve_subsets(bad)


@pytest.mark.parametrize("count, maximum, pct", [(0, 262144, 0.0), (1843, 262144, 0.7), (50, 50, 100.0),
                                                 (10, 0, None), (None, 100, None), (5, None, None)])
def test_usage_pct(count, maximum, pct):
    assert facts.usage_pct(count, maximum) == pct


def test_build_limits():
    limits = facts.build_limits({"max": 1000, "count": 750, "buckets": 512, "expect_max": 8}, 512)
    assert limits == {"max": 1000, "count": 750, "usage_pct": 75.0, "buckets": 512, "hashsize": 512,
                      "expect_max": 8}
    assert facts.build_limits({}, None) == dict.fromkeys(
        ["max", "count", "usage_pct", "buckets", "hashsize", "expect_max"])


def test_setting_knobs_are_the_non_timeout_netns_knobs():
    assert "tcp_be_liberal" in facts.SETTING_KNOBS and "acct" in facts.SETTING_KNOBS
    assert not [k for k in facts.SETTING_KNOBS if "timeout" in k]
    assert "max" not in facts.SETTING_KNOBS and "count" not in facts.SETTING_KNOBS


def test_counters_from_proc_number_cpus_and_sum():
    with open(os.path.join(FIXTURES, "proc_stat_4.19.txt")) as handle:
        table = procfs.parse_stat_table(handle.read())
    summed, per_cpu = facts.build_counters_from_proc(table)
    assert [row["cpu"] for row in per_cpu] == [0, 1, 2, 3]
    assert summed["drop"] == 0x16 and summed["clash_resolve"] is None
    assert set(per_cpu[0]) == set(procfs.COUNTER_NAMES) | {"cpu"}


def test_read_timeouts_takes_every_timeout_file(tmp_path):
    for name, value in (("nf_conntrack_udp_timeout", "30"), ("nf_conntrack_dccp_timeout_open", "43200"),
                        ("nf_conntrack_max", "5"), ("nf_conntrack_frag6_timeout", "60")):
        (tmp_path / name).write_text(value + "\n")
    assert facts.read_timeouts(str(tmp_path)) == {"udp_timeout": 30, "dccp_timeout_open": 43200,
                                                  "frag6_timeout": 60}


def _kmsg_records():
    with open(os.path.join(FIXTURES, "kmsg_6.18.json")) as handle:
        return [events.parse_kmsg_record(r) for r in json.load(handle)["records"]]


def test_recorded_kmsg_table_full_counted_for_its_netns():
    records = _kmsg_records()
    now = max(usec for _s, usec, _m in records) + 5000000
    result = events.count_events(records, now, 3600, own_netns_inode=4026532315, init_netns=False)
    assert result["table_full"] == 1
    assert result["table_full_this_netns"] == 1
    assert result["table_full_by_netns"] == {"4026532315": 1}
    assert result["expectation_table_full"] == 0
    other = events.count_events(records, now, 3600, own_netns_inode=4026532999, init_netns=False)
    assert other["table_full"] == 1 and other["table_full_this_netns"] == 0


def test_kmsg_window_excludes_old_records():
    records = _kmsg_records()
    tf_usec = [usec for _s, usec, m in records if "table full" in m][0]
    assert events.count_events(records, tf_usec + 11000000, 10)["table_full"] == 0
    assert events.count_events(records, tf_usec + 9000000, 10)["table_full"] == 1


def test_kmsg_init_netns_and_expectation_lines():
    # message texts as printed by the kernel in the init netns / older kernels (nf_conntrack_core.c)
    records = [
        events.parse_kmsg_record("4,10,1000000,-;nf_conntrack: nf_conntrack: table full, dropping packet\n"),
        events.parse_kmsg_record("4,11,2000000,-;nf_conntrack: nf_conntrack: expectation table full\n"),
        events.parse_kmsg_record("4,12,3000000,-;net_ratelimit: 12 callbacks suppressed\n"),
    ]
    result = events.count_events(records, 4000000, 60, own_netns_inode=4026531833, init_netns=True)
    assert result["table_full"] == result["table_full_this_netns"] == 1
    assert result["table_full_by_netns"] == {"init": 1}
    assert result["expectation_table_full"] == 1
    assert result["last_table_full_seconds_ago"] == 3.0
    assert result["last_expectation_table_full_seconds_ago"] == 2.0


def test_kmsg_record_with_continuation_lines():
    seq, usec, msg = events.parse_kmsg_record(b"6,99,5,-;hello\n SUBSYSTEM=net\n DEVICE=n2\n")
    assert (seq, usec, msg) == (99, 5, "hello")


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=120), st.binary(max_size=120)))
def test_kmsg_garbage_gives_own_error_only(data):
    try:
        seq, usec, _msg = events.parse_kmsg_record(data)
    except events.KmsgParseError:
        return
    assert isinstance(seq, int) and isinstance(usec, int)


def test_read_kmsg_missing_device_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        events.read_kmsg(path=str(tmp_path / "kmsg"))


@pytest.fixture
def no_conntrack_host(tmp_path, monkeypatch):
    """Point every conntrack path at an empty directory: a kernel without nf_conntrack loaded."""
    from ansible_collections.nodeguard.conntrack.plugins.module_utils._host import environment as _ct_environment
    from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import knobs as _knobs
    empty = tmp_path / "netfilter"
    empty.mkdir()
    monkeypatch.setattr(_knobs, "PROC_SYS_DIR", str(empty))
    monkeypatch.setattr(_knobs, "HASHSIZE_PATH", str(tmp_path / "hashsize"))
    monkeypatch.setattr(procfs, "STAT_PATH", str(tmp_path / "nf_conntrack"))
    monkeypatch.setattr(_ct_environment, "SYS_MODULE_DIR", str(tmp_path / "nf_conntrack_module"))


def test_kernel_without_conntrack_is_reported_not_failed(no_conntrack_host):
    result, warnings = facts.gather(["counters", "environment", "limits", "settings", "timeouts"])
    assert result["available"] is False
    assert result["limits"] == dict.fromkeys(["max", "count", "usage_pct", "buckets", "hashsize", "expect_max"])
    assert result["timeouts"] == {} and result["settings"] == {}
    assert result["counters"] is None and result["counters_source"] is None
    assert result["environment"]["writable_knobs"] == [] and result["environment"]["readonly_knobs"] == []
    assert result["environment"]["conntrack"] in ("absent", "builtin", "loadable")  # from the modules lists
    assert any("not loaded" in note for note in result["notes"])
    assert warnings == []
