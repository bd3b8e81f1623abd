"""conntrack_facts and conntrack_tune ask the same host probe: on the same host (a child netns, and the init
netns in check mode) they agree on the init netns, conntrack's presence and which knobs can be written."""
from tune_helpers import file_args, knob, run_module_here

PROBE_KNOBS = ("max", "buckets", "expect_max", "udp_timeout", "tcp_timeout_established")


def _facts_env(result):
    assert result["_rc"] == 0, result
    return result["ansible_facts"]["conntrack"]["environment"]


def _tune_args(tmp_path):
    # one over-the-limit value per knob: check mode predicts a write where the probe says writable
    values = dict((short, knob(short) + 512) for short in PROBE_KNOBS)
    return dict(file_args(tmp_path), knobs=values)


def _agree(facts_env, tune):
    assert tune["_rc"] == 0, tune
    assert tune["environment"]["init_netns"] is facts_env["init_netns"]
    assert tune["environment"]["conntrack"] == facts_env["conntrack"]
    assert tune["environment"]["kernel_release"] == facts_env["kernel_release"]
    for short in PROBE_KNOBS:
        writable = short in facts_env["writable_knobs"]
        status = tune["knobs"][short]["status"]
        if short == "buckets" and not writable:
            # tune may resize buckets through the hashsize parameter (a knob facts reports on its own)
            writable = "hashsize" in facts_env["writable_knobs"]
        assert (status == "changed") is writable, (short, status, facts_env["writable_knobs"])
        assert (status == "skipped") is (not writable), (short, status, facts_env["readonly_knobs"])


def test_child_netns_facts_and_tune_agree(lab, tmp_path):
    ns = lab.add("probe")
    facts_env = _facts_env(ns.run_module("conntrack_facts", {"gather_subset": ["environment"]}))
    assert facts_env["init_netns"] is False
    assert {"max", "buckets", "expect_max", "hashsize"} <= set(facts_env["readonly_knobs"])
    tune = ns.run_module("conntrack_tune", _tune_args(tmp_path), check_mode=True)
    _agree(facts_env, tune)
    assert tune["skipped_knobs"] == ["buckets", "expect_max", "max"]


def test_init_netns_facts_and_tune_agree_check_mode(tmp_path):
    # check mode changes nothing: the init netns is only read
    facts_env = _facts_env(run_module_here("conntrack_facts", {"gather_subset": ["environment"]}))
    assert facts_env["init_netns"] is True
    tune = run_module_here("conntrack_tune", _tune_args(tmp_path), check_mode=True)
    _agree(facts_env, tune)
    assert tune["skipped_knobs"] == []
