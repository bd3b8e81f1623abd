# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host half of the rule-set audit (private to the collection): read the live rule sets and audit them.

Shared by the iptables_audit and conntrack_audit_collect modules. Commands run through two callables the module
passes in (``find_binary(name) -> path or None`` and ``run(argv) -> (rc, stdout, stderr)``); the context (routes,
nf_conntrack_tcp_be_liberal) is read from /proc unless given. The findings come from the pure ``audit.audit``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.host_files import read_or_none
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import audit as fw_audit
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import save_parser as fw_save

TOOLS = {"ipv4": "iptables", "ipv6": "ip6tables"}
FAMILIES = ("ipv4", "ipv6")
BACKENDS = ("nft", "legacy")
TCP_BE_LIBERAL = "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal"


class RuleSetReadError(Exception):
    """A save command printed something the parser does not understand (the message names the command)."""


def audit_context(multi_homed=None, tcp_be_liberal=None):
    """The context findings depend on: given values win, unset ones are read from /proc."""
    context = {}
    if multi_homed is None:
        interfaces = fw_audit.route_interfaces(read_or_none("/proc/net/route"), read_or_none("/proc/net/ipv6_route"))
        context["multi_homed"] = len(interfaces) > 1
        context["route_interfaces"] = interfaces
    else:
        context["multi_homed"] = multi_homed
    if tcp_be_liberal is None:
        context["tcp_be_liberal"] = (read_or_none(TCP_BE_LIBERAL) or "0").strip() == "1"
    else:
        context["tcp_be_liberal"] = tcp_be_liberal
    return context


def read_rulesets(families, backends, find_binary, run):
    """Run ``<tool>-<backend>-save`` per family and backend; returns (rulesets, sources, skipped)."""
    rulesets, sources, skipped = [], [], []
    for family in families:
        for backend in backends:
            name = "%s-%s-save" % (TOOLS[family], backend)
            path = find_binary(name)
            if not path:
                skipped.append("%s/%s: %s not found" % (family, backend, name))
                continue
            rc, out, err = run([path])
            if rc != 0:
                skipped.append("%s/%s: %s failed (rc=%d): %s" % (family, backend, name, rc, err.strip()))
                continue
            try:
                ruleset = fw_save.parse_save(out)
            except fw_save.SaveParseError as exc:
                raise RuleSetReadError("cannot parse %s output: %s" % (name, exc))
            sources.append(path)
            rulesets.append({"family": family, "backend": backend, "ruleset": ruleset})
    return rulesets, sources, skipped


def audit_host(find_binary, run, families=FAMILIES, backends=BACKENDS, multi_homed=None, tcp_be_liberal=None):
    """The iptables_audit result: {findings, summary, sources, skipped, context}. Raises RuleSetReadError."""
    context = audit_context(multi_homed, tcp_be_liberal)
    rulesets, sources, skipped = read_rulesets(families, backends, find_binary, run)
    findings = fw_audit.audit(rulesets, context)
    return dict(findings=findings, summary=fw_audit.summary(findings), sources=sources, skipped=skipped,
                context=context)
