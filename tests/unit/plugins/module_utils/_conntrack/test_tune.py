"""The conntrack_tune planner: pure decisions per knob, file contents, check/diff inputs."""
import pytest

from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import tune as _tune
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.tune import TuneError, normalize_knobs, plan

PATHS = dict(_tune.DEFAULT_PATHS)
POLICY = {"state": "present", "persist": True, "apply_live": True, "raise_only": False, "readonly_policy": "skip",
          "autoload": "auto", "mode": 0o644}


def _env(live, writable=None, init_netns=True, conntrack="builtin", release="6.1.0"):
    return {"init_netns": init_netns, "conntrack": conntrack, "kernel_release": release, "live": dict(live),
            "writable": writable if writable is not None else dict((k, True) for k in live),
            "systemd_sysctl": "/usr/lib/systemd/systemd-sysctl", "sysctl_bin": "/usr/sbin/sysctl"}


def _plan(live, desired, writable=None, files=None, init_netns=True, conntrack="builtin", release="6.1.0", **policy):
    pol = dict(POLICY, **policy)
    return plan(_env(live, writable, init_netns, conntrack, release), desired, pol, files or {}, PATHS)


def _by_name(result):
    return dict((k["name"], k) for k in result["knobs"])


def test_changes_only_what_differs_and_writes_buckets_last():
    result = _plan({"max": 262144, "buckets": 262144, "udp_timeout": 30},
                   {"max": 524288, "buckets": 262144, "udp_timeout": 30})
    knobs = _by_name(result)
    # buckets (a live rehash, global) last: a refused later write cannot leave the table resized (issue 13)
    assert [k["name"] for k in result["knobs"]] == ["udp_timeout", "max", "buckets"]
    assert knobs["max"]["status"] == "changed" and knobs["max"]["after"] == 524288
    assert knobs["buckets"]["status"] == "unchanged"
    assert knobs["udp_timeout"]["status"] == "unchanged"
    assert result["changed"] is True


def test_buckets_rounding_is_expected_not_a_change_twice():
    first = _by_name(_plan({"buckets": 262144}, {"buckets": 100000}))["buckets"]
    assert first["status"] == "changed" and first["after"] == 100352 and first["write"] == 100000
    again = _by_name(_plan({"buckets": 100352}, {"buckets": 100000}))["buckets"]
    assert again["status"] == "unchanged"


@pytest.mark.parametrize("short, desired, read, ok", [
    ("buckets", 100000, 100352, True),
    ("buckets", 100352, 100352, True),
    ("buckets", 100000, 99840, False),
    ("buckets", 100000, 262144, False),
    ("max", 300000, 300000, True),
    ("max", 300000, 262144, False),
    ("udp_timeout", 45, None, False),
])
def test_value_taken(short, desired, read, ok):
    assert _tune.value_taken(short, desired, read) is ok


def test_raise_only_keeps_higher_and_persists_it():
    result = _plan({"max": 1048576, "buckets": 262144, "expect_max": 4096, "tcp_timeout_established": 432000},
                   {"max": 524288, "buckets": 131072, "expect_max": 8192, "tcp_timeout_established": 86400},
                   raise_only=True)
    knobs = _by_name(result)
    assert knobs["max"]["status"] == "unchanged" and "raise_only" in knobs["max"]["reason"]
    assert knobs["buckets"]["status"] == "unchanged"
    assert knobs["expect_max"]["status"] == "changed"
    assert knobs["tcp_timeout_established"]["status"] == "changed"  # timeouts are exact
    sysctl = result["files"]["sysctl"]["after"]
    assert "net.netfilter.nf_conntrack_max = 1048576\n" in sysctl
    assert "net.netfilter.nf_conntrack_buckets = 262144\n" in sysctl


def test_raise_only_treats_unlimited_max_as_highest():
    knobs = _by_name(_plan({"max": 0}, {"max": 524288}, raise_only=True))
    assert knobs["max"]["status"] == "unchanged"
    assert _by_name(_plan({"max": 0}, {"max": 524288}))["max"]["status"] == "changed"


