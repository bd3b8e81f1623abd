"""Packet probes for the firewall kernel tests: each one sends real packets from inside a namespace and reports what
came back, so a test asks "which packets pass" with packets (TCP connect from a chosen source port, UDP request and
answer, servers that listen on many ports in both families)."""
from __future__ import annotations

import subprocess
import sys

from netns_lab import Netns

# TCP and UDP servers on the given ports, both families; UDP answers "<name>:<port>:<peer address>".
SERVER = r"""
import selectors, socket, sys
name, tcp_ports, udp_ports = sys.argv[1], sys.argv[2], sys.argv[3]
sel = selectors.DefaultSelector()
def listen(kind, port):
    for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        s = socket.socket(fam, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((addr, port))
        if kind == socket.SOCK_STREAM:
            s.listen(64)
        sel.register(s, selectors.EVENT_READ, kind)
for port in filter(None, tcp_ports.split(",")):
    listen(socket.SOCK_STREAM, int(port))
for port in filter(None, udp_ports.split(",")):
    listen(socket.SOCK_DGRAM, int(port))
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        if key.data == socket.SOCK_STREAM:
            conn, _ = key.fileobj.accept(); conn.close()
        else:
            data, peer = key.fileobj.recvfrom(4096)
            port = key.fileobj.getsockname()[1]
            key.fileobj.sendto(("%s:%d:%s" % (name, port, peer[0])).encode(), peer)
"""

_TCP_PROBE = r"""
import socket, sys
address, port, sport, source = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[5]
s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if sport or source:
    s.bind((source, sport))
s.settimeout(float(sys.argv[4]))
try:
    s.connect((address, port)); print("open")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
except OSError as exc:
    print("error %s" % exc)
"""

_UDP_PROBE = r"""
import socket, sys
address, port, sport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if sport:
    s.bind(("", sport))
s.settimeout(float(sys.argv[4]))
try:
    s.sendto(b"q", (address, port)); print(s.recv(4096).decode())
except socket.timeout:
    print("timeout")
except OSError as exc:
    print("error %s" % exc)
"""


def serve(ns: Netns, name: str, tcp=(), udp=()) -> subprocess.Popen:
    """Start SERVER in ns (ended at lab teardown) and wait until it listens."""
    proc = ns.spawn([sys.executable, "-c", SERVER, name, ",".join(map(str, tcp)), ",".join(map(str, udp))],
                    stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def tcp(ns: Netns, address: str, port: int, sport: int = 0, timeout: float = 1.5, source: str = "") -> str:
    """'open', 'refused' (the SYN passed and a RST came back) or 'timeout' (dropped); from ``source`` if given."""
    return ns.run([sys.executable, "-c", _TCP_PROBE, address, str(port), str(sport), str(timeout),
                   source]).stdout.strip()


def udp(ns: Netns, address: str, port: int, sport: int = 0, timeout: float = 1.5) -> str:
    """The server's answer ('name:port:peer as the server saw it') or 'timeout'."""
    return ns.run([sys.executable, "-c", _UDP_PROBE, address, str(port), str(sport), str(timeout)]).stdout.strip()
