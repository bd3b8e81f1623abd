"""conntrack_tune on the test machine's init netns: host-scope knobs for real, always under host_knobs
(every net.netfilter knob and hashsize snapshotted first and restored after, pass or fail). Persisted
files go to a temporary directory, never to the machine's /etc."""
import os
import stat

from netns_lab import MODULES_DIR, run
from tune_helpers import (
    conntrack_is_loadable_module,
    file_args,
    hashsize,
    knob,
    run_module_here,
    set_knob,
    udev_run_argv,
)


def _targets():
    """Values that differ from the live ones (buckets deliberately not a multiple of 512)."""
    buckets = 131072 if knob("buckets") != 131072 else 65536
    return {
        "max": knob("max") + 12345,
        "buckets": buckets - 72,
        "tcp_timeout_established": 86400 if knob("tcp_timeout_established") != 86400 else 86399,
        "net.netfilter.nf_conntrack_udp_timeout": 47 if knob("udp_timeout") != 47 else 48,
    }, buckets


def test_four_runs_apply_max_buckets_timeouts(host_knobs, tmp_path):
    knobs, rounded_buckets = _targets()
    args = dict(file_args(tmp_path), knobs=knobs, autoload="always")
    before = {name: knob(name) for name in ("max", "buckets", "tcp_timeout_established", "udp_timeout")}

    check1 = run_module_here("conntrack_tune", args, check_mode=True, diff=True)
    assert check1["_rc"] == 0, check1
    assert check1["changed"] is True
    assert {name: knob(name) for name in before} == before, "check mode wrote a knob"
    assert not os.path.exists(args["sysctl_file"]), "check mode wrote a file"
    assert check1["knobs"]["buckets"]["after"] == rounded_buckets
    assert "net.netfilter.nf_conntrack_max = %d" % knobs["max"] in check1["diff"][0]["after"]

    run1 = run_module_here("conntrack_tune", args, diff=True)
    assert run1["_rc"] == 0, run1
    assert run1["changed"] is True
    assert knob("max") == knobs["max"]
    assert knob("buckets") == rounded_buckets
    assert hashsize() == rounded_buckets, "hashsize must move with buckets"
    assert knob("tcp_timeout_established") == knobs["tcp_timeout_established"]
    assert knob("udp_timeout") == knobs["net.netfilter.nf_conntrack_udp_timeout"]
    assert run1["knobs"]["buckets"]["after"] == rounded_buckets
    assert run1["environment"]["init_netns"] is True
    mode = os.stat(args["sysctl_file"]).st_mode
    assert stat.S_IMODE(mode) == 0o644
    with open(args["sysctl_file"]) as handle:
        text = handle.read()
    assert text.startswith("# Managed by Ansible (nodeguard.conntrack.conntrack_tune)")
    assert "net.netfilter.nf_conntrack_buckets = %d\n" % rounded_buckets in text
    assert "net.netfilter.nf_conntrack_max = %d\n" % knobs["max"] in text

    # a second oracle: issue 3's conntrack_facts, when it is in the tree
    if os.path.exists(os.path.join(MODULES_DIR, "conntrack_facts.py")):
        facts = run_module_here("conntrack_facts", {"gather_subset": ["limits", "timeouts"]})
        assert facts["_rc"] == 0, facts
        ct = facts["ansible_facts"]["conntrack"]
        assert ct["limits"]["max"] == knobs["max"]
        assert ct["limits"]["buckets"] == rounded_buckets
        assert ct["limits"]["hashsize"] in (None, rounded_buckets)
        assert ct["timeouts"]["tcp_timeout_established"] == knobs["tcp_timeout_established"]
        assert ct["timeouts"]["udp_timeout"] == knobs["net.netfilter.nf_conntrack_udp_timeout"]

    check2 = run_module_here("conntrack_tune", args, check_mode=True, diff=True)
    assert check2["_rc"] == 0 and check2["changed"] is False, check2
    run2 = run_module_here("conntrack_tune", args)
    assert run2["_rc"] == 0 and run2["changed"] is False, run2
    assert set(k["status"] for k in run2["knobs"].values()) == {"unchanged"}


