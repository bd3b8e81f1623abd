"""tune_host.apply_knobs: the write/read-back loop and the one readonly policy for writes the kernel refuses."""
import pytest

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import HostError
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import tune as _tune
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import tune_host

POLICY = {"state": "present", "persist": True, "apply_live": True, "raise_only": False, "readonly_policy": "skip",
          "autoload": "auto", "mode": 0o644}


def _plan(tmp_path, live, desired, readonly_policy="skip"):
    env = {"init_netns": True, "conntrack": "builtin", "kernel_release": "6.1.0", "live": dict(live),
           "writable": dict((k, True) for k in live), "systemd_sysctl": None, "sysctl_bin": None}
    paths = dict((role, str(tmp_path / role)) for role in _tune.FILE_ROLES)
    policy = dict(POLICY, readonly_policy=readonly_policy)
    return _tune.plan(env, desired, policy, {}, paths), policy


@pytest.fixture
def knob_files(tmp_path, monkeypatch):
    """Knob writes go to files under tmp_path; a name in ``refuse`` raises ReadOnlyKnob like an EACCES write."""
    refuse = set()
    ignore = set()

    def fake_write(short, value):
        if short in refuse:
            raise tune_host.ReadOnlyKnob("/proc/sys/net/netfilter/nf_conntrack_%s: Permission denied" % short)
        if short not in ignore:
            (tmp_path / ("nf_conntrack_" + short)).write_text("%d\n" % value)

    monkeypatch.setattr(tune_host, "write_knob", fake_write)
    monkeypatch.setattr(tune_host._knobs, "PROC_SYS_DIR", str(tmp_path))
    for short, value in (("udp_timeout", 30), ("tcp_timeout_established", 432000)):
        (tmp_path / ("nf_conntrack_" + short)).write_text("%d\n" % value)
    return refuse, ignore


def test_writes_and_reads_back(tmp_path, knob_files):
    result_plan, policy = _plan(tmp_path, {"udp_timeout": 30, "tcp_timeout_established": 432000},
                                {"udp_timeout": 61, "tcp_timeout_established": 7200})
    assert tune_host.apply_knobs(result_plan, policy) == []
    assert dict((k["name"], k["after"]) for k in result_plan["knobs"]) == {"udp_timeout": 61,
                                                                           "tcp_timeout_established": 7200}


@pytest.mark.parametrize("readonly_policy, warned", [("skip", False), ("warn", True)])
def test_refused_write_follows_the_policy(tmp_path, knob_files, readonly_policy, warned):
    knob_files[0].add("udp_timeout")
    result_plan, policy = _plan(tmp_path, {"udp_timeout": 30, "tcp_timeout_established": 432000},
                                {"udp_timeout": 61, "tcp_timeout_established": 7200}, readonly_policy)
    warnings = tune_host.apply_knobs(result_plan, policy)
    item = dict((k["name"], k) for k in result_plan["knobs"])["udp_timeout"]
    assert item["status"] == _tune.STATUS_SKIPPED and item["after"] == 30
    assert item["reason"].startswith("not applicable: the kernel refused the write")
    assert bool(warnings) is warned and all(w.startswith("udp_timeout: not applicable") for w in warnings)


def test_refused_write_with_fail_policy_raises_with_the_knobs(tmp_path, knob_files):
    knob_files[0].add("tcp_timeout_established")
    result_plan, policy = _plan(tmp_path, {"udp_timeout": 30, "tcp_timeout_established": 432000},
                                {"udp_timeout": 61, "tcp_timeout_established": 7200}, "fail")
    with pytest.raises(HostError) as info:
        tune_host.apply_knobs(result_plan, policy)
    assert info.value.msg.startswith("tcp_timeout_established: not applicable: the kernel refused")
    assert info.value.details["knobs"]["tcp_timeout_established"]["status"] == "skipped"


def test_value_not_taken_raises(tmp_path, knob_files):
    knob_files[1].add("udp_timeout")  # the write "succeeds" but the file keeps 30
    result_plan, policy = _plan(tmp_path, {"udp_timeout": 30}, {"udp_timeout": 61})
    with pytest.raises(HostError) as info:
        tune_host.apply_knobs(result_plan, policy)
    assert "did not take net.netfilter.nf_conntrack_udp_timeout=61 (reads back 30)" in info.value.msg
    assert info.value.details["knobs"]["udp_timeout"]["status"] == "changed"


class _Module:
    check_mode = False
    _diff = False

    def __init__(self):
        self.commands = []

    def get_bin_path(self, name, required=False, opt_dirs=None):
        return "/sbin/" + name

    def run_command(self, argv):
        self.commands.append(argv)
        return 0, "", ""

    def warn(self, text):
        pass


@pytest.mark.parametrize("check_mode", [False, True])
def test_blocked_module_load_is_refused_before_anything_runs(monkeypatch, tmp_path, check_mode):
    blocked = "/etc/modprobe.d/x.conf: 'install nf_conntrack /bin/false' runs instead of loading it"
    env = {"init_netns": True, "conntrack": "loadable", "kernel_release": "6.1.0", "live": {}, "writable": {},
           "hashsize": None, "module_config": {"blocked": blocked}}
    monkeypatch.setattr(tune_host, "read_environment", lambda shorts: dict(env))
    monkeypatch.setattr(tune_host, "_read_files", lambda paths: ({}, {}))
    module = _Module()
    module.check_mode = check_mode
    paths = dict((role, str(tmp_path / role)) for role in _tune.FILE_ROLES)
    with pytest.raises(HostError) as info:
        tune_host.run(module, {"max": 262144}, dict(POLICY, load_module=True), paths)
    assert info.value.msg.startswith("could not load nf_conntrack: the load is blocked (/etc/modprobe.d/x.conf")
    assert module.commands == [] and list(tmp_path.iterdir()) == []
