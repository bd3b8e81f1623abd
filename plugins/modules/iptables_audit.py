#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: iptables_audit
short_description: Lint the live iptables rule sets for conntrack mistakes
version_added: 0.1.0
description:
  - Reads the live rule sets of both families from both backends (C(iptables-nft-save) and C(iptables-legacy-save),
    whichever exist) and returns findings with stable ids, a severity, the offending rule and the fix.
  - "Finding ids: V(NGCT001) flows accepted whose ESTABLISHED/RELATED packets (later packets, replies, ICMP errors) are
    dropped, or replies to this host's own connections dropped (low for a rule set that never uses conntrack);
    V(NGCT002) the ESTABLISHED,RELATED accept comes after rate-limit drops that established packets hit (medium) or
    after expensive or LOG rules (low); V(NGCT003) unscoped INVALID drop in FORWARD (high severity when the host is
    multi-homed or C(nf_conntrack_tcp_be_liberal=1)); V(NGCT004) DNAT in nat PREROUTING to a non-local address while
    FORWARD drops and nothing accepts the DNATed flows; V(NGCT005) rules split across the nft and legacy backends;
    V(NGCT006) an ESTABLISHED,RELATED accept no established packet reaches (after an unconditional DROP or ACCEPT, a
    C(-j RETURN) or a goto), high when established packets are dropped instead; V(NGCT007) INVALID packets reach
    ACCEPT rules (medium; high in FORWARD when the host masquerades, because INVALID packets skip NAT; info when the
    chain accepts by default) or are answered by REJECT (low); V(NGCT008) C(-m state) instead of C(-m conntrack)
    (info); V(NGCT009) NOTRACK for packets the filter table would pass tracked but drops untracked."
  - "Reachability is evaluated by a path evaluator over the chain graph: for packet classes (conntrack state NEW,
    ESTABLISHED, RELATED, INVALID, UNTRACKED; local or forwarded; the family of the rule set) it follows jumps, gotos,
    RETURNs and the policies to the verdict. Each finding says which packets it affects (RV(findings[].affects))."
  - Rules of well-known tools (Docker, kube-proxy, Calico, ufw, fail2ban and others, recognised by their chain names
    and the interfaces their chains manage) are reported at low severity at most, because those tools rewrite them;
    the detail names the tool's hook chain for the fix.
  - The baseline written by M(nodeguard.conntrack.iptables_baseline) audits clean.
author:
  - nodeguard.conntrack contributors (@nodeguard)
extends_documentation_fragment:
  - nodeguard.conntrack.attributes
  - nodeguard.conntrack.attributes.INFO_MODULE
attributes:
  platform:
    platforms: posix
options:
  families:
    description: Address families to audit.
    type: list
    elements: str
    choices: [ipv4, ipv6]
    default: [ipv4, ipv6]
  backends:
    description: Backends to read; a backend whose save command is missing is skipped (and listed in RV(skipped)).
    type: list
    elements: str
    choices: [nft, legacy]
    default: [nft, legacy]
  multi_homed:
    description:
      - Whether the host routes over more than one interface. Unset means detected from C(/proc/net/route) and
        C(/proc/net/ipv6_route) (more than one non-loopback interface carrying routes).
    type: bool
  tcp_be_liberal:
    description: Whether C(nf_conntrack_tcp_be_liberal) is on. Unset means read from C(/proc/sys/net/netfilter).
    type: bool
  fail_on:
    description: Fail the task when a finding of this severity or higher exists. V(never) only reports.
    type: str
    choices: [never, low, medium, high]
    default: never
seealso:
  - module: nodeguard.conntrack.iptables_baseline
"""

EXAMPLES = r"""
- name: Audit the rule sets
  nodeguard.conntrack.iptables_audit:
  register: audit

- name: Gate CI on high-severity findings
  nodeguard.conntrack.iptables_audit:
    fail_on: high
"""

RETURN = r"""
findings:
  description: Findings, most severe first.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Stable id (V(NGCT001) ... V(NGCT009)).
      type: str
      sample: NGCT003
    severity:
      description: V(info), V(low), V(medium) or V(high).
      type: str
      sample: high
    title:
      description: What the mistake is.
      type: str
      sample: unscoped INVALID drop in FORWARD
    family:
      description: V(ipv4) or V(ipv6).
      type: str
      sample: ipv4
    backend:
      description: V(nft) or V(legacy).
      type: str
      sample: nft
    table:
      description: Table of the offending rule (V(filter), V(nat) for V(NGCT004), V(raw) for V(NGCT009)).
      type: str
      sample: filter
    chain:
      description: Chain of the offending rule.
      type: str
      sample: KUBE-FORWARD
    position:
      description: 1-based position of the rule in its chain; null when a chain's policy is the cause.
      type: int
      sample: 1
    rule:
      description: The rule as iptables-save prints it.
      type: str
      sample: -A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
    detail:
      description: Why this rule is a finding here.
      type: str
      sample: INVALID is dropped for every forwarded packet; the host is multi-homed
    affects:
      description: Which packets the finding affects (family, chain, state, the matching conditions) and what happens
        to them.
      type: str
      sample: "ipv4 FORWARD INVALID packets matching -i enp3s0 -o tun0: accepted and forwarded untranslated"
      version_added: 0.2.0
    fix:
      description: How to fix it.
      type: str
      sample: Scope the INVALID drop to the interfaces ...
summary:
  description: Number of findings per severity.
  returned: always
  type: dict
  sample: {"info": 0, "low": 1, "medium": 0, "high": 2}
sources:
  description: The save commands read, per family and backend.
  returned: always
  type: list
  elements: str
  sample: [/usr/sbin/iptables-nft-save]
skipped:
  description: Family/backend pairs not read, with the reason.
  returned: always
  type: list
  elements: str
  sample: ["ipv6/legacy: ip6tables-legacy-save not found"]
context:
  description: The context the findings were evaluated with.
  returned: always
  type: dict
  sample: {"multi_homed": false, "tcp_be_liberal": false, "local_addresses": ["10.0.0.1", "::1"]}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import NodeguardError, fail_json
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import apply as fw_apply
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import audit as fw_audit

SEVERITY_RANK = {"never": 99, "low": 1, "medium": 2, "high": 3}
RANK = {"info": 0, "low": 1, "medium": 2, "high": 3}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            families=dict(type="list", elements="str", choices=["ipv4", "ipv6"], default=["ipv4", "ipv6"]),
            backends=dict(type="list", elements="str", choices=["nft", "legacy"], default=["nft", "legacy"]),
            multi_homed=dict(type="bool"),
            tcp_be_liberal=dict(type="bool"),
            fail_on=dict(type="str", choices=["never", "low", "medium", "high"], default="never"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        host = fw_apply.Host(module)
        context = host.audit_context(params["multi_homed"], params["tcp_be_liberal"])
        rulesets, sources, skipped = host.read_rulesets(params["families"], params["backends"])
    except NodeguardError as exc:
        fail_json(module, exc)

    findings = fw_audit.audit(rulesets, context)
    result = dict(changed=False, findings=findings, summary=fw_audit.summary(findings), sources=sources,
                  skipped=skipped, context=context)
    threshold = SEVERITY_RANK[params["fail_on"]]
    worst = [f for f in findings if RANK[f["severity"]] >= threshold]
    if worst:
        module.fail_json(msg="%d finding(s) at or above %s severity, first: %s %s (%s)" % (
            len(worst), params["fail_on"], worst[0]["id"], worst[0]["title"], worst[0]["rule"]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
