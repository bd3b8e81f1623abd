"""unit_enable_links: the *.wants links systemctl enable made for a unit file, shared by both firewall engines."""
import os

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common import host_files


def test_unit_enable_links(tmp_path):
    unit = tmp_path / "nodeguard-conntrack-firewall.service"
    unit.write_text("[Unit]\n")
    for wants in ("multi-user.target.wants", "network-pre.target.wants", "other.d"):
        (tmp_path / wants).mkdir()
    os.symlink(str(unit), str(tmp_path / "network-pre.target.wants" / unit.name))
    os.symlink("/nonexistent", str(tmp_path / "multi-user.target.wants" / unit.name))  # dangling still counts
    os.symlink(str(unit), str(tmp_path / "other.d" / unit.name))  # not a .wants directory
    assert host_files.unit_enable_links(str(unit)) == [
        str(tmp_path / "multi-user.target.wants" / unit.name), str(tmp_path / "network-pre.target.wants" / unit.name)]
    assert host_files.unit_enable_links(str(tmp_path / "missing" / "x.service")) == []
