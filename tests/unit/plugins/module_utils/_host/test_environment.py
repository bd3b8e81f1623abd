"""Environment detection: pure decisions on observations (no host I/O)."""
import pytest

from ansible_collections.nodeguard.conntrack.plugins.module_utils._host import environment as env

RW, RO = 0o644, 0o444


@pytest.mark.parametrize("sys_dir, initstate, builtin_listed, sysctls, expected", [
    (True, True, False, True, "module"),
    (True, False, False, True, "builtin"),  # built-in: /sys/module/nf_conntrack without initstate
    (False, False, True, True, "builtin"),  # /sys hidden, modules.builtin says built in
    (False, False, False, True, "module"),
    (False, False, False, False, "absent"),
    (False, False, True, False, "builtin"),
])
def test_classify_conntrack(sys_dir, initstate, builtin_listed, sysctls, expected):
    assert env.classify_conntrack(sys_dir, initstate, builtin_listed, sysctls) == expected


@pytest.mark.parametrize("sys_dir, builtin_listed, sysctls, expected", [
    (False, False, False, "loadable"),  # on disk (modules.dep), not loaded
    (True, False, True, "builtin"),  # /sys/module decides before the module lists
    (False, True, False, "builtin"),
    (False, False, True, "module"),
])
def test_classify_conntrack_loadable(sys_dir, builtin_listed, sysctls, expected):
    assert env.classify_conntrack(sys_dir, False, builtin_listed, sysctls, listed_loadable=True) == expected


@pytest.mark.parametrize("own, modes, pid1, container, expected", [
    # fixed inode below PROC_DYNAMIC_FIRST: only init_net has one (measured 4026531833 on 6.18)
    (4026531833, {"max": RW, "buckets": RW, "expect_max": RW}, None, None, True),
    # child netns on 6.x: host-scope knobs are 0444
    (4026532315, {"max": RO, "buckets": RO, "expect_max": RO}, None, None, False),
    # a container with read-only /proc/sys still shows the kernel's table modes
    (4026532400, {"max": RO, "buckets": RO, "expect_max": RO}, 4026532400, "podman", False),
    # old kernel with dynamic init_net inode, all three writable: init netns
    (4026531992, {"max": RW, "buckets": RW, "expect_max": RW}, None, None, True),
    # old kernel where only buckets is 0444 in a child netns (4.x rule)
    (4026532001, {"max": RW, "buckets": RO, "expect_max": RW}, None, None, False),
    # no conntrack sysctls: fall back to PID 1, outside containers only
    (4026532001, {}, 4026531992, None, False),
    (4026531992, {}, 4026531992, None, True),
    (4026532001, {}, 4026532001, "docker", None),
    (4026532001, {}, None, None, None),
    (None, {}, None, None, None),
])
def test_detect_init_netns(own, modes, pid1, container, expected):
    value, reason = env.detect_init_netns(own, modes, pid1, container)
    assert value is expected
    assert reason


def test_netns_inode():
    assert env.netns_inode("net:[4026531833]") == 4026531833
    assert env.netns_inode("mnt:[1]") is None
    assert env.netns_inode(None) is None


@pytest.mark.parametrize("kwargs, expected", [
    ({"containerenv": 'engine="podman-4.3.1"\nname="x"\n'}, ("podman", "/run/.containerenv")),
    ({"containerenv": ""}, ("podman", "/run/.containerenv")),
    ({"containerenv": 'engine="buildah-1.2"\n'}, ("buildah", "/run/.containerenv")),
    ({"dockerenv": True}, ("docker", "/.dockerenv")),
    ({"pid1_container_env": "lxc", "dockerenv": True}, ("lxc", "/proc/1/environ container=")),
    ({"systemd_container": "systemd-nspawn\n"}, ("systemd-nspawn", "/run/systemd/container")),
    ({"cgroup_text": "0::/kubepods/besteffort/pod1/abc\n"}, ("kubernetes", "/proc/1/cgroup")),
    ({"cgroup_text": "12:pids:/docker/0123abcd\n0::/\n"}, ("docker", "/proc/1/cgroup")),
    ({"cgroup_text": "0::/\n9:name=systemd:/\n"}, (None, None)),
    ({}, (None, None)),
])
def test_detect_container(kwargs, expected):
    assert env.detect_container(**kwargs) == expected


