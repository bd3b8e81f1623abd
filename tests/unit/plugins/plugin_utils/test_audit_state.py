"""The audit state on the controller: every host read and written in one call, atomically, with private modes,
compatible with the files the 0.1.0 role wrote (copy of to_nice_json), nothing written in check mode."""
import json
import os
import stat

import pytest

from ansible_collections.nodeguard.conntrack.plugins.plugin_utils import _audit_state as S


def _result(host, drop=0):
    counters = dict((name, 0) for name in ("found", "invalid", "insert", "insert_failed", "drop", "early_drop",
                                           "error", "search_restart", "clash_resolve", "chaintoolong"))
    counters["drop"] = drop
    return {"host": host, "status": "ok", "collected_epoch": 1764750000.5, "collected_at": "2025-12-03T08:20:00Z",
            "environment": {"netns_inode": 4026531840}, "counters": counters}


def test_write_then_read_round_trip_with_private_modes(tmp_path):
    directory = str(tmp_path / "state")
    written = S.write_states(directory, [_result("web1", 3), _result("web2")])
    assert sorted(written) == [os.path.join(directory, "web1.json"), os.path.join(directory, "web2.json")]
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    assert all(stat.S_IMODE(os.stat(path).st_mode) == 0o600 for path in written)
    assert sorted(os.listdir(directory)) == ["web1.json", "web2.json"]  # no temporary file left
    previous, unreadable = S.read_states(directory, ["web1", "web2", "new-host"])
    assert unreadable == {} and sorted(previous) == ["web1", "web2"]
    assert previous["web1"] == {"schema_version": "1.0", "host": "web1", "epoch": 1764750000.5,
                                "collected_at": "2025-12-03T08:20:00Z", "netns_inode": 4026531840,
                                "counters": _result("web1", 3)["counters"]}


def test_same_content_is_not_rewritten_and_check_mode_writes_nothing(tmp_path):
    directory = str(tmp_path / "state")
    assert S.write_states(directory, [_result("web1")], check_mode=True) == [os.path.join(directory, "web1.json")]
    assert not os.path.exists(directory)
    S.write_states(directory, [_result("web1")])
    assert S.write_states(directory, [_result("web1")]) == []
    before = open(os.path.join(directory, "web1.json")).read()
    assert S.write_states(directory, [_result("web1", drop=5)], check_mode=True) == [os.path.join(directory, "web1.json")]
    assert open(os.path.join(directory, "web1.json")).read() == before


def test_reads_a_record_the_legacy_role_wrote(tmp_path):
    # ansible.builtin.copy of "{{ record | to_nice_json }}": indent 4, sorted keys, no trailing newline
    record = {"schema_version": "1.0", "host": "db1", "epoch": 1.0, "collected_at": "1970-01-01T00:00:01Z",
              "netns_inode": 1, "counters": {"drop": 1}}
    (tmp_path / "db1.json").write_text(json.dumps(record, indent=4, sort_keys=True))
    assert S.read_states(str(tmp_path), ["db1"]) == ({"db1": record}, {})


def test_damaged_records_are_reported_and_skipped(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    (tmp_path / "b.json").write_text("[1, 2]")
    previous, unreadable = S.read_states(str(tmp_path), ["a", "b"])
    assert previous == {} and sorted(unreadable) == ["a", "b"]
    assert "is not JSON" in unreadable["a"] and "does not hold a state record" in unreadable["b"]


@pytest.mark.parametrize("host", ["../etc/passwd", "a/b", "..", ".", "", None])
def test_host_names_that_leave_the_directory_are_refused(tmp_path, host):
    with pytest.raises(S.StateError, match="host"):
        S.read_states(str(tmp_path), [host])
    with pytest.raises(S.StateError):
        S.write_states(str(tmp_path / "s"), [_result(host)])
    assert not (tmp_path / "s").exists()


def test_bad_write_input_names_the_field(tmp_path):
    with pytest.raises(S.StateError, match="^write"):
        S.write_states(str(tmp_path), [{"host": "x"}])
    with pytest.raises(S.StateError, match="^write"):
        S.write_states(str(tmp_path), {"host": "x"})
    with pytest.raises(S.StateError, match="^path"):
        S.read_states("", ["x"])