@pytest.mark.parametrize("policy, warnings, errors", [("skip", 0, 0), ("warn", 1, 0), ("fail", 0, 1)])
def test_readonly_policy_in_a_child_netns(policy, warnings, errors):
    result = _plan({"max": 262144, "udp_timeout": 30}, {"max": 300000, "udp_timeout": 60},
                   writable={"max": False, "udp_timeout": True}, init_netns=False, readonly_policy=policy)
    knobs = _by_name(result)
    assert knobs["max"]["status"] == "skipped"
    assert knobs["max"]["reason"].startswith("not applicable: host-scope knob")
    assert knobs["udp_timeout"]["status"] == "changed"
    assert len(result["warnings"]) == warnings and len(result["errors"]) == errors
    # persisted with the '-' prefix so a container boot does not log a failure for it
    assert "-net.netfilter.nf_conntrack_max = 300000\n" in result["files"]["sysctl"]["after"]


def test_readonly_knob_already_right_is_unchanged_not_skipped():
    knobs = _by_name(_plan({"max": 262144}, {"max": 262144}, writable={"max": False}, init_netns=False,
                           readonly_policy="fail"))
    assert knobs["max"]["status"] == "unchanged"


def test_missing_key_is_skipped_and_persisted():
    result = _plan({"max": None}, {"max": 300000}, writable={"max": False}, init_netns=None, conntrack="loadable")
    knobs = _by_name(result)
    assert knobs["max"]["status"] == "skipped" and "when nf_conntrack loads" in knobs["max"]["reason"]
    assert result["files"]["sysctl"]["action"] == "write"


def test_apply_live_false_persists_only():
    result = _plan({"udp_timeout": 30}, {"udp_timeout": 60}, apply_live=False)
    assert _by_name(result)["udp_timeout"]["status"] == "skipped"
    assert "net.netfilter.nf_conntrack_udp_timeout = 60\n" in result["files"]["sysctl"]["after"]


def test_builtin_conntrack_gets_no_module_files():
    result = _plan({"buckets": 262144}, {"buckets": 524288}, conntrack="builtin")
    assert result["files"]["modules_load"]["after"] is None
    assert result["files"]["udev_rule"]["after"] is None
    assert result["files"]["modprobe"]["after"] is None
    forced = _plan({"buckets": 262144}, {"buckets": 524288}, conntrack="builtin", autoload="always")
    assert forced["files"]["udev_rule"]["after"] is not None
    assert forced["files"]["modprobe"]["after"] is None  # never for a built-in conntrack


@pytest.mark.parametrize("release, name", [("4.18.0-553.el8_10.x86_64", "nf_conntrack_ipv4"),
                                           ("4.19.0-27-amd64", "nf_conntrack"), ("6.12.9", "nf_conntrack")])
def test_loadable_module_files(release, name):
    result = _plan({"buckets": 262144}, {"buckets": 524288}, conntrack="module", release=release)
    files = result["files"]
    assert files["modules_load"]["after"].endswith("\n%s\n" % name)
    assert files["modprobe"]["after"].endswith("options nf_conntrack hashsize=524288\n")
    rule = files["udev_rule"]["after"].splitlines()[-1]
    if release.startswith("6."):
        assert rule == ('ACTION=="add", SUBSYSTEM=="module", KERNEL=="nf_conntrack", '
                        'RUN+="/usr/lib/systemd/systemd-sysctl --prefix=/net/netfilter"')
    else:
        # before 5.11 the add event can precede the module's init: the rule waits for the keys first
        assert rule.startswith('ACTION=="add", SUBSYSTEM=="module", KERNEL=="nf_conntrack", RUN+="/bin/sh -c \'for n')
        assert "[ -e /proc/sys/net/netfilter/nf_conntrack_max ] && break" in rule
        assert rule.endswith("exec /usr/lib/systemd/systemd-sysctl --prefix=/net/netfilter'\"")
        assert "$" not in rule  # udev substitutes '$'


def test_udev_wait_only_before_5_11():
    assert _tune.udev_waits_for_keys("5.10.0-28-amd64") and _tune.udev_waits_for_keys("4.18.0")
    assert not _tune.udev_waits_for_keys("5.11.0") and not _tune.udev_waits_for_keys("6.1.0")


