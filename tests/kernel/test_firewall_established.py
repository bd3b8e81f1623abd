"""Nothing lost: 500 established TCP connections between two namespace hosts, routed through a forwarding namespace
that runs the baseline, each exchange data after every step (apply, re-apply, change, removal). 0 broken.

The change step closes the port the connections use to NEW flows: only the ESTABLISHED accept placed first keeps
them alive, which is what the test proves (a new connection to that port is refused at the same moment)."""

import subprocess

import pytest

from firewall_lab import module

CONNECTIONS = 500
PORT = 9100

SERVER = r"""
import resource, selectors, socket, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
addr, port = sys.argv[1], int(sys.argv[2])
lsock = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lsock.bind((addr, port)); lsock.listen(1024); lsock.setblocking(False)
sel = selectors.DefaultSelector(); sel.register(lsock, selectors.EVENT_READ, None)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        if key.data is None:
            conn, _ = lsock.accept(); conn.setblocking(False); sel.register(conn, selectors.EVENT_READ, 1)
            continue
        try:
            data = key.fileobj.recv(4096)
        except OSError:
            data = b""
        if not data:
            sel.unregister(key.fileobj); key.fileobj.close(); continue
        key.fileobj.sendall(data)
"""

CLIENT = r"""
import resource, selectors, socket, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
addr, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
family = socket.AF_INET6 if ":" in addr else socket.AF_INET
socks = []
for _ in range(count):
    s = socket.socket(family); s.settimeout(5); s.connect((addr, port)); s.setblocking(False); socks.append(s)
print("connected %d" % len(socks), flush=True)
for line in sys.stdin:
    tag = line.strip()
    sel = selectors.DefaultSelector()
    for index, s in enumerate(socks):
        msg = ("%s-%d\n" % (tag, index)).encode()
        try:
            s.send(msg)
        except OSError:
            continue
        sel.register(s, selectors.EVENT_READ, (msg, bytearray()))
    ok, deadline = 0, time.time() + 10
    while sel.get_map() and time.time() < deadline:
        for key, _ in sel.select(timeout=0.5):
            msg, buf = key.data
            try:
                data = key.fileobj.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(key.fileobj); continue
            buf += data
            if bytes(buf) == msg:
                ok += 1; sel.unregister(key.fileobj)
    sel.close()
    print("%s ok=%d broken=%d" % (tag, ok, count - ok), flush=True)
"""

FAMILY_ADDR = {
    "ipv4": ("10.92.1.2/24", "10.92.1.1/24", "10.92.2.1/24", "10.92.2.2/24", "10.92.1.0/24", "10.92.2.2"),
    "ipv6": ("fd00:92:1::2/64", "fd00:92:1::1/64", "fd00:92:2::1/64", "fd00:92:2::2/64", "fd00:92:1::/64",
             "fd00:92:2::2"),
}


def _connects(ns, address, port):
    code = ("import socket\ntry:\n socket.create_connection((%r, %d), timeout=2).close(); print('yes')\n"
            "except OSError: print('no')" % (address, port))
    return ns.python(code).stdout.strip() == "yes"


@pytest.mark.parametrize("backend,family", [("nft", "ipv4"), ("legacy", "ipv4"), ("nft", "ipv6"), ("legacy", "ipv6")])
def test_500_established_connections_survive_every_step(lab, backend, family):
    c_addr, r_addr1, r_addr2, s_addr, client_net, server_ip = FAMILY_ADDR[family]
    ver = "-6" if family == "ipv6" else "-4"
    client, router, server = lab.add("cl", conntrack_rule=False), lab.add("rt"), lab.add("sv", conntrack_rule=False)
    _c_dev, r_in = lab.link(client, c_addr, router, r_addr1)
    _r_out, _s_dev = lab.link(router, r_addr2, server, s_addr)
    client.run(["ip", ver, "route", "add", "default", "via", r_addr1.split("/")[0]])
    server.run(["ip", ver, "route", "add", "default", "via", r_addr2.split("/")[0]])
    # forwarding only inside the router namespace
    router.run(["sysctl", "-qw", "net.ipv4.ip_forward=1" if family == "ipv4" else "net.ipv6.conf.all.forwarding=1"])

    srv = server.spawn(["python3", "-c", SERVER, server_ip, str(PORT)], stdout=subprocess.PIPE, text=True)
    assert srv.stdout.readline().strip() == "ready"
    cli = client.spawn(["python3", "-c", CLIENT, server_ip, str(PORT), str(CONNECTIONS)],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert cli.stdout.readline().strip() == "connected %d" % CONNECTIONS

    def exchange(tag):
        cli.stdin.write(tag + "\n")
        cli.stdin.flush()
        return cli.stdout.readline().strip()

    assert exchange("before") == "before ok=%d broken=0" % CONNECTIONS
    families = [family]
    model = {"families": families, "backend": backend,
             "input": {"services": [{"ports": [22]}]},
             "forward": {"enabled": True, "final_action": "drop",
                         "invalid_drop": {"enabled": True, "in_interfaces": [r_in]},
                         "services": [{"ports": [PORT], "sources": [client_net]}]}}
    changed = {"families": families, "backend": backend,
               "input": {"services": [{"ports": [22]}], "final_action": "reject"},
               "forward": {"enabled": True, "final_action": "drop", "invalid_drop": {"enabled": True},
                           "services": [{"ports": [PORT + 1], "sources": [client_net]}]}}
    steps = [("apply", model, "present", True), ("reapply", model, "present", False),
             ("change", changed, "present", True), ("remove", changed, "absent", True)]
    for tag, args, state, expect_changed in steps:
        result = module(router, "iptables_baseline", dict(args, state=state))
        assert result["_rc"] == 0 and result["changed"] is expect_changed, (tag, result)
        assert exchange(tag) == "%s ok=%d broken=0" % (tag, CONNECTIONS)
        if tag == "apply":
            assert _connects(client, server_ip, PORT)  # declared: NEW allowed
        if tag == "change":
            assert not _connects(client, server_ip, PORT)  # no longer declared: NEW dropped, ESTABLISHED kept
    assert _connects(client, server_ip, PORT)
