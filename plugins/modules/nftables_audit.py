#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: nftables_audit
short_description: Lint the live native nftables rule set for conntrack mistakes
version_added: 0.2.0
description:
  - Reads C(nft -j list ruleset) and returns every table (family, owner, whether the iptables view covers it) and
    findings with stable ids, a severity, the offending rule and the fix.
  - "Finding ids: V(NGNF001) NEW accepted with no ct state established,related accept before it in a chain that
    drops by default; V(NGNF002) established,related accept after dropping or logging rules; V(NGNF003) unscoped ct
    state invalid drop on the forward hook (high when multi-homed or C(nf_conntrack_tcp_be_liberal=1), medium when
    the forward rules name several interfaces, low otherwise); V(NGNF004) DNAT while a forward chain drops the
    DNATed flows; V(NGNF005) an accept in one base chain overridden by another base chain (of any table) on the same
    hook that drops; V(NGNF006) notrack with no ct state untracked or stateless accept; V(NGNF007) ICMPv6 accepted by
    C(ip6 nexthdr); V(NGNF008) C(/etc/nftables.conf) flushes the whole rule set while other tools' tables exist."
  - Every base chain is read along the packet path per address family, following jumps, gotos and verdict maps;
    base chains of different tables on the same hook are compared in priority order. A final unconditional drop
    or reject rule counts as a drop policy.
  - The tables iptables-nft writes are left to M(nodeguard.conntrack.iptables_audit), which reads them in their
    own terms; this module lists them in RV(tables) with RV(tables[].iptables_view=true).
author:
  - nodeguard.conntrack contributors (@nodeguard)
extends_documentation_fragment:
  - nodeguard.conntrack.attributes
  - nodeguard.conntrack.attributes.INFO_MODULE
attributes:
  platform:
    platforms: posix
options:
  multi_homed:
    description:
      - Whether the host routes over more than one interface. Unset means detected from C(/proc/net/route) and
        C(/proc/net/ipv6_route) (more than one non-loopback interface carrying routes).
    type: bool
  tcp_be_liberal:
    description: Whether C(nf_conntrack_tcp_be_liberal) is on. Unset means read from C(/proc/sys/net/netfilter).
    type: bool
  nftables_conf:
    description:
      - The file C(nftables.service) loads; read to name its tables' owner and for V(NGNF008). A missing file is
        fine.
    type: path
    default: /etc/nftables.conf
  fail_on:
    description: Fail the task when a finding of this severity or higher exists. V(never) only reports.
    type: str
    choices: [never, low, medium, high]
    default: never
requirements:
  - the C(nft) command (nftables 0.9.3 or later for C(-j)); root or C(CAP_NET_ADMIN) to list the rule set.
seealso:
  - module: nodeguard.conntrack.iptables_audit
  - module: nodeguard.conntrack.nftables_baseline
"""

EXAMPLES = r"""
- name: Audit the native nftables rule set
  nodeguard.conntrack.nftables_audit:
  register: nft_audit

- name: Gate CI on high-severity findings
  nodeguard.conntrack.nftables_audit:
    fail_on: high
"""

RETURN = r"""
findings:
  description: Findings, most severe first. An inet rule found for both families is reported once.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Stable id (V(NGNF001) ... V(NGNF008)).
      type: str
      sample: NGNF005
    severity:
      description: V(low), V(medium) or V(high).
      type: str
      sample: medium
    title:
      description: What the mistake is.
      type: str
    family:
      description: nft family of the table (V(inet), V(ip), V(ip6)); V(null) for NGNF008.
      type: str
      sample: inet
    table:
      description: Table of the offending rule.
      type: str
      sample: filter
    chain:
      description: Chain of the offending rule.
      type: str
      sample: input
    position:
      description: 1-based position of the rule in its chain.
      type: int
      sample: 2
    handle:
      description: The rule's handle (C(nft -a list ruleset)).
      type: int
    rule:
      description: The rule, roughly as C(nft list ruleset) prints it.
      type: str
      sample: udp dport 53 accept
    hook:
      description: Hook of the base chain the rule was reached from.
      type: str
    priority:
      description: Priority of that base chain.
      type: int
    nfprotos:
      description: Address families (V(ipv4), V(ipv6)) the finding holds for.
      type: list
      elements: str
    detail:
      description: Why this rule is a finding here.
      type: str
    fix:
      description: How to fix it.
      type: str