def test_udev_wait_loop_runs_in_a_shell(tmp_path):
    # the command part of the rule is a real sh program: it ends once the key exists and then runs the command
    import shlex
    import subprocess
    rule = _tune.render_udev_rule("/bin/echo reapplied", True).splitlines()[-1]
    command = rule.split('RUN+="', 1)[1][:-1]
    argv = shlex.split(command)
    assert argv[:2] == ["/bin/sh", "-c"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "reapplied"


def test_udev_command_names_a_file_outside_sysctl_dirs():
    assert _tune.udev_command("/tmp/x/a.conf", "/lib/systemd/systemd-sysctl", None) == \
        "/lib/systemd/systemd-sysctl --prefix=/net/netfilter /tmp/x/a.conf"
    assert _tune.udev_command("/etc/sysctl.d/a.conf", None, "/usr/sbin/sysctl") == "/usr/sbin/sysctl -q -p /etc/sysctl.d/a.conf"


def test_idempotent_when_files_match():
    first = _plan({"udp_timeout": 30}, {"udp_timeout": 60}, conntrack="module")
    files = dict((role, f["after"]) for role, f in first["files"].items())
    second = _plan({"udp_timeout": 60}, {"udp_timeout": 60}, conntrack="module", files=files)
    assert second["changed"] is False
    assert all(f["action"] in ("unchanged", "absent") for f in second["files"].values())


def test_wrong_mode_is_a_change():
    first = _plan({"udp_timeout": 30}, {"udp_timeout": 60})
    files = dict((role, f["after"]) for role, f in first["files"].items())
    result = plan(_env({"udp_timeout": 60}), {"udp_timeout": 60}, POLICY, files, PATHS, {"sysctl": 0o666})
    assert result["changed"] is True and result["files"]["sysctl"]["action"] == "write"


def test_absent_removes_only_existing_files_and_leaves_live_values():
    files = {"sysctl": "x", "udev_rule": "y"}
    result = _plan({"udp_timeout": 60}, {}, files=files, state="absent")
    assert result["files"]["sysctl"]["action"] == "remove"
    assert result["files"]["udev_rule"]["action"] == "remove"
    assert result["files"]["modprobe"]["action"] == "absent"
    assert result["knobs"] == []
    assert result["changed"] is True
    assert _plan({}, {}, state="absent")["changed"] is False


def test_persist_false_leaves_files_alone():
    result = _plan({"udp_timeout": 30}, {"udp_timeout": 60}, persist=False, files={"sysctl": "old"})
    assert all(f["action"] == "not_managed" and not f["changed"] for f in result["files"].values())


def test_diff_shows_live_and_files():
    diffs = _tune.diff(_plan({"udp_timeout": 30}, {"udp_timeout": 60}))
    assert diffs[0]["before"] == "net.netfilter.nf_conntrack_udp_timeout = 30\n"
    assert diffs[0]["after"] == "net.netfilter.nf_conntrack_udp_timeout = 60\n"
    assert diffs[1]["after_header"].startswith(PATHS["sysctl"])


def test_normalize_accepts_every_spelling():
    assert normalize_knobs({"max": 1, "nf_conntrack_buckets": "1024", "net.netfilter.nf_conntrack_udp_timeout": 5,
                            "net/netfilter/nf_conntrack_acct": 1}) == {"max": 1, "buckets": 1024, "udp_timeout": 5, "acct": 1}


@pytest.mark.parametrize("knobs, field", [
    ({"../../../kernel/panic": 1}, "knobs.../../../kernel/panic"),
    ({"net.ipv4.ip_forward": 1}, "knobs.net.ipv4.ip_forward"),
    ({"count": 1}, "knobs.count"),
    ({"max": -1}, "knobs.max"),
    ({"max": True}, "knobs.max"),
    ({"max": "lots"}, "knobs.max"),
    ({"udp_timeout": 0}, "knobs.udp_timeout"),
    ({"acct": 2}, "knobs.acct"),
    ({"max": 1, "nf_conntrack_max": 2}, "knobs.nf_conntrack_max"),
    ({"buckets": 0}, "knobs.buckets"),
])
def test_bad_knobs_name_the_field(knobs, field):
    with pytest.raises(TuneError) as info:
        normalize_knobs(knobs)
    assert info.value.field == field


@pytest.mark.parametrize("path", ["relative/x.conf", "/etc/sysctl.d/../passwd", "/etc/sysctl.d/", 5])
def test_bad_paths(path):
    with pytest.raises(TuneError):
        _tune.validate_path("sysctl_file", path)


@pytest.mark.parametrize("policy", ["skip", "warn", "fail"])
def test_container_with_raise_only_reports_not_applicable_without_complaint(policy):
    # host max 262144 is already higher than wanted: not applicable here, and nothing to warn or fail about
    result = _plan({"max": 262144}, {"max": 225000}, writable={"max": False}, init_netns=False,
                   raise_only=True, readonly_policy=policy)
    item = _by_name(result)["max"]
    assert item["status"] == "skipped"
    assert item["reason"].startswith("not applicable: host-scope knob")
    assert "raise_only accepts" in item["reason"]
    assert result["warnings"] == [] and result["errors"] == []
    # but a lower host value still counts under the policy
    lower = _plan({"max": 131072}, {"max": 225000}, writable={"max": False}, init_netns=False,
                  raise_only=True, readonly_policy=policy)
    assert len(lower["errors"]) == (1 if policy == "fail" else 0)
    assert len(lower["warnings"]) == (1 if policy == "warn" else 0)


# ---- issue 13: ranges, 64K pages, live resize, sysctl.d overrides, helper ---------------------------------------

@pytest.mark.parametrize("knobs, field", [
    ({"max": 2 ** 31}, "knobs.max"),                                  # above INT_MAX: EINVAL after buckets moved
    ({"net.netfilter.nf_conntrack_max": 2 ** 40}, "knobs.net.netfilter.nf_conntrack_max"),
    ({"tcp_timeout_established": 2147484}, "knobs.tcp_timeout_established"),  # above INT_MAX / HZ (HZ=1000)
    ({"buckets": 2 ** 31}, "knobs.buckets"),
    ({"events": 7}, "knobs.events"),
    ({"helper": 1}, "knobs.helper"),                                  # removed in 6.0; an anti-pattern
])
def test_kernel_ranges_checked_before_anything(knobs, field):
    with pytest.raises(TuneError) as info:
        normalize_knobs(dict(knobs, udp_timeout=60))
    assert info.value.field == field


def test_timeout_at_int_max_over_hz_is_accepted():
    assert normalize_knobs({"tcp_timeout_established": 2147483}) == {"tcp_timeout_established": 2147483}


def test_64k_pages_buckets_not_changed_every_run():
    env = _env({"buckets": 262144})
    env["page_size"] = 65536
    # the kernel rounds 100,000 up to whole 64 KiB pages (8192 buckets each): 106,496
    first = _by_name(plan(dict(env, live={"buckets": 262144}), {"buckets": 100000}, POLICY, {}, PATHS))["buckets"]
    assert first["after"] == 106496
    again = _by_name(plan(dict(env, live={"buckets": 106496}), {"buckets": 100000}, POLICY, {}, PATHS))["buckets"]
    assert again["status"] == "unchanged"


def test_live_buckets_change_warns_and_can_be_deferred():
    result = _plan({"buckets": 262144, "count": 180000}, {"buckets": 524288})
    assert any("rehashes every entry" in w and "180,000" in w for w in result["warnings"])
    deferred = _plan({"buckets": 262144}, {"buckets": 524288}, buckets_live=False)
    item = _by_name(deferred)["buckets"]
    assert item["status"] == "skipped" and "deferred to the next boot" in item["reason"]
    assert "net.netfilter.nf_conntrack_buckets = 524288" in deferred["files"]["sysctl"]["after"]


def test_later_sysctl_file_overriding_ours_is_reported():
    env = _env({"max": 262144, "udp_timeout": 30})
    env["sysctl_files"] = {
        "/etc/sysctl.d/10-early.conf": "net.netfilter.nf_conntrack_max = 1\n",            # before ours: harmless
        "/etc/sysctl.d/99-sysctl.conf": "# local\nnet.netfilter.nf_conntrack_max=131072\n",  # after ours: wins
        "/usr/lib/sysctl.d/95-k8s.conf": "-net/netfilter/nf_conntrack_udp_timeout = 60\n",  # same value: fine
    }
    result = plan(env, {"max": 524288, "udp_timeout": 60}, POLICY, {}, PATHS)
    knobs = _by_name(result)
    assert [o["path"] for o in knobs["max"]["overridden_by"]] == ["/etc/sysctl.d/99-sysctl.conf"]
    assert knobs["udp_timeout"]["overridden_by"] == []
    assert any("99-sysctl.conf" in w and "overrides" in w for w in result["warnings"])


def test_etc_masks_the_same_name_in_usr_lib():
    files = {"/usr/lib/sysctl.d/99-x.conf": "net.netfilter.nf_conntrack_max = 5\n",
             "/etc/sysctl.d/99-x.conf": "# emptied by the admin\n"}
    assert _tune.sysctl_overrides(PATHS["sysctl"], files, ["net.netfilter.nf_conntrack_max"]) == {}
