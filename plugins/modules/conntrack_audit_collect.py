#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: conntrack_audit_collect
short_description: Everything the fleet audit reads from a host, in one module run
version_added: 0.2.0
description:
  - Gathers, in one run on the managed node, what the M(nodeguard.conntrack.conntrack_facts),
    M(nodeguard.conntrack.conntrack_info) and M(nodeguard.conntrack.iptables_audit) modules return separately, for the
    C(nodeguard.conntrack.conntrack_audit) role, so the audit costs one remote round trip per host instead of five.
  - Conntrack facts, returned as C(ansible_facts.conntrack) exactly as M(nodeguard.conntrack.conntrack_facts) returns
    them.
  - Entry statistics from B(one) dump of the table (both families), that is entries by protocol and TCP state and the number
    of entries with destination and with source NAT. The dump is streamed and no entry is kept, so memory does not
    grow with the table.
  - The rule-set audit of M(nodeguard.conntrack.iptables_audit) (both families, both backends, findings with stable ids).
  - Entry statistics that cannot be read (no C(CAP_NET_ADMIN), conntrack not loaded) do not fail the module;
    RV(entry_stats) is V(null) and RV(entry_stats_error) says why.
author:
  - nodeguard.conntrack contributors (@nodeguard)
options:
  gather_subset:
    description:
      - Which conntrack facts to gather; the same values as O(nodeguard.conntrack.conntrack_facts#module:gather_subset).
    type: list
    elements: str
    default: ['all', '!events']
  events_window:
    description: With the V(events) subset, count kernel messages from the last O(events_window) seconds.
    type: int
    default: 3600
  entry_stats:
    description: Read the entry statistics (one dump of the table).
    type: bool
    default: true
  firewall:
    description: Audit the live rule sets as M(nodeguard.conntrack.iptables_audit) does.
    type: bool
    default: true
  families:
    description: Address families whose rule sets are audited.
    type: list
    elements: str
    choices: [ipv4, ipv6]
    default: [ipv4, ipv6]
  multi_homed:
    description:
      - Whether the host routes over more than one interface (rule-set audit). Unset means detected from the route
        tables, as O(nodeguard.conntrack.iptables_audit#module:multi_homed).
    type: bool
extends_documentation_fragment:
  - nodeguard.conntrack.attributes
  - nodeguard.conntrack.attributes.INFO_MODULE
  - nodeguard.conntrack.attributes.FACTS
attributes:
  platform:
    platforms: posix
    details: Linux with conntrack (nf_conntrack and nf_conntrack_netlink, built in or loadable).
notes:
  - The separate modules stay the tools for ad-hoc questions (filters, returned entries, C(fail_on)); this one serves
    the audit.
seealso:
  - module: nodeguard.conntrack.conntrack_facts
  - module: nodeguard.conntrack.conntrack_info
  - module: nodeguard.conntrack.iptables_audit
"""

EXAMPLES = r"""
- name: Collect what the audit needs in one module run
  nodeguard.conntrack.conntrack_audit_collect:
  register: collected

- name: Entries by state and the NAT counts
  ansible.builtin.debug:
    msg: "{{ collected.entry_stats.states }} / dnat {{ collected.entry_stats.nat.dnat }}"
  when: collected.entry_stats is not none

- name: Facts and entry statistics only, with table-full kernel messages of the last 10 minutes
  nodeguard.conntrack.conntrack_audit_collect:
    gather_subset: [all]
    events_window: 600
    firewall: false
"""

RETURN = r"""
ansible_facts:
  description: C(ansible_facts.conntrack), the same as M(nodeguard.conntrack.conntrack_facts) returns.
  returned: always
  type: dict
entry_stats:
  description: Entry statistics from one dump, V(null) when not read (see RV(entry_stats_error)).
  returned: always
  type: dict
  contains:
    states:
      description:
        - Entries by protocol and TCP state, largest first, in the shape of
          RV(nodeguard.conntrack.conntrack_info#module:groups) for C(group_by=[proto, state]).
      type: list
      elements: dict
      sample: [{"key": {"proto": "tcp", "state": "ESTABLISHED"}, "count": 42}, {"key": {"proto": "udp", "state": null}, "count": 7}]
    nat:
      description: Entries with destination NAT (C(dnat)) and with source NAT (C(snat)).
      type: dict
      sample: {"dnat": 3, "snat": 0}
    scanned:
      description: Entries the kernel sent.
      type: int
      sample: 49
    matched:
      description: Entries counted (all of them; no filter).
      type: int
      sample: 49
    dump_interrupted:
      description: Whether the table changed during the dump (counts may be off by the entries that changed).
      type: bool
      sample: false
entry_stats_error:
  description: Why the entry statistics were not read, V(null) when they were or were not asked for.
  returned: always
  type: str
  sample: "cannot read conntrack entries: Operation not permitted (run as root / with CAP_NET_ADMIN)"
firewall:
  description:
    - The rule-set audit, as M(nodeguard.conntrack.iptables_audit) returns it (RV(nodeguard.conntrack.iptables_audit#module:findings),
      C(summary), C(sources), C(skipped), C(context)); V(null) with O(firewall=false).
  returned: always
  type: dict
  sample: {"findings": [], "summary": {"info": 0, "low": 0, "medium": 0, "high": 0}, "sources": ["/usr/sbin/iptables-nft-save"],
           "skipped": [], "context": {"multi_homed": false, "tcp_be_liberal": false}}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import InputError, NodeguardError, fail_json
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import audit_collect as _audit_collect
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import facts as _ct_facts
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import apply as _fw_apply


def main():
    module = AnsibleModule(
        argument_spec=dict(
            gather_subset=dict(type="list", elements="str", default=list(_ct_facts.DEFAULT_GATHER_SUBSET)),
            events_window=dict(type="int", default=3600),
            entry_stats=dict(type="bool", default=True),
            firewall=dict(type="bool", default=True),
            families=dict(type="list", elements="str", choices=["ipv4", "ipv6"], default=["ipv4", "ipv6"]),
            multi_homed=dict(type="bool"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    firewall_host = _fw_apply.Host(module)

    def iptables_version(binary):
        rc, out, _err = firewall_host.run([binary, "-V"])
        return out if rc == 0 else None

    def nft_list():
        nft = firewall_host.which("nft")
        if not nft:
            return None, "nft not found"
        rc, out, err = firewall_host.run([nft, "-j", "list", "ruleset"])
        if rc != 0:
            return None, "nft -j list ruleset failed (rc=%d): %s" % (rc, err.strip())
        return out, None

    try:
        subsets = _ct_facts.resolve_subsets(params["gather_subset"])
        if params["events_window"] <= 0:
            raise InputError("events_window", "must be a positive integer, got %d" % params["events_window"])
        result, warnings = _audit_collect.collect(
            subsets, firewall_host, events_window=params["events_window"], entry_stats=params["entry_stats"],
            firewall=params["firewall"], families=params["families"], multi_homed=params["multi_homed"],
            run_iptables_version=iptables_version, run_nft_list=nft_list)
    except NodeguardError as exc:
        fail_json(module, exc)
    for warning in warnings:
        module.warn(warning)
    module.exit_json(changed=False, ansible_facts={"conntrack": result["facts"]}, entry_stats=result["entry_stats"],
                     entry_stats_error=result["entry_stats_error"], firewall=result["firewall"])


if __name__ == "__main__":
    main()