summary:
  description: Number of findings per severity.
  returned: always
  type: dict
  sample: {"info": 0, "low": 1, "medium": 0, "high": 1}
tables:
  description: Every nf_tables table, in nft's order.
  returned: always
  type: list
  elements: dict
  contains:
    family:
      description: V(ip), V(ip6), V(inet), V(arp), V(bridge) or V(netdev).
      type: str
    name:
      description: Table name.
      type: str
    owner:
      description: V(iptables-nft), V(ebtables-nft), V(arptables-nft), V(firewalld), V(docker), V(kube-proxy),
        V(libvirt), V(incus), V(lxd), V(netavark), V(nodeguard.conntrack), V(nftables.conf) (declared in the
        O(nftables_conf) file) or V(unknown).
      type: str
    iptables_view:
      description: Whether C(iptables-save)/C(ip6tables-save) show this table.
      type: bool
    base_chains:
      description: Base chains (name, type, hook, priority, policy), by hook and priority.
      type: list
      elements: dict
    chains:
      description: Number of chains.
      type: int
    rules:
      description: Number of rules.
      type: int
    flags:
      description: Table flags (V(owner), V(persist), V(dormant)).
      type: list
      elements: str
context:
  description: The context the findings were evaluated with.
  returned: always
  type: dict
source:
  description: The nft command run, or V(null) when nft is missing (then nothing was audited and RV(skipped) says why).
  returned: always
  type: str
skipped:
  description: Why nothing was audited (no nft command), or an empty string.
  returned: always
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import HostError, NodeguardError, \
    fail_json
from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.host_files import read_or_none
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import apply as fw_apply
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import nft_audit
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import nft_inventory
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import nft_ruleset

SEVERITY_RANK = {"never": 99, "low": 1, "medium": 2, "high": 3}
RANK = {"info": 0, "low": 1, "medium": 2, "high": 3}
SERVICE_LINKS = ("/etc/systemd/system/sysinit.target.wants/nftables.service",
                 "/etc/systemd/system/multi-user.target.wants/nftables.service")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            multi_homed=dict(type="bool"),
            tcp_be_liberal=dict(type="bool"),
            nftables_conf=dict(type="path", default="/etc/nftables.conf"),
            fail_on=dict(type="str", choices=["never", "low", "medium", "high"], default="never"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    result = dict(changed=False, findings=[], summary=nft_audit.summary([]), tables=[], context={}, source=None,
                  skipped="")
    try:
        host = fw_apply.Host(module)
        context = host.audit_context(params["multi_homed"], params["tcp_be_liberal"])
        conf_text = read_or_none(params["nftables_conf"])
        context["nftables_conf_path"] = params["nftables_conf"]
        context["nftables_conf"] = nft_inventory.nftables_conf(conf_text)
        context["nftables_service_enabled"] = any(os.path.lexists(path) for path in SERVICE_LINKS)
        result["context"] = context
        nft = host.which("nft")
        if not nft:
            result["skipped"] = "nft not found: no native nftables rule set could be read"
            module.exit_json(**result)
        argv = [nft, "-j", "list", "ruleset"]
        rc, out, err = host.run(argv)
        if rc != 0:
            raise HostError("%s failed (rc=%d): %s" % (" ".join(argv), rc, err.strip()))
        ruleset = nft_ruleset.parse(out)
    except NodeguardError as exc:
        fail_json(module, exc, **result)
    tables = nft_inventory.inventory(ruleset, conf_text)
    findings = nft_audit.audit(ruleset, context, tables)
    result.update(findings=findings, summary=nft_audit.summary(findings), tables=tables, source=" ".join(argv))
    threshold = SEVERITY_RANK[params["fail_on"]]
    worst = [f for f in findings if RANK[f["severity"]] >= threshold]
    if worst:
        module.fail_json(msg="%d finding(s) at or above %s severity, first: %s %s (%s)" % (
            len(worst), params["fail_on"], worst[0]["id"], worst[0]["title"], worst[0]["rule"]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
