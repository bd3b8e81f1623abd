"""Failure handling of iptables_baseline for real: a failed apply leaves the previous rules exactly in place,
a missed confirmation rolls back within the timer, a confirmation cancels it. Both backends."""

import os
import stat
import time

import pytest

from firewall_lab import BACKENDS, FAMILIES, module, owned, rule_lines, save, seed_foreign
from netns_lab import wait_until

OLD = {"input": {"services": [{"name": "ssh", "ports": [22]}]}}
NEW = {"input": {"services": [{"name": "web", "ports": [443]}], "final_action": "reject"},
       "forward": {"enabled": True}, "notrack": [{"proto": "udp", "ports": [4789]}]}

# A restore binary that behaves like the real one under --test, but on the real run commits the whole
# transaction and then reports failure once -- the worst case: the kernel state changed and the tool says no.
FAKE_RESTORE = """#!/bin/sh
case " $* " in *" --test "*) exec %(real)s "$@";; esac
if [ -e %(marker)s ]; then
    rm -f %(marker)s
    %(real)s "$@" || true
    echo "iptables-restore: line 7 failed (injected)" >&2
    exit 1
fi
exec %(real)s "$@"
"""


def _fake_bin(tmp_path, backend, family):
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    tool = {"ipv4": "iptables", "ipv6": "ip6tables"}[family]
    name = "%s-%s-restore" % (tool, backend)
    marker = tmp_path / ("fail-" + family)
    marker.write_text("")
    path = folder / name
    path.write_text(FAKE_RESTORE % {"real": "/usr/sbin/" + name, "marker": marker})
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(folder), marker


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("failing", FAMILIES)
def test_failed_apply_leaves_previous_rules_exactly(lab, tmp_path, backend, failing):
    ns = lab.add("fw", conntrack_rule=False)
    seed_foreign(ns, backend)
    assert module(ns, "iptables_baseline", dict(OLD, backend=backend))["changed"]
    before = dict((family, rule_lines(save(ns, backend, family))) for family in FAMILIES)
    folder, marker = _fake_bin(tmp_path, backend, failing)
    result = module(ns, "iptables_baseline", dict(NEW, backend=backend),
                    env={"PATH": folder + ":/usr/sbin:/usr/bin:/sbin:/bin"})
    assert result.get("failed") is True, result
    assert "injected" in result["msg"] and "previous rules restored" in result["msg"], result["msg"]
    assert result["restored"] is True
    assert not marker.exists()  # the failure really was injected
    for family in FAMILIES:
        assert rule_lines(save(ns, backend, family)) == before[family], family


