"""Helpers for the native-nftables kernel tests: the foreign rule sets in the shared reference, loading them into
a namespace, a TCP listener and a connect probe."""
from __future__ import annotations

import os
import subprocess
from typing import List

import shared_reference
from netns_lab import Netns, wait_line

NFT_REFERENCE_PARTS = ("reference", "rulesets", "nft")

LISTENER = r"""
import socket, sys
addr, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port)); s.listen(64)
print("ready", flush=True)
while True:
    conn, _ = s.accept()
    try:
        data = conn.recv(64)
        conn.sendall(data)
    except OSError:
        pass
    conn.close()
"""

CONNECT = r"""
import socket, sys
addr, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
s.settimeout(float(sys.argv[3]))
try:
    s.connect((addr, port)); s.sendall(b"ping"); print("ok" if s.recv(64) == b"ping" else "bad")
except OSError as exc:
    print("fail %s" % exc)
"""


def nft_reference() -> str:
    """The directory of the foreign nft rule sets; skip (fail under CI=true) when it is not there."""
    return shared_reference.require(*NFT_REFERENCE_PARTS)


def reference_files() -> List[str]:
    directory = shared_reference.find(*NFT_REFERENCE_PARTS)
    if directory is None:
        return []
    return sorted(name for name in os.listdir(directory) if name.endswith(".nft"))


def load_file(ns: Netns, path: str) -> None:
    """``nft -f`` a reference file into the namespace (libvirt's needs its bridge to exist first)."""
    if "libvirt" in os.path.basename(path):
        ns.run(["ip", "link", "add", "virbr0", "type", "veth", "peer", "name", "virbr0-peer"])
    ns.run(["nft", "-f", path])


def listen(ns: Netns, address: str, port: int):
    proc = ns.spawn(["python3", "-c", LISTENER, address, str(port)], stdout=subprocess.PIPE, text=True)
    wait_line(proc, "ready")
    return proc


def connects(ns: Netns, address: str, port: int, timeout: float = 2.0) -> bool:
    out = ns.run(["python3", "-c", CONNECT, address, str(port), str(timeout)], check=False,
                 timeout=timeout + 30).stdout.strip()
    return out == "ok"


HOLDER = r"""
import socket, sys
addr, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
s.settimeout(5)
s.connect((addr, port))
print("connected", flush=True)
for line in sys.stdin:
    try:
        s.sendall(line.strip().encode())
        print("reply %s" % s.recv(64).decode(), flush=True)
    except OSError as exc:
        print("reply-error %s" % exc, flush=True)
"""

ECHO = r"""
import socket, sys, threading
addr, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port)); s.listen(64)
print("ready", flush=True)
def serve(conn):
    while True:
        data = conn.recv(64)
        if not data:
            return
        conn.sendall(data)
while True:
    conn, _ = s.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


class HeldFlow:
    """One TCP connection kept open from ``client`` to an echo server in ``server``; ``exchange()`` proves it still
    carries data."""

    def __init__(self, server: Netns, client: Netns, address: str, port: int):
        wait_line(server.spawn(["python3", "-c", ECHO, "::" if ":" in address else "0.0.0.0", str(port)],
                               stdout=subprocess.PIPE, text=True), "ready")
        self.proc = client.spawn(["python3", "-c", HOLDER, address, str(port)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        wait_line(self.proc, "connected")

    def exchange(self, tag: str) -> bool:
        self.proc.stdin.write(tag + "\n")
        self.proc.stdin.flush()
        line = wait_line(self.proc, "reply", timeout=20)
        return line.strip() == "reply " + tag


def stateless_ruleset(ns: Netns) -> str:
    """``nft -s list ruleset``: the rule set without counter values (which move with traffic)."""
    return ns.run(["nft", "-s", "list", "ruleset"]).stdout


def without_table(listing: str, family: str, name: str) -> str:
    """The listing with one table's block removed."""
    out, skipping = [], False
    for line in listing.splitlines(keepends=True):
        if line.startswith("table %s %s {" % (family, name)):
            skipping = True
            continue
        if skipping:
            if line.startswith("}"):
                skipping = False
            continue
        out.append(line)
    return "".join(out)
