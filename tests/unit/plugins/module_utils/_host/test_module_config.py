"""module_config: what loads nf_conntrack at boot and what blocks it, from file texts as kmod/systemd read them."""
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import tune as _tune
from ansible_collections.nodeguard.conntrack.plugins.module_utils._host import module_config as mc

OWNED_LOAD = _tune.HEADER + "# Load conntrack at boot\nnf_conntrack\n"


def test_owned_modules_load_file_and_hashsize_option():
    files = mc.effective_files([("/etc/modules-load.d", {"nodeguard-conntrack.conf": OWNED_LOAD,
                                                         "other.conf": "# nf_conntrack\nbr_netfilter\n"})])
    probe = mc.effective_files([("/etc/modprobe.d", {"nodeguard-conntrack.conf": _tune.render_modprobe(65536)})])
    got = mc.module_config(files, probe, "BOOT_IMAGE=/vmlinuz root=/dev/vda ro")
    assert got["load_at_boot"] == [{"path": "/etc/modules-load.d/nodeguard-conntrack.conf", "owned": True}]
    assert got["options"] == {"hashsize": {"value": "65536", "path": "/etc/modprobe.d/nodeguard-conntrack.conf",
                                           "owned": True}}
    assert got["blocked"] is None and got["blacklisted"] == [] and got["install"] is None


def test_etc_hides_same_name_in_lib_and_order_is_by_file_name():
    files = mc.effective_files([
        ("/etc/modprobe.d", {"b.conf": "options nf_conntrack hashsize=1024\n", "README": "options nf_conntrack x=1"}),
        ("/lib/modprobe.d", {"b.conf": "options nf_conntrack hashsize=9\n", "a.conf": "options nf_conntrack hashsize=5\n"}),
    ])
    assert [path for path, _text in files] == ["/lib/modprobe.d/a.conf", "/etc/modprobe.d/b.conf"]
    got = mc.module_config([], files)
    # the later file in name order wins for the same parameter; README is not a .conf file
    assert got["options"] == {"hashsize": {"value": "1024", "path": "/etc/modprobe.d/b.conf", "owned": False}}


def test_blacklist_alone_does_not_block_but_install_false_does():
    black = [("/etc/modprobe.d/x.conf", "blacklist nf_conntrack\n")]
    got = mc.module_config([], black)
    assert got["blacklisted"] == ["/etc/modprobe.d/x.conf"] and got["blocked"] is None
    got = mc.module_config([], black + [("/etc/modprobe.d/y.conf", "install nf-conntrack /bin/false\n")])
    assert got["install"] == {"command": "/bin/false", "path": "/etc/modprobe.d/y.conf"}
    assert "y.conf" in got["blocked"] and "/bin/false" in got["blocked"]


def test_install_that_runs_modprobe_is_not_a_block():
    got = mc.module_config([], [("/etc/modprobe.d/z.conf",
                                 "install nf_conntrack /sbin/modprobe --ignore-install nf_conntrack && logger x\n")])
    assert got["install"]["path"] == "/etc/modprobe.d/z.conf" and got["blocked"] is None


def test_other_modules_and_comments_are_ignored():
    got = mc.module_config([("/etc/modules-load.d/a.conf", "; nf_conntrack\nnf_conntrack_netlink\n")],
                           [("/etc/modprobe.d/a.conf", "# install nf_conntrack /bin/false\n"
                                                       "options nf_conntrack_ipv4 x=1\nblacklist nf_nat\n")])
    assert got["load_at_boot"] == [] and got["options"] == {} and got["blacklisted"] == [] and got["blocked"] is None


def test_kernel_command_line():
    got = mc.module_config([], [], "ro module_blacklist=foo,nf_conntrack quiet")
    assert got["blocked"].startswith("module_blacklist=nf_conntrack") and got["cmdline"]["blocked"]
    got = mc.module_config([], [], "modprobe.blacklist=nf_conntrack modules-load=nf_conntrack")
    assert got["blacklisted"] == ["/proc/cmdline"] and got["load_at_boot"] == [{"path": "/proc/cmdline", "owned": False}]
    assert got["blocked"] is None


def test_continued_lines_are_joined():
    got = mc.module_config([], [("/etc/modprobe.d/a.conf", "options nf_conntrack \\\n  hashsize=2048\n")])
    assert got["options"]["hashsize"]["value"] == "2048"


def test_reads_real_files(tmp_path, monkeypatch):
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    etc.mkdir()
    lib.mkdir()
    (etc / "nodeguard-conntrack.conf").write_text(OWNED_LOAD)
    (lib / "nodeguard-conntrack.conf").write_text("nf_conntrack_other\n")
    monkeypatch.setattr(mc, "MODULES_LOAD_DIRS", (str(etc), str(lib)))
    monkeypatch.setattr(mc, "MODPROBE_DIRS", (str(tmp_path / "missing"),))
    monkeypatch.setattr(mc, "CMDLINE", str(tmp_path / "no-cmdline"))
    got = mc.read_module_config()
    assert got["load_at_boot"] == [{"path": str(etc / "nodeguard-conntrack.conf"), "owned": True}]
    assert got["cmdline"] == {"modules_load": False, "blocked": False, "blacklisted": False}
