"""conntrack_facts and conntrack_tune read the host through one probe: same answers on the same (fake) host.

The fake host is a tree under tmp_path with the file modes the kernel gives the sysctl table; the module-level
paths of the probe point at it. Both sides are the real code paths the modules call (facts.gather and
tune_host.read_environment).
"""
import os

import pytest

from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import facts
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import knobs as _knobs
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import procfs
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import tune_host
from ansible_collections.nodeguard.conntrack.plugins.module_utils._host import environment as env

TUNE_KNOBS = ["max", "buckets", "tcp_timeout_established"]


@pytest.fixture
def fake_host(tmp_path, monkeypatch):
    """Returns a function that lays out the sysctls {short: (value, mode)}, netns links and /sys/module."""
    def build(sysctls, own_inode=4026532001, pid1_inode=4026531992, module_dir=True, modules_dep=None):
        proc = tmp_path / "netfilter"
        proc.mkdir()
        for short, (value, mode) in sysctls.items():
            path = proc / ("nf_conntrack_" + short)
            path.write_text("%d\n" % value)
            path.chmod(mode)
        sysmod = tmp_path / "sys_nf_conntrack"
        hashsize = tmp_path / "hashsize"
        if module_dir:
            (sysmod / "parameters").mkdir(parents=True)
            (sysmod / "initstate").write_text("live\n")
            hashsize.write_text("16384\n")
            hashsize.chmod(0o600)
        modules = tmp_path / "lib_modules"
        (modules / os.uname()[2]).mkdir(parents=True)
        if modules_dep is not None:
            (modules / os.uname()[2] / "modules.dep").write_text(modules_dep)
        os.symlink("net:[%d]" % own_inode, str(tmp_path / "self_net"))
        os.symlink("net:[%d]" % pid1_inode, str(tmp_path / "pid1_net"))
        monkeypatch.setattr(_knobs, "PROC_SYS_DIR", str(proc))
        monkeypatch.setattr(_knobs, "HASHSIZE_PATH", str(hashsize))
        monkeypatch.setattr(procfs, "STAT_PATH", str(tmp_path / "stat_nf_conntrack"))
        monkeypatch.setattr(env, "SYS_MODULE_DIR", str(sysmod))
        monkeypatch.setattr(env, "MODULES_DIRS", (str(modules),), raising=False)
        monkeypatch.setattr(env, "NETNS_SELF", str(tmp_path / "self_net"))
        monkeypatch.setattr(env, "NETNS_PID1", str(tmp_path / "pid1_net"))
    return build


def _both():
    gathered, _warnings = facts.gather(["environment"])
    return gathered["environment"], tune_host.read_environment(TUNE_KNOBS)


def _tune_writable(tune_env):
    return sorted(name for name, ok in tune_env["writable"].items() if ok)


def test_4x_layout_child_netns_same_answer(fake_host):
    # 4.x in a child netns: nf_conntrack_max still 0644, buckets already 0444 (the layout the issue reported)
    fake_host({"max": (65536, 0o644), "buckets": (16384, 0o444), "count": (3, 0o444),
               "tcp_timeout_established": (432000, 0o644)})
    facts_env, tune_env = _both()
    assert facts_env["init_netns"] is False
    assert tune_env["init_netns"] is False  # the old tune probe decided from max's write bit alone: True
    assert tune_env["init_netns_reason"] == facts_env["init_netns_reason"]
    assert tune_env["conntrack"] == facts_env["conntrack"] == "module"
    # buckets is read-only and hashsize cannot stand in for it outside the init netns
    assert _tune_writable(tune_env) == ["max", "tcp_timeout_established"]
    assert [k for k in facts_env["writable_knobs"] if k in TUNE_KNOBS] == _tune_writable(tune_env)
    assert "hashsize" in facts_env["readonly_knobs"] and tune_env["hashsize_writable"] is False


def test_init_netns_all_writable_same_answer(fake_host):
    fake_host({"max": (65536, 0o644), "buckets": (16384, 0o644), "expect_max": (256, 0o644),
               "tcp_timeout_established": (432000, 0o644)}, own_inode=4026531992)
    facts_env, tune_env = _both()
    assert facts_env["init_netns"] is tune_env["init_netns"] is True
    assert _tune_writable(tune_env) == sorted(TUNE_KNOBS)
    assert [k for k in facts_env["writable_knobs"] if k in TUNE_KNOBS] == _tune_writable(tune_env)
    assert "hashsize" in facts_env["writable_knobs"] and tune_env["hashsize_writable"] is True


def test_old_kernel_init_netns_buckets_through_hashsize(fake_host):
    # init netns, buckets sysctl read-only: tune may still resize through the hashsize parameter
    fake_host({"max": (65536, 0o644), "buckets": (16384, 0o444), "expect_max": (256, 0o644)}, own_inode=4026531833)
    facts_env, tune_env = _both()
    assert facts_env["init_netns"] is tune_env["init_netns"] is True
    assert facts_env["init_netns_reason"] == "fixed init_net inode"
    assert "buckets" in facts_env["readonly_knobs"] and "hashsize" in facts_env["writable_knobs"]
    assert tune_env["writable"]["buckets"] is True and tune_env["hashsize_writable"] is True


def test_loadable_module_same_answer(fake_host):
    fake_host({}, module_dir=False,
              modules_dep="kernel/net/netfilter/nf_conntrack.ko.zst: kernel/lib/libcrc32c.ko.zst\n")
    facts_env, tune_env = _both()
    assert facts_env["conntrack"] == tune_env["conntrack"] == "loadable"


def test_absent_same_answer(fake_host):
    fake_host({}, module_dir=False, modules_dep="kernel/net/foo.ko:\n")
    facts_env, tune_env = _both()
    assert facts_env["conntrack"] == tune_env["conntrack"] == "absent"
