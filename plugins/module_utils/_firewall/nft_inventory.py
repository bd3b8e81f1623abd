# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every netfilter table of the nf_tables backend, by family, owner and whether the iptables view covers it
(private to the collection).

Pure: a parsed rule set (``nft_ruleset.parse``) and, optionally, the text of /etc/nftables.conf in; a list of
tables out. The owner is read from the table's name and shape, the way an operator would:

- ``iptables-nft``: ip/ip6 tables named filter, nat, mangle, raw or security whose base chains carry the upper-case
  built-in names (INPUT, PREROUTING, ...). ``iptables-save`` (nft backend) shows exactly these, so they are the only
  ones the iptables view covers. ``ebtables-nft``/``arptables-nft`` (bridge/arp families) are not in it.
- ``firewalld`` (``firewalld``, ``firewalld_policy_drop``), ``docker`` (``docker-bridges``), ``kube-proxy``,
  ``libvirt`` (``libvirt_network``, ``libvirt_nwfilter``), ``incus``, ``lxd``, ``netavark`` (podman),
  ``nodeguard.conntrack`` (the table ``nftables_baseline`` owns);
- ``nftables.conf``: a table declared in /etc/nftables.conf (hand-written or the distribution's);
- ``unknown`` otherwise.
"""

import re

from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import nft_ruleset as _nft

XTABLES_TABLES = ("filter", "nat", "mangle", "raw", "security")
XTABLES_CHAINS = ("INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING")
OWNED_TABLE = "nodeguard_conntrack"
NAMED_OWNERS = (
    ("firewalld", "firewalld"),
    ("firewalld_policy_drop", "firewalld"),
    ("docker-bridges", "docker"),
    ("kube-proxy", "kube-proxy"),
    ("libvirt_network", "libvirt"),
    ("libvirt_nwfilter", "libvirt"),
    ("incus", "incus"),
    ("lxd", "lxd"),
    ("netavark", "netavark"),
    (OWNED_TABLE, "nodeguard.conntrack"),
)
_TABLE_RE = re.compile(r"^\s*(?:add\s+|create\s+)?table\s+(?:(ip|ip6|inet|arp|bridge|netdev)\s+)?([A-Za-z0-9_./-]+)",
                       re.M)
_FLUSH_RE = re.compile(r"^\s*flush\s+ruleset\b", re.M)
_INCLUDE_RE = re.compile(r'^\s*include\s+"([^"]+)"', re.M)


def nftables_conf(text):
    """What /etc/nftables.conf declares: tables, ``flush ruleset`` (deletes every other tool's table when
    nftables.service starts, reloads or stops), includes. None when the file does not exist."""
    if text is None:
        return None
    stripped = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    tables = sorted(set("%s %s" % (family or "ip", name) for family, name in _TABLE_RE.findall(stripped)))
    return {"tables": tables, "flush_ruleset": bool(_FLUSH_RE.search(stripped)),
            "includes": _INCLUDE_RE.findall(stripped)}


def owner(table, chains, conf_tables=()):
    """(owner, iptables view covers it) for one table dict and the list of its chain dicts."""
    family, name = table["family"], table["name"]
    base_names = set(chain["name"] for chain in chains if chain.get("hook"))
    if family in ("ip", "ip6") and name in XTABLES_TABLES and base_names and base_names <= set(XTABLES_CHAINS):
        return "iptables-nft", True
    if family in ("bridge", "arp") and base_names and base_names <= set(XTABLES_CHAINS + ("BROUTING",)):
        return ("ebtables-nft" if family == "bridge" else "arptables-nft"), False
    for prefix, who in NAMED_OWNERS:
        if name == prefix:
            return who, False
    if "%s %s" % (family, name) in conf_tables:
        return "nftables.conf", False
    return "unknown", False


def inventory(ruleset, nftables_conf_text=None):
    """One dict per table, in nft's order: family, name, owner, iptables_view, flags, base chains (name, type,
    hook, priority, policy), chain and rule counts."""
    conf = nftables_conf(nftables_conf_text)
    conf_tables = conf["tables"] if conf else []
    tables = []
    for table in ruleset["tables"]:
        chains = [chain for key, chain in ruleset["chains"].items()
                  if key[0] == table["family"] and key[1] == table["name"]]
        who, covered = owner(table, chains, conf_tables)
        bases = []
        hooked = [c for c in chains if c.get("hook")]
        for chain in sorted(hooked, key=lambda c: (c["hook"], _nft.priority(c), c["name"])):
            bases.append({"name": chain["name"], "type": chain.get("type"), "hook": chain["hook"],
                          "priority": _nft.priority(chain), "policy": chain.get("policy", "accept")})
        flags = table.get("flags") or []
        tables.append({
            "family": table["family"],
            "name": table["name"],
            "owner": who,
            "iptables_view": covered,
            "flags": sorted(flags) if isinstance(flags, list) else [flags],
            "base_chains": bases,
            "chains": len(chains),
            "rules": sum(len(chain["rules"]) for chain in chains),
        })
    return tables


def native_tables(tables):
    """The tables the iptables view does not show (what only an nft audit reads)."""
    return [table for table in tables or [] if not table.get("iptables_view")]
