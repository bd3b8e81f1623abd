# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""This host's routes and addresses from the texts of /proc/net (private to the collection; pure: text in, data out).

The rule audit reads them as context: more than one routed interface means multi-homed (NGCT003), and a DNAT to one
of the host's own addresses needs no FORWARD accept (NGCT004).
"""

import ipaddress


def route_interfaces(route_text, ipv6_route_text):
    """Non-loopback interfaces that carry routes, from the texts of /proc/net/route and /proc/net/ipv6_route.

    More than one means the host is multi-homed (NGCT003). IPv6 multicast (ff00::/8) routes are ignored: every
    interface with IPv6 has one.
    """
    names = set()
    for line in (route_text or "").splitlines()[1:]:
        parts = line.split()
        if parts and parts[0] != "lo":
            names.add(parts[0])
    for line in (ipv6_route_text or "").splitlines():
        parts = line.split()
        if len(parts) == 10 and parts[9] != "lo" and not parts[0].startswith("ff"):
            names.add(parts[9])
    return sorted(names)


def local_addresses(fib_trie_text, if_inet6_text):
    """This host's own addresses, from /proc/net/fib_trie (``/32 host LOCAL`` leaves) and /proc/net/if_inet6."""
    found = set()
    last = None
    for line in (fib_trie_text or "").splitlines():
        text = line.strip()
        if text.startswith("|--") or text.startswith("+--"):
            last = text[3:].strip().split()[0]
        elif text.startswith("/32 host LOCAL") and last:
            found.add(last)
    for line in (if_inet6_text or "").splitlines():
        parts = line.split()
        if parts and len(parts[0]) == 32:
            try:
                found.add(str(ipaddress.IPv6Address(int(parts[0], 16))))
            except ValueError:
                continue
    return sorted(found)
