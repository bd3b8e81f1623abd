"""The lockout guard with a real session: a TCP connection to port 22 of a namespace stands in for the controller's
SSH session, SSH_CONNECTION carries its real addresses and ports. Rules that would cut it (a DROP policy on OUTPUT
without an OUTPUT accept, turning the INPUT section off under a DROP policy) are refused before anything changes,
and the session keeps working; the same rules applied with the guard off really do cut it. Also seen through a
parent process when sudo removed SSH_CONNECTION from the module's environment."""

import subprocess
import sys

import pytest

import traffic
from firewall_lab import module, rule_lines, save
from netns_lab import run_module

# A client that keeps one TCP connection to port 22 and answers "ok"/"lost" per line on stdin (echo within 2 s).
SESSION = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], 22), timeout=5)
print("ready %s %d %s %d" % (s.getsockname()[:2] + s.getpeername()[:2]), flush=True)
for line in sys.stdin:
    try:
        s.sendall(b"x"); s.settimeout(2); print("ok" if s.recv(16) else "lost", flush=True)
    except OSError:
        print("lost", flush=True)
"""
ECHO = r"""
import socket, threading
srv = socket.socket(socket.AF_INET6); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("::", 22)); srv.listen(8)
def serve(conn):
    while True:
        data = conn.recv(16)
        if not data:
            return
        conn.sendall(data)
print("ready", flush=True)
while True:
    threading.Thread(target=serve, args=(srv.accept()[0],), daemon=True).start()
"""


def _session(lab, address):
    client, server = lab.add("cl", False), lab.add("sv", False)
    lab.link(client, "10.94.0.1/24", server, "10.94.0.2/24")
    lab.link(client, "fd00:94::1/64", server, "fd00:94::2/64")
    echo = server.spawn([sys.executable, "-c", ECHO], stdout=subprocess.PIPE, text=True)
    assert echo.stdout.readline().strip() == "ready"
    session = client.spawn([sys.executable, "-c", SESSION, address], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           text=True)
    ready = session.stdout.readline().split()
    assert ready[0] == "ready", ready
    return client, server, session, " ".join(ready[1:])


def _alive(session):
    session.stdin.write("ping\n")
    session.stdin.flush()
    return session.stdout.readline().strip() == "ok"


@pytest.mark.parametrize("address", ["10.94.0.2", "fd00:94::2"])
@pytest.mark.parametrize("case", ["output_policy", "input_off"])
def test_guard_refuses_what_would_cut_the_session(lab, address, case):
    client, server, session, ssh_connection = _session(lab, address)
    env = {"SSH_CONNECTION": ssh_connection}
    base = {"backend": "nft", "state_dir": "/tmp/ngct-unused"}
    if case == "output_policy":
        model = dict(base, policies={"output": "DROP"})
    else:
        # the baseline runs under a DROP INPUT policy another tool set; then its INPUT section is turned off
        first = dict(base, input={"services": [{"ports": [22]}]})
        result = module(server, "iptables_baseline", first, env=env)
        assert result["_rc"] == 0 and result["changed"], result
        for tool in ("iptables-nft", "ip6tables-nft"):
            server.run([tool, "-w", "-P", "INPUT", "DROP"])
        model = dict(base, input={"enabled": False})
    assert _alive(session)
    before = [rule_lines(save(server, "nft", family)) for family in ("ipv4", "ipv6")]
    result = module(server, "iptables_baseline", model, env=env)
    assert result.get("failed") is True and "lockout guard" in result["msg"], result
    assert [rule_lines(save(server, "nft", family)) for family in ("ipv4", "ipv6")] == before
    assert _alive(session)
    # without the guard the same rules really cut the session (what the guard is for)
    result = module(server, "iptables_baseline", dict(model, lockout_guard=False), env=env)
    assert result["_rc"] == 0 and result["changed"], result
    assert not _alive(session)
    assert traffic.tcp(client, address, 22) == "timeout"


def test_guard_finds_the_session_when_sudo_dropped_ssh_connection(lab):
    client, server, session, ssh_connection = _session(lab, "10.94.0.2")
    # the module runs as the child of a shell that holds SSH_CONNECTION, with the variable removed (as sudo does)
    prefix = server.argv(["sh", "-c", 'env -u SSH_CONNECTION "$@"; exit $?', "sh"])
    result = run_module("iptables_baseline", {"backend": "nft", "state_dir": "/tmp/ngct-unused",
                                              "policies": {"output": "DROP"}},
                        prefix=prefix, env={"SSH_CONNECTION": ssh_connection})
    assert result.get("failed") is True and "lockout guard" in result["msg"], result
    assert _alive(session)