def test_parse_environ_container():
    assert env.parse_environ_container(b"PATH=/bin\0container=podman\0TERM=xterm\0") == "podman"
    assert env.parse_environ_container(b"PATH=/bin\0") is None
    assert env.parse_environ_container(None) is None


@pytest.mark.parametrize("target, version, expected", [
    ("/usr/sbin/iptables-nft", None, "nft"),
    ("/usr/sbin/iptables-legacy", None, "legacy"),
    ("/usr/sbin/xtables-nft-multi", None, "nft"),  # RHEL 8+
    ("/usr/sbin/xtables-legacy-multi", None, "legacy"),
    ("/sbin/xtables-multi", None, "legacy"),  # iptables < 1.8
    ("/usr/sbin/iptables", "iptables v1.8.9 (nf_tables)\n", "nft"),
    ("/usr/sbin/iptables", "iptables v1.8.7 (legacy)\n", "legacy"),
    ("/usr/sbin/iptables", "iptables v1.6.1\n", "legacy"),
    ("/usr/sbin/iptables", None, None),
    (None, None, None),
])
def test_detect_iptables_backend(target, version, expected):
    assert env.detect_iptables_backend(target, version) == expected


def test_split_writable_and_table_names():
    assert env.split_writable({"max": False, "udp_timeout": True, "count": False}) == \
        (["udp_timeout"], ["count", "max"])
    assert env.parse_table_names("filter\nnat\nfilter\n") == ["filter", "nat"]
    assert env.parse_table_names(None) == []


def test_knob_access_marks_hashsize_readonly_outside_init_netns(tmp_path):
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "nf_conntrack_udp_timeout").write_text("30\n")
    hashsize = tmp_path / "hashsize"
    hashsize.write_text("1024\n")
    access = env.knob_access(["udp_timeout", "max"], str(proc), str(hashsize), init_netns=False)
    assert access == {"udp_timeout": True, "hashsize": False}
    assert env.knob_access([], str(proc), str(hashsize), init_netns=True) == {"hashsize": True}


@pytest.mark.parametrize("text, expected", [
    ("MemTotal:       24600016 kB\nMemFree:        23000000 kB\n", 24023),
    ("MemFree:        1 kB\n", None),
    ("MemTotal: lots kB\n", None),
    ("", None),
    (None, None),
])
def test_parse_memtotal_mb(text, expected):
    assert env.parse_memtotal_mb(text) == expected


NFT_JSON = ('{"nftables": [{"metainfo": {"json_schema_version": 1}},'
            '{"table": {"family": "ip", "name": "filter", "handle": 1}},'
            '{"chain": {"family": "ip", "table": "filter", "name": "INPUT", "handle": 1, "type": "filter",'
            ' "hook": "input", "prio": 0, "policy": "accept"}},'
            '{"table": {"family": "inet", "name": "firewalld", "handle": 2}},'
            '{"chain": {"family": "inet", "table": "firewalld", "name": "filter_INPUT", "handle": 2, "type": "filter",'
            ' "hook": "input", "prio": 10, "policy": "accept"}},'
            '{"rule": {"family": "inet", "table": "firewalld", "chain": "filter_INPUT", "handle": 3,'
            ' "expr": [{"reject": null}]}}]}')


def test_netfilter_tables_owner_and_iptables_view():
    tables, reason = env.netfilter_tables(NFT_JSON)
    assert reason is None
    assert [(t["family"], t["name"], t["owner"], t["iptables_view"], t["rules"]) for t in tables] == [
        ("ip", "filter", "iptables-nft", True, 0), ("inet", "firewalld", "firewalld", False, 1)]
    assert tables[1]["base_chains"] == [{"name": "filter_INPUT", "type": "filter", "hook": "input", "priority": 10,
                                         "policy": "accept"}]


def test_netfilter_tables_bad_output():
    tables, reason = env.netfilter_tables("nft: not json")
    assert tables is None and "cannot parse" in reason
