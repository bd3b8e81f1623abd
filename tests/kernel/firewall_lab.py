"""Helpers for the firewall kernel tests (test_firewall_*.py): module runs with a custom environment, rule-set
snapshots that ignore counters, and seeded chains of other software (Docker, kube-proxy, fail2ban)."""
from __future__ import annotations

import os
from typing import Dict, List, Optional

from netns_lab import Netns, run, run_module

PREFIX = "NG-CT-"
BACKENDS = ("nft", "legacy")
FAMILIES = ("ipv4", "ipv6")
TOOL = {"ipv4": "iptables", "ipv6": "ip6tables"}


def _probe_legacy() -> None:
    """iptables-legacy needs the ip_tables/ip6_tables kernel code (module or built in). Say so clearly instead of
    failing deep inside a test (or, worse, skipping half the matrix quietly)."""
    name = "ngfwprobe%d" % os.getpid()
    run(["ip", "netns", "add", name])
    try:
        for tool in ("iptables-legacy", "ip6tables-legacy"):
            proc = run(["ip", "netns", "exec", name, tool, "-w", "-t", "filter", "-L", "-n"], check=False)
            if proc.returncode != 0:
                raise RuntimeError("%s is not usable on this machine (rc=%d: %s); the firewall tests cover both "
                                   "backends and need the ip_tables/ip6_tables kernel code (modprobe ip_tables "
                                   "ip6_tables)" % (tool, proc.returncode, proc.stderr.strip()))
    finally:
        run(["ip", "netns", "del", name], check=False)


_probe_legacy()


def module(ns: Netns, name: str, args: Dict, check_mode: bool = False, diff: bool = False,
           env: Optional[Dict[str, str]] = None) -> Dict:
    """Netns.run_module with extra environment variables (PATH override, SSH_CONNECTION)."""
    return run_module(name, args, check_mode=check_mode, diff=diff, prefix=ns.argv([]), env=env)


def save(ns: Netns, backend: str, family: str) -> str:
    return ns.run(["%s-%s-save" % (TOOL[family], backend)]).stdout


def rule_lines(text: str) -> List[str]:
    """iptables-save text without comments and counters: the comparable part."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith(":"):
            line = line.split(" [", 1)[0]
        out.append(line)
    return out


def foreign(text: str) -> List[str]:
    """Every line that is not ours (no NG-CT- chain, no jump into one): must stay byte-identical."""
    return [line for line in rule_lines(text) if PREFIX not in line]


def owned(text: str) -> List[str]:
    return [line for line in rule_lines(text) if PREFIX in line]


def restore(ns: Netns, backend: str, family: str, script: str) -> None:
    ns.run(["%s-%s-restore" % (TOOL[family], backend), "--noflush"], input_text=script)


SEED_V4 = """*filter
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-SERVICES - [0:0]
:f2b-sshd - [0:0]
-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER-USER -j RETURN
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j RETURN
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A f2b-sshd -s 203.0.113.66/32 -j REJECT --reject-with icmp-port-unreachable
-A f2b-sshd -j RETURN
COMMIT
*nat
:DOCKER - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
COMMIT
*raw
:KUBE-NOTRACK - [0:0]
-A PREROUTING -j KUBE-NOTRACK
-A KUBE-NOTRACK -p udp -m udp --dport 4789 -j CT --notrack
COMMIT
"""

SEED_V6 = """*filter
:DOCKER - [0:0]
:KUBE-SERVICES - [0:0]
:f2b-sshd - [0:0]
-A INPUT -p tcp -m multiport --dports 22 -j f2b-sshd
-A INPUT -m conntrack --ctstate NEW -j KUBE-SERVICES
-A FORWARD -o docker0 -j DOCKER
-A f2b-sshd -s 2001:db8:66::1/128 -j REJECT --reject-with icmp6-port-unreachable
-A f2b-sshd -j RETURN
COMMIT
*nat
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
COMMIT
*raw
:KUBE-NOTRACK - [0:0]
-A PREROUTING -j KUBE-NOTRACK
-A KUBE-NOTRACK -p udp -m udp --dport 4789 -j CT --notrack
COMMIT
"""


def seed_foreign(ns: Netns, backend: str) -> None:
    restore(ns, backend, "ipv4", SEED_V4)
    restore(ns, backend, "ipv6", SEED_V6)
