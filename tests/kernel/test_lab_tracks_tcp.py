"""Foundation check of the kernel tier: a namespace host tracks a real TCP connection once a
conntrack rule exists, and not before. conntrack-tools is the oracle."""

import subprocess

from netns_lab import run, wait_line

SERVER = r"""
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("198.51.100.2", 8080)); srv.listen(8)
print("ready", flush=True)
conn, _ = srv.accept()
while True:
    data = conn.recv(64)
    if not data:
        break
    conn.sendall(data)
"""

CLIENT = r"""
import socket, sys, time
c = socket.create_connection(("198.51.100.2", 8080), timeout=5)
c.sendall(b"ping"); assert c.recv(64) == b"ping"
print("connected", c.getsockname()[1], flush=True)
time.sleep(30)
"""


def _tracked(ns):
    proc = ns.run(["conntrack", "-L", "-p", "tcp", "--dport", "8080"], check=False)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if "dport=8080" in line]


def test_untracked_until_rule_then_established(lab):
    server_ns = lab.add("srv", conntrack_rule=False)
    client_ns = lab.add("cli", conntrack_rule=False)
    lab.link(client_ns, "198.51.100.1/24", server_ns, "198.51.100.2/24")

    # no rule using conntrack yet: the server namespace tracks nothing
    server = server_ns.spawn(["python3", "-c", SERVER], stdout=subprocess.PIPE, text=True)
    wait_line(server, "ready")
    assert _tracked(server_ns) == []

    server_ns.run(["iptables", "-w", "-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED",
                   "-j", "ACCEPT"])
    client = client_ns.spawn(["python3", "-c", CLIENT], stdout=subprocess.PIPE, text=True)
    sport = int(wait_line(client, "connected").split()[1])

    lines = _tracked(server_ns)
    assert len(lines) == 1, lines
    assert "ESTABLISHED" in lines[0] and "src=198.51.100.1" in lines[0] and "sport=%d" % sport in lines[0]
    # the entry is visible to the kernel count of this namespace only
    count = int(server_ns.run(["cat", "/proc/sys/net/netfilter/nf_conntrack_count"]).stdout)
    assert count >= 1
    root_lines = run(["conntrack", "-L", "-p", "tcp", "--dport", "8080", "-s", "198.51.100.1"], check=False).stdout
    assert "198.51.100.1" not in root_lines
