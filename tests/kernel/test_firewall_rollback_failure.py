"""A failed apply never leaves a rollback timer running, with packets: an apply with a rollback timer whose real
restore fails (injected after --test passed) reports the timer's token and cancels it, so a rule set applied and
confirmed afterwards is still the one that decides which connections pass once the old timer's deadline is long past.
A rule set rejected by --test starts no timer at all. Also: state=absent puts a policy back only while it still has
the value the model gave it."""

import os
import time

import pytest

import traffic
from firewall_lab import BACKENDS, TOOL, module, restore
from test_firewall_failure import _fake_bin

OLD = {"input": {"services": [{"name": "a", "ports": [9001]}]}}
NEW = {"input": {"services": [{"name": "b", "ports": [9000]}], "final_action": "drop"}}


def _lab(lab):
    client, server = lab.add("cl", False), lab.add("sv", False)
    lab.link(client, "10.96.0.1/24", server, "10.96.0.2/24")
    lab.link(client, "fd00:96::1/64", server, "fd00:96::2/64")
    traffic.serve(server, "sv", tcp=[9000, 9001])
    return client, server


def _passes(client):
    return dict((port, (traffic.tcp(client, "10.96.0.2", port), traffic.tcp(client, "fd00:96::2", port)))
                for port in (9000, 9001))


@pytest.mark.parametrize("backend", BACKENDS)
def test_failed_apply_cancels_its_timer_and_a_later_confirmed_apply_stays(lab, tmp_path, backend):
    client, server = _lab(lab)
    state_dir = str(tmp_path / "state")
    assert module(server, "iptables_baseline", dict(OLD, backend=backend))["changed"]
    folder, marker = _fake_bin(tmp_path, backend, "ipv6")
    started = time.time()
    failed = module(server, "iptables_baseline", dict(NEW, backend=backend, rollback_timeout=4, state_dir=state_dir),
                    env={"PATH": folder + ":/usr/sbin:/usr/bin:/sbin:/bin"})
    assert failed.get("failed") is True and "injected" in failed["msg"] and failed["restored"] is True, failed
    assert not marker.exists()
    token = failed["rollback_token"]
    assert token and failed["rollback_cancelled"] == [token] and "cancelled" in failed["msg"], failed
    # the operator fixes the cause and applies the new rules without a timer
    applied = module(server, "iptables_baseline", dict(NEW, backend=backend, state_dir=state_dir))
    assert applied["_rc"] == 0 and applied["changed"], applied
    time.sleep(max(0.0, started + 7 - time.time()))  # well past the failed call's 4 s timer
    assert _passes(client) == {9000: ("open", "open"), 9001: ("timeout", "timeout")}
    assert not os.path.exists(os.path.join(state_dir, "rollback-" + token, "rc"))  # the timer never ran


@pytest.mark.parametrize("backend", BACKENDS)
def test_rules_rejected_by_test_start_no_timer(lab, tmp_path, backend):
    _client, server = _lab(lab)
    state_dir = tmp_path / "state"
    bins = tmp_path / "bin"
    bins.mkdir()
    fake = bins / ("iptables-%s-restore" % backend)
    fake.write_text("#!/bin/sh\necho 'fake: rejected' >&2\nexit 2\n")
    fake.chmod(0o755)
    result = module(server, "iptables_baseline", dict(NEW, backend=backend, rollback_timeout=4,
                                                      state_dir=str(state_dir)),
                    env={"PATH": str(bins) + ":/usr/sbin:/usr/bin:/sbin:/bin"})
    assert result.get("failed") is True and "--test" in result["msg"], result
    assert not state_dir.exists() or os.listdir(str(state_dir)) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_absent_leaves_a_policy_another_tool_changed_meanwhile(lab, backend):
    _client, server = _lab(lab)
    model = {"input": {"services": [{"ports": [9000]}]}, "policies": {"forward": "ACCEPT"}}
    assert module(server, "iptables_baseline", dict(model, backend=backend))["_rc"] == 0
    # meanwhile Docker starts and sets FORWARD to DROP in IPv4
    restore(server, backend, "ipv4", "*filter\n:FORWARD DROP [0:0]\nCOMMIT\n")
    result = module(server, "iptables_baseline", dict(model, backend=backend, state="absent"))
    assert result["_rc"] == 0 and result["changed"], result
    policies = dict((family, [line for line in server.run(["%s-%s-save" % (TOOL[family], backend)]).stdout.splitlines()
                              if line.startswith(":FORWARD")][0].split()[1]) for family in ("ipv4", "ipv6"))
    assert policies == {"ipv4": "DROP", "ipv6": "ACCEPT"}
    assert module(server, "iptables_baseline", dict(model, backend=backend, state="absent"))["changed"] is False
