"""The firewall host layer (apply.Host): all-or-nothing apply with recovery, rollback timer start, confirm.

A fake module stands in for iptables-save/-restore: it keeps the owned state per family, prints it as
iptables-save would, and turns a restore script into the state that script leads to (the scripts the layer
may send are rendered by the same code the layer uses). Failures are injected per family.
"""
import os
import re

import pytest

from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import apply as fw_apply
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import model as fw_model
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import render

MODEL = fw_model.normalise_model({"families": ["ipv4", "ipv6"], "input": {"services": [{"ports": [22]}]}})
FAMILIES = MODEL["families"]
POLICY_CHAINS = render.managed_policy_chains(MODEL)
DESIRED = render.render_families(MODEL)
ABSENT = dict((family, render.absent_state(MODEL)) for family in FAMILIES)
TOOL = {"ipv4": "iptables", "ipv6": "ip6tables"}
RESOLVED = {"backend": "nft", "other": "legacy", "other_tools": {"ipv4": None, "ipv6": None},
            "tools": dict((f, {"save": "/usr/sbin/%s-nft-save" % TOOL[f], "restore": "/usr/sbin/%s-nft-restore" % TOOL[f]})
                          for f in FAMILIES)}


def save_text(state):
    """The owned state as iptables-save prints it (appended jumps, built-in chains declared)."""
    lines = []
    for line in re.sub(r"^-I (\S+) \d+ ", r"-A \1 ", render.render_restore(state), flags=re.M).splitlines():
        lines.append(line)
        if line.startswith("*"):
            lines += [":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    return "\n".join(lines) + "\n"


class FakeModule(object):
    check_mode = False

    def __init__(self, live, binaries=()):
        self.live = dict(live)
        self.binaries = set(binaries)
        self.calls = []
        self.test_fail = set()  # families whose --test is rejected
        self.restore_fail = set()  # families whose real restore fails
        self.restore_ignored = set()  # families whose restore "succeeds" but changes nothing
        self.transitions = {}
        for family in FAMILIES:
            for a, b in ((ABSENT[family], DESIRED[family]), (DESIRED[family], ABSENT[family])):
                self.transitions[render.render_apply(a, b)] = b

    def get_bin_path(self, name, required=False, opt_dirs=None):
        return "/usr/bin/" + name if name in self.binaries else None

    def run_command(self, argv, data=None, binary_data=False, environ_update=None, check_rc=False):
        self.calls.append(list(argv))
        family = "ipv6" if os.path.basename(argv[0]).startswith("ip6") else "ipv4"
        if argv[0].endswith("-save"):
            return 0, save_text(self.live[family]), ""
        if argv[0].endswith("-restore"):
            with open(argv[-1]) as handle:
                script = handle.read()
            if "--test" in argv:
                return (1, "", "line 3: bad rule") if family in self.test_fail else (0, "", "")
            if family in self.restore_fail:
                self.restore_fail.discard(family)  # fails once: the recovery transaction goes through
                return 1, "", "iptables-restore: injected failure"
            if family not in self.restore_ignored:
                self.live[family] = self.transitions[script]
            return 0, "", ""
        return 0, "", ""

    def restores(self, test=False):
        return [c for c in self.calls if c[0].endswith("-restore") and ("--test" in c) is test]


def _apply(module, current=None):
    host = fw_apply.Host(module)
    host.apply(RESOLVED, MODEL["prefix"], POLICY_CHAINS, current or dict(ABSENT), DESIRED)
    return host


def test_apply_all_families():
    module = FakeModule(ABSENT)
    _apply(module)
    assert all(render.states_equal(module.live[f], DESIRED[f]) for f in FAMILIES)
    assert len(module.restores(test=True)) == 2 and len(module.restores()) == 2


def test_rejected_by_test_changes_nothing():
    module = FakeModule(ABSENT)
    module.test_fail.add("ipv6")
    with pytest.raises(fw_apply.FirewallError) as info:
        _apply(module)
    assert "ipv6 rules rejected by /usr/sbin/ip6tables-nft-restore --test (nothing changed): line 3: bad rule" \
        == info.value.msg
    assert info.value.details["script"] == render.render_apply(ABSENT["ipv6"], DESIRED["ipv6"])
    assert module.restores() == []  # no real transaction ran
    assert module.live == ABSENT


def test_second_family_fails_first_is_put_back():
    module = FakeModule(ABSENT)
    module.restore_fail.add("ipv6")
    with pytest.raises(fw_apply.FirewallError) as info:
        _apply(module)
    assert info.value.msg.startswith("applying the ipv6 rules failed: iptables-restore: injected failure")
    assert info.value.msg.endswith("previous rules restored") and info.value.details["restored"] is True
    assert all(render.states_equal(module.live[f], ABSENT[f]) for f in FAMILIES)
    # ipv4 was applied, then rolled back by a second transaction (desired -> absent)
    ipv4 = [c for c in module.restores() if "iptables-nft-restore" in c[0]]
    assert len(ipv4) == 2


def test_read_back_differs_is_a_failure():
    module = FakeModule(ABSENT)
    module.restore_ignored.add("ipv4")
    with pytest.raises(fw_apply.FirewallError) as info:
        _apply(module)
    assert "the live rules read back differ from the rules applied" in info.value.msg
    assert info.value.details["restored"] is True  # nothing changed, so the previous rules are in place


def test_recovery_that_cannot_restore_says_so():
    module = FakeModule(ABSENT)
    module.restore_fail.add("ipv6")
    module.restore_ignored.add("ipv4")  # ipv4 "applies" nothing; recovery then finds it unchanged
    module.live["ipv4"] = DESIRED["ipv4"]  # ...but a foreign change left ipv4 different from before
    with pytest.raises(fw_apply.FirewallError) as info:
        _apply(module, current=dict(ABSENT))
    # ipv4 live == desired, so applying ipv4 is a no-op success; ipv6 fails; recovery of ipv4 sends
    # desired -> absent, which the fake ignores for ipv4: the previous rules could not be restored
    assert info.value.msg.endswith("COULD NOT BE RESTORED") and info.value.details["restored"] is False


# -- rollback timer and confirm -------------------------------------------------------------------------------

def test_start_rollback_fork_writes_state_and_starts_helper(tmp_path):
    module = FakeModule(ABSENT, binaries={"setsid"})
    host = fw_apply.Host(module)
    token, method = host.start_rollback(RESOLVED, MODEL["prefix"], dict(ABSENT), 30, str(tmp_path), "fork")
    assert method == "fork" and re.match(r"^[0-9a-f]{16}$", token)
    folder = tmp_path / ("rollback-" + token)
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert (folder / "rules.ipv4").read_text() == render.render_restore(ABSENT["ipv4"])
    assert (folder / "loader.py").stat().st_mode & 0o777 == 0o700
    setsid = [c for c in module.calls if c[0] == "/usr/bin/setsid"]
    assert len(setsid) == 1 and setsid[0][1:4] == ["-f", "/bin/sh", "-c"] and "sleep 30;" in setsid[0][4]
    assert host.pending_rollbacks(str(tmp_path)) == [token]


def test_start_rollback_without_setsid_fails(tmp_path):
    host = fw_apply.Host(FakeModule(ABSENT))
    with pytest.raises(fw_apply.FirewallError) as info:
        host.start_rollback(RESOLVED, MODEL["prefix"], dict(ABSENT), 30, str(tmp_path), "fork")
    assert "needs setsid" in info.value.msg


def _pending(tmp_path, token="0123456789abcdef"):
    folder = tmp_path / ("rollback-" + token)
    folder.mkdir()
    return token, folder


def test_confirm_cancels_a_pending_rollback(tmp_path):
    token, folder = _pending(tmp_path)
    host = fw_apply.Host(FakeModule(ABSENT))
    assert host.confirm(str(tmp_path), token, check_mode=False) == [token]
    assert (folder / "done").is_dir() and (folder / "cancelled").is_dir()
    assert host.pending_rollbacks(str(tmp_path)) == []
    # a second confirmation is a no-op
    assert host.confirm(str(tmp_path), token, check_mode=False) == []


def test_confirm_in_check_mode_changes_nothing(tmp_path):
    token, folder = _pending(tmp_path)
    host = fw_apply.Host(FakeModule(ABSENT))
    assert host.confirm(str(tmp_path), None, check_mode=True) == [token]
    assert not (folder / "done").exists()


def test_confirm_after_the_timer_fired_reports_rolled_back(tmp_path):
    token, folder = _pending(tmp_path)
    (folder / "done").mkdir()
    with pytest.raises(fw_apply.FirewallError) as info:
        fw_apply.Host(FakeModule(ABSENT)).confirm(str(tmp_path), token, check_mode=False)
    assert info.value.msg.startswith("too late") and info.value.details == {"rolled_back": True}


@pytest.mark.parametrize("token, message", [("../etc", "is not a token"), ("zz", "is not a token"),
                                            ("abcdef0123456789", "no rollback with token")])
def test_confirm_rejects_unknown_tokens(tmp_path, token, message):
    with pytest.raises(fw_apply.FirewallError) as info:
        fw_apply.Host(FakeModule(ABSENT)).confirm(str(tmp_path), token, check_mode=False)
    assert message in info.value.msg


def test_confirm_stops_the_systemd_timer(tmp_path):
    token, folder = _pending(tmp_path)
    (folder / "unit").write_text("nodeguard-conntrack-rollback-%s\n" % token)
    module = FakeModule(ABSENT, binaries={"systemctl"})
    fw_apply.Host(module).confirm(str(tmp_path), token, check_mode=False)
    assert ["/usr/bin/systemctl", "stop", "nodeguard-conntrack-rollback-%s.timer" % token] in module.calls
