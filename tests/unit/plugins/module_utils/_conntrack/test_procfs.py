"""/proc/net/stat/nf_conntrack and sysctl parsing, by header name, on recorded and format-rendered texts."""
import json
import os

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import procfs

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "fixtures", "facts")


def _text(name):
    with open(os.path.join(FIXTURES, name)) as handle:
        return handle.read()


def _conntrack_s(text):
    rows = []
    for line in text.splitlines():
        if line.startswith("cpu="):
            fields = dict(pair.split("=", 1) for pair in line.split())
            fields.pop("cpu")
            rows.append({k: int(v) for k, v in fields.items()})
    return rows


def test_6x_header_matches_conntrack_S_recorded_at_the_same_time():
    with open(os.path.join(FIXTURES, "netlink_6.18.json")) as handle:
        rec = json.load(handle)
    table = procfs.parse_stat_table(_text("proc_stat_6.18.txt"))
    assert table["entries"] == int(rec["conntrack_C"]) == 0x8C
    # conntrack -S (netlink) and /proc are two views of the same per-CPU counters
    assert table["per_cpu"] == _conntrack_s(rec["conntrack_S"])
    assert procfs.sum_counters(table["per_cpu"])["insert"] == 0x25 + 3


def test_4x_header_by_name_skips_old_columns_and_marks_missing_counters():
    table = procfs.parse_stat_table(_text("proc_stat_4.19.txt"))
    assert table["entries"] == 0x1F4  # taken once, not summed over the 4 CPUs
    assert "searched" in table["columns"] and "delete_list" in table["columns"]
    totals = procfs.sum_counters(table["per_cpu"])
    assert totals == {"found": 0x2A + 0x11 + 0xFF, "invalid": 10, "insert": 2, "insert_failed": 1,
                      "drop": 0x16, "early_drop": 3, "error": 7, "search_restart": 6,
                      "clash_resolve": None, "chaintoolong": None}
    assert len(table["per_cpu"]) == 4


def test_310_header_without_search_restart():
    table = procfs.parse_stat_table(_text("proc_stat_3.10.txt"))
    totals = procfs.sum_counters(table["per_cpu"])
    assert totals["search_restart"] is None
    assert totals["found"] == 0x80 and totals["insert"] == 0x1F and totals["drop"] == 1
    assert table["entries"] == 1000


def test_columns_are_found_by_name_not_position():
    text = "found entries drop clashres\n00000001 00000009 00000002 00000003\n00000004 00000009 00000005 00000006\n"
    table = procfs.parse_stat_table(text)
    assert table["entries"] == 9
    totals = procfs.sum_counters(table["per_cpu"])
    assert (totals["found"], totals["drop"], totals["clash_resolve"]) == (5, 7, 9)


@pytest.mark.parametrize("text, fragment", [
    ("", "empty"),
    ("entries found\n", "without any CPU line"),
    ("found drop\n00000001 00000002\n", "unexpected header"),
    ("entries found\n00000001\n", "1 fields for 2 columns"),
    ("entries found\n00000001 zzzz\n", "not a hexadecimal"),
    ("entries entries\n00000001 00000001\n", "duplicate column"),
    ("entries Found!\n0 0\n", "unexpected header"),
])
def test_malformed_tables_give_parse_errors(text, fragment):
    with pytest.raises(procfs.ProcfsParseError, match=fragment):
        procfs.parse_stat_table(text)


@pytest.mark.parametrize("text, value", [("262144\n", 262144), ("0", 0), (" -1 \n", -1)])
def test_sysctl_int(text, value):
    assert procfs.parse_sysctl_int(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1 2", "0x10", "1.5", "\u0661\u0662"])
def test_sysctl_int_rejects(text):
    with pytest.raises(procfs.ProcfsParseError, match="nf_conntrack_max"):
        procfs.parse_sysctl_int(text, "net.netfilter.nf_conntrack_max")


def test_read_knobs_reads_a_directory_and_skips_missing(tmp_path):
    (tmp_path / "nf_conntrack_max").write_text("1024\n")
    (tmp_path / "nf_conntrack_udp_timeout").write_text("30\n")
    (tmp_path / "nf_conntrack_bogus").write_text("1\n")
    assert procfs.present_knobs(str(tmp_path)) == ["max", "udp_timeout"]
    assert procfs.read_knobs(["max", "udp_timeout", "buckets"], str(tmp_path)) == {"max": 1024, "udp_timeout": 30}


def test_read_stat_table_missing_file_is_none(tmp_path):
    assert procfs.read_stat_table(str(tmp_path / "absent")) is None


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_garbage_text_gives_own_error_only(text):
    try:
        result = procfs.parse_stat_table(text)
    except procfs.ProcfsParseError:
        return
    assert isinstance(result["entries"], int)


_HEADER = st.lists(st.sampled_from(["found", "invalid", "insert", "drop", "clashres", "chainlength", "searched",
                                    "icmp_error", "early_drop", "delete_list", "search_restart"]),
                   unique=True, max_size=8)


@settings(max_examples=300, deadline=None)
@given(_HEADER, st.lists(st.lists(st.integers(0, 0xFFFFFFFF), min_size=12, max_size=12), min_size=1, max_size=8),
       st.integers(0, 0xFFFFFFFF))
def test_well_formed_tables_sum_by_name(columns, rows, entries):
    header = ["entries"] + columns
    lines = [" ".join(header)]
    for row in rows:
        lines.append(" ".join("%08x" % v for v in [entries] + row[:len(columns)]))
    table = procfs.parse_stat_table("\n".join(lines) + "\n")
    assert table["entries"] == entries
    totals = procfs.sum_counters(table["per_cpu"])
    for index, column in enumerate(columns):
        name = procfs.PROC_COLUMN_ALIASES.get(column, column)
        if name in procfs.COUNTER_NAMES:
            assert totals[name] == sum(row[index] for row in rows)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_sysctl_garbage_gives_own_error_only(text):
    try:
        assert isinstance(procfs.parse_sysctl_int(text), int)
    except procfs.ProcfsParseError:
        pass
