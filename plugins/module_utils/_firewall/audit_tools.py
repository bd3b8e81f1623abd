# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which rules of a rule set belong to a tool that manages its own chains (private to the collection; pure).

The audit reports a mistake in such a rule at low severity at most and names where the tool lets users put a fix.
"""

from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall.audit_paths import IFACE_KEYS, parse_rule

SEVERITIES = ("info", "low", "medium", "high")

# chain-name prefixes of tools that manage their own rules; a rule in (or reached through) such a chain, or a
# built-in chain's rule about an interface those chains manage, belongs to the tool
TOOL_PREFIXES = (("DOCKER", "Docker"), ("KUBE-", "kube-proxy"), ("cali-", "Calico"), ("ufw-", "ufw"),
                 ("ufw6-", "ufw"), ("f2b-", "fail2ban"), ("fail2ban-", "fail2ban"), ("sshguard", "sshguard"),
                 ("CNI-", "CNI plugins"), ("FLANNEL-", "flannel"), ("LIBVIRT_", "libvirt"), ("CILIUM_", "Cilium"),
                 ("WEAVE", "Weave"), ("FORWARD_", "firewalld"), ("INPUT_", "firewalld"), ("IN_", "firewalld"),
                 ("FWD_", "firewalld"))
TOOL_HOOKS = {"Docker": "DOCKER-USER", "kube-proxy": "a chain jumped to before KUBE-FORWARD",
              "ufw": "/etc/ufw/before.rules", "Calico": "a Calico GlobalNetworkPolicy or FelixConfiguration"}


class Tools(object):
    """Which rules belong to a well-known tool (by chain prefix, or by an interface the tool's chains manage)."""

    def __init__(self, table):
        self.ifaces = {}
        for chain in (table or {}).get("chains", []):
            tool = self.of_chain(chain)
            if not tool:
                continue
            for spec in table["rules"].get(chain, []):
                for key, value, _neg in parse_rule(spec)["atoms"]:
                    if key in IFACE_KEYS and not value.endswith("+"):
                        self.ifaces.setdefault(value, tool)

    @staticmethod
    def of_chain(chain):
        for prefix, tool in TOOL_PREFIXES:
            if chain.startswith(prefix):
                return tool
        return None

    def of_event(self, event):
        for chain in (event["chain"],) + tuple(event["path"]):
            tool = self.of_chain(chain)
            if tool:
                return tool
        for key, value, _neg in event["rule"]["atoms"]:
            if key in IFACE_KEYS and value in self.ifaces:
                return self.ifaces[value]
        return None


def cap(severity, tool):
    if tool and SEVERITIES.index(severity) > SEVERITIES.index("low"):
        return "low"
    return severity


def tool_note(tool):
    if not tool:
        return ""
    hook = TOOL_HOOKS.get(tool)
    return "; the rule is %s's (reported at low severity at most: %s manages it%s)" % (
        tool, tool, ", put the fix in %s" % hook if hook else "")