def test_persisted_files_restore_values_after_reset(host_knobs, tmp_path):
    knobs, rounded_buckets = _targets()
    args = dict(file_args(tmp_path), knobs=knobs, autoload="always")
    result = run_module_here("conntrack_tune", args)
    assert result["_rc"] == 0 and result["changed"], result
    wanted = {"max": knobs["max"], "buckets": rounded_buckets,
              "tcp_timeout_established": knobs["tcp_timeout_established"],
              "udp_timeout": knobs["net.netfilter.nf_conntrack_udp_timeout"]}

    def reset():
        # back to the values the machine had (its defaults) before the test
        for name in ("buckets", "max", "tcp_timeout_established", "udp_timeout"):
            path = "/proc/sys/net/netfilter/nf_conntrack_" + name
            set_knob(name, host_knobs[path])
        assert all(knob(name) != value for name, value in wanted.items())

    # 1. the sysctl.d file on its own (what systemd-sysctl / sysctl -p do at boot)
    reset()
    run(["sysctl", "-q", "-p", args["sysctl_file"]])
    assert {name: knob(name) for name in wanted} == wanted

    # 2. the udev rule's own command (what runs when nf_conntrack appears), parsed from the rule file
    reset()
    argv = udev_run_argv(args["udev_rule_file"])
    assert "--prefix=/net/netfilter" in argv
    run(argv)
    assert {name: knob(name) for name in wanted} == wanted

    # module files: listed for autoload; modprobe.d only where conntrack is a loadable module
    with open(args["modules_load_file"]) as handle:
        assert handle.read().splitlines()[-1] == result["environment"]["module_name"]
    if conntrack_is_loadable_module():
        with open(args["modprobe_file"]) as handle:
            assert handle.read().splitlines()[-1] == "options nf_conntrack hashsize=%d" % rounded_buckets
    else:
        assert result["environment"]["conntrack"] == "builtin"
        assert not os.path.exists(args["modprobe_file"]), "modprobe.d must not be written for a built-in conntrack"


def test_raise_only_leaves_a_higher_value(host_knobs, tmp_path):
    higher = knob("max") + 100000
    set_knob("max", higher)
    args = dict(file_args(tmp_path), knobs={"max": higher - 50000, "udp_timeout": 33}, raise_only=True)
    result = run_module_here("conntrack_tune", args)
    assert result["_rc"] == 0, result
    assert knob("max") == higher
    assert result["knobs"]["max"]["status"] == "unchanged"
    assert "raise_only" in result["knobs"]["max"]["reason"]
    assert knob("udp_timeout") == 33
    with open(args["sysctl_file"]) as handle:
        assert "net.netfilter.nf_conntrack_max = %d\n" % higher in handle.read()
    # without raise_only the same request lowers it
    result = run_module_here("conntrack_tune", dict(args, raise_only=False))
    assert result["_rc"] == 0 and result["changed"] is True
    assert knob("max") == higher - 50000


def test_kernel_refusal_fails_the_task(host_knobs, tmp_path):
    # expect_max has a minimum of 1 in the kernel: writing 0 is refused (EINVAL)
    before = knob("expect_max")
    result = run_module_here("conntrack_tune", dict(file_args(tmp_path), knobs={"expect_max": 0}))
    assert result["_rc"] != 0 and result.get("failed") is True, result
    assert "expect_max" in result["msg"]
    assert knob("expect_max") == before


def test_bad_input_touches_nothing(host_knobs, tmp_path):
    before_max = knob("max")
    args = dict(file_args(tmp_path), knobs={"max": before_max + 1, "../../../kernel/panic": 1})
    result = run_module_here("conntrack_tune", args)
    assert result["_rc"] != 0 and result["failed"] is True
    assert result["field"] == "knobs.../../../kernel/panic"
    assert knob("max") == before_max
    assert not os.listdir(str(tmp_path))


def test_absent_removes_only_the_collection_files(host_knobs, tmp_path):
    args = dict(file_args(tmp_path), knobs={"udp_timeout": 41}, autoload="always")
    assert run_module_here("conntrack_tune", args)["changed"] is True
    neighbour = os.path.join(os.path.dirname(args["sysctl_file"]), "10-someone-else.conf")
    with open(neighbour, "w") as handle:
        handle.write("net.netfilter.nf_conntrack_udp_timeout = 99\n")
    absent = dict(file_args(tmp_path), state="absent")
    check = run_module_here("conntrack_tune", absent, check_mode=True)
    assert check["changed"] is True and os.path.exists(args["sysctl_file"])
    result = run_module_here("conntrack_tune", absent)
    assert result["_rc"] == 0 and result["changed"] is True
    assert not os.path.exists(args["sysctl_file"]) and not os.path.exists(args["udev_rule_file"])
    assert os.path.exists(neighbour)
    assert knob("udp_timeout") == 41, "state=absent leaves live values alone"
    assert run_module_here("conntrack_tune", absent)["changed"] is False
