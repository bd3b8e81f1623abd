"""The lab host tracks a real TCP connection once a conntrack rule exists (conntrack-tools as oracle)."""
import time

import pytest

HOLD = r"""
import socket, sys, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 18443)); srv.listen(1)
cli = socket.create_connection(("127.0.0.1", 18443), timeout=5)
conn, _ = srv.accept()
cli.sendall(b"ping"); assert conn.recv(4) == b"ping"
open("/tmp/hold.sport", "w").write(str(cli.getsockname()[1]))
time.sleep(60)
"""


@pytest.fixture
def held_connection(host):
    host.run("rm -f /tmp/hold.sport")
    cmd = host.run("setsid python3 -c '%s' >/dev/null 2>&1 < /dev/null & echo $!" % HOLD.replace("'", "'\"'\"'"))
    pid = int(cmd.stdout.strip())
    deadline = time.time() + 10
    while time.time() < deadline and not host.file("/tmp/hold.sport").exists:
        time.sleep(0.2)
    yield int(host.file("/tmp/hold.sport").content_string)
    host.run("kill %d" % pid)


def test_conntrack_rule_present(host):
    rules = host.run("iptables -S INPUT").stdout
    assert "--ctstate RELATED,ESTABLISHED" in rules and "-j ACCEPT" in rules


def test_real_tcp_connection_is_tracked(host, held_connection):
    out = host.run("conntrack -L -p tcp --dport 18443 2>/dev/null").stdout
    lines = [line for line in out.splitlines() if "sport=%d " % held_connection in line]
    assert len(lines) == 1, out
    assert " ESTABLISHED " in lines[0] and "[ASSURED]" in lines[0]


def test_host_is_a_separate_netns(host):
    # inside the lab host nf_conntrack_max is read-only: it is a host-scope knob
    result = host.run("sh -c 'echo 1 > /proc/sys/net/netfilter/nf_conntrack_max'")
    assert result.rc != 0


def test_lab_hosts_reach_each_other_only_over_their_switch(host):
    """Each host has eth0 on the scenario's private switch and no default route (no way out)."""
    routes = host.run("ip -4 route").stdout
    assert "default" not in routes, routes
    peer = "198.18.0.13" if host.backend.name == "foundation-debian12" else "198.18.0.12"
    probe = host.run("python3 -c 'import socket; s=socket.socket(); s.settimeout(3); print(s.connect_ex((\"%s\", 9)))'" % peer)
    # 111 = ECONNREFUSED: the peer answered with a RST, so the switch carries traffic between the hosts
    assert probe.stdout.strip() == "111", probe