@pytest.mark.parametrize("backend", BACKENDS)
def test_restore_rejected_by_test_changes_nothing(lab, tmp_path, backend):
    ns = lab.add("fw", conntrack_rule=False)
    assert module(ns, "iptables_baseline", dict(OLD, backend=backend))["changed"]
    before = rule_lines(save(ns, backend, "ipv4"))
    folder = tmp_path / "bin"
    folder.mkdir()
    fake = folder / ("iptables-%s-restore" % backend)
    fake.write_text("#!/bin/sh\necho 'fake: rejected' >&2\nexit 2\n")
    fake.chmod(0o755)
    result = module(ns, "iptables_baseline", dict(NEW, backend=backend),
                    env={"PATH": str(folder) + ":/usr/sbin:/usr/bin:/sbin:/bin"})
    assert result.get("failed") is True and "--test" in result["msg"], result
    assert rule_lines(save(ns, backend, "ipv4")) == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_missed_confirmation_rolls_back_within_the_timer(lab, tmp_path, backend):
    ns = lab.add("fw", conntrack_rule=False)
    seed_foreign(ns, backend)
    assert module(ns, "iptables_baseline", dict(OLD, backend=backend))["changed"]
    before = dict((family, rule_lines(save(ns, backend, family))) for family in FAMILIES)
    state_dir = str(tmp_path / "state")
    started = time.time()
    # a timer long enough that the module always returns (and we can look at the new rules) before it fires
    args = dict(NEW, backend=backend, rollback_timeout=10, state_dir=state_dir, persist=True,
                rules_v4_path=str(tmp_path / "r4"), rules_v6_path=str(tmp_path / "r6"),
                config_path=str(tmp_path / "c.json"), loader_path=str(tmp_path / "load"), unit_path="")
    result = module(ns, "iptables_baseline", args)
    returned = time.time() - started
    assert result["_rc"] == 0 and result["changed"], result
    assert result["rollback_method"] == "fork"  # never systemd-run from inside a namespace
    assert result["persist_pending"] is True and not os.path.exists(str(tmp_path / "r4"))
    token = result["rollback_token"]
    assert returned < 10, "the module took longer than the rollback timer: %.1f s" % returned
    assert rule_lines(save(ns, backend, "ipv4")) != before["ipv4"]
    assert wait_until(lambda: all(rule_lines(save(ns, backend, f)) == before[f] for f in FAMILIES), 20)
    elapsed = time.time() - started
    # restored by the timer: not before it fires, and within a bounded time after
    assert 10 <= elapsed <= 10 + 20, elapsed
    rc_path = os.path.join(state_dir, "rollback-" + token, "rc")
    assert wait_until(lambda: os.path.exists(rc_path) and open(rc_path).read().strip() != "", 5)
    assert open(rc_path).read().strip() == "0"
    late = module(ns, "iptables_baseline",
                  dict(NEW, backend=backend, confirm=True, rollback_token=token, state_dir=state_dir))
    assert late.get("failed") is True and "too late" in late["msg"], late
    assert late["rolled_back"] is True
    for family in FAMILIES:
        assert rule_lines(save(ns, backend, family)) == before[family]


@pytest.mark.parametrize("backend", BACKENDS)
def test_confirmation_cancels_the_rollback(lab, tmp_path, backend):
    ns = lab.add("fw", conntrack_rule=False)
    assert module(ns, "iptables_baseline", dict(OLD, backend=backend))["changed"]
    state_dir = str(tmp_path / "state")
    paths = dict(persist=True, rules_v4_path=str(tmp_path / "r4"), rules_v6_path=str(tmp_path / "r6"),
                 config_path=str(tmp_path / "c.json"), loader_path=str(tmp_path / "load"), unit_path="",
                 state_dir=state_dir)
    started = time.time()
    # a longer timer than the rollback test: two module runs must fit in it even on a loaded machine
    first = module(ns, "iptables_baseline", dict(NEW, backend=backend, rollback_timeout=8, **paths))
    assert first["_rc"] == 0 and first["rollback_token"], first
    applied = dict((family, rule_lines(save(ns, backend, family))) for family in FAMILIES)
    pid = int(open(os.path.join(state_dir, "rollback-" + first["rollback_token"], "pid")).read())
    confirm = module(ns, "iptables_baseline",
                     dict(NEW, backend=backend, confirm=True, rollback_token=first["rollback_token"], **paths))
    assert confirm["_rc"] == 0 and confirm["changed"], confirm
    assert confirm["rollback_cancelled"] == [first["rollback_token"]]
    assert sorted(confirm["files_changed"]) == sorted(str(tmp_path / n) for n in ("r4", "r6", "c.json", "load"))
    time.sleep(max(0.0, started + 9.5 - time.time()))  # past the moment the timer would have fired
    for family in FAMILIES:
        assert rule_lines(save(ns, backend, family)) == applied[family], family
    assert not os.path.exists("/proc/%d" % pid) or "sleep" not in open("/proc/%d/cmdline" % pid).read()
    # run 2 of the pattern: nothing to change, nothing pending, nothing to confirm
    again = module(ns, "iptables_baseline", dict(NEW, backend=backend, rollback_timeout=3, **paths))
    assert again["changed"] is False and again["rollback_token"] is None, again
    confirm = module(ns, "iptables_baseline", dict(NEW, backend=backend, confirm=True, **paths))
    assert confirm["changed"] is False and confirm["rollback_cancelled"] == [], confirm
    assert owned(save(ns, backend, "ipv4"))
