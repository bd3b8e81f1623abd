"""conntrack_tune inside a child network namespace (what a container sees): per-netns knobs for real,
host-scope knobs read-only and handled by readonly_policy, and the check/run/check/run pattern."""
import os

from tune_helpers import file_args, knob


def _warning_text(warning):
    # ansible-core 2.19 returns structured warnings ({"event": {"msg": ...}}) from a bare module run
    if isinstance(warning, dict):
        return warning.get("event", {}).get("msg", "")
    return warning


def _ns_knob(ns, short):
    return int(ns.run(["cat", "/proc/sys/net/netfilter/nf_conntrack_" + short]).stdout)


def test_per_netns_knobs_four_runs(lab, tmp_path):
    ns = lab.add("tune")
    host_udp, host_est = knob("udp_timeout"), knob("tcp_timeout_established")
    args = dict(file_args(tmp_path), knobs={"udp_timeout": 61, "udp_timeout_stream": 181,
                                            "tcp_timeout_established": 7200, "tcp_be_liberal": 1})
    results = [ns.run_module("conntrack_tune", args, check_mode=check, diff=True) for check in (True, False, True, False)]
    assert [r["_rc"] for r in results] == [0, 0, 0, 0], results
    assert [r["changed"] for r in results] == [True, True, False, False]
    assert _ns_knob(ns, "udp_timeout") == 61
    assert _ns_knob(ns, "udp_timeout_stream") == 181
    assert _ns_knob(ns, "tcp_timeout_established") == 7200
    assert _ns_knob(ns, "tcp_be_liberal") == 1
    # per netns: the init netns did not move
    assert (knob("udp_timeout"), knob("tcp_timeout_established")) == (host_udp, host_est)
    assert results[0]["diff"][0]["after"].count("\n") == 4
    assert results[1]["environment"]["init_netns"] is False


def test_readonly_max_skip_is_reported_not_applicable(lab, tmp_path):
    ns = lab.add("ro")
    host_max = knob("max")
    args = dict(file_args(tmp_path), knobs={"max": host_max + 1000, "udp_timeout": 62})
    result = ns.run_module("conntrack_tune", args)
    assert result["_rc"] == 0, result
    assert result["knobs"]["max"]["status"] == "skipped"
    assert result["knobs"]["max"]["reason"].startswith("not applicable")
    assert result["skipped_knobs"] == ["max"]
    assert not result.get("warnings")
    assert _ns_knob(ns, "udp_timeout") == 62
    assert knob("max") == host_max
    with open(args["sysctl_file"]) as handle:
        assert "-net.netfilter.nf_conntrack_max = %d\n" % (host_max + 1000) in handle.read()
    # idempotent although max stays different
    assert ns.run_module("conntrack_tune", args)["changed"] is False


def test_readonly_policy_warn(lab, tmp_path):
    ns = lab.add("warn")
    args = dict(file_args(tmp_path), knobs={"max": knob("max") + 1000}, readonly_policy="warn")
    result = ns.run_module("conntrack_tune", args)
    assert result["_rc"] == 0, result
    texts = [_warning_text(w) for w in result.get("warnings", [])]
    assert any("max" in w and "not applicable" in w for w in texts), result.get("warnings")


def test_readonly_policy_fail_writes_nothing(lab, tmp_path):
    ns = lab.add("fail")
    before = _ns_knob(ns, "udp_timeout")
    args = dict(file_args(tmp_path), knobs={"max": knob("max") + 1000, "udp_timeout": before + 7}, readonly_policy="fail")
    result = ns.run_module("conntrack_tune", args)
    assert result["_rc"] != 0 and result["failed"] is True
    assert "max" in result["msg"]
    assert _ns_knob(ns, "udp_timeout") == before
    assert not os.listdir(str(tmp_path))


def test_unreadable_file_path_fails_cleanly(lab, tmp_path):
    ns = lab.add("dir")
    args = dict(file_args(tmp_path), knobs={"udp_timeout": 63})
    os.makedirs(args["sysctl_file"])  # a directory where the file should be
    result = ns.run_module("conntrack_tune", args)
    assert result["_rc"] != 0 and result["failed"] is True
    assert result["field"] == "sysctl_file" and "Traceback" not in result.get("module_stderr", "")
    assert _ns_knob(ns, "udp_timeout") != 63, "nothing is applied when a file cannot be read"
