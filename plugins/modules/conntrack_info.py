#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: conntrack_info
short_description: Query conntrack entries and NAT mappings, with filters and group-by
version_added: 0.1.0
description:
  - Reads the connection tracking table of the network namespace the module runs in over ctnetlink, with the
    Python standard library only; conntrack-tools does not need to be installed.
  - Streams the table, so memory does not grow with the number of entries unless entries are returned; counting
    or grouping a table of hundreds of thousands of entries is cheap.
  - Filters are pushed to the kernel where it supports them (mark and zone; status flags from Linux 5.19;
    exact addresses, protocol and ports from Linux 5.8) and always re-checked in userspace.
  - Each returned entry carries both tuples and a RV(entries[].nat) view saying what DNAT and SNAT rewrote.
  - Needs CAP_NET_ADMIN in the network namespace (root); fails with a clear message otherwise.
author:
  - nodeguard.conntrack contributors (@nodeguard)
extends_documentation_fragment:
  - nodeguard.conntrack.attributes
  - nodeguard.conntrack.entry_filters
  - nodeguard.conntrack.attributes.INFO_MODULE
attributes:
  platform:
    platforms: posix
    details: Linux with conntrack (nf_conntrack and nf_conntrack_netlink, built in or loadable).
options:
  group_by:
    description:
      - Count matching entries per value of these fields and return the largest groups in RV(groups).
      - V(family), V(proto), V(state), V(orig_src), V(orig_dst), V(orig_sport), V(orig_dport), V(reply_src),
        V(reply_dst), V(reply_sport), V(reply_dport), V(mark), V(zone), V(assured).
      - V(dnat) and V(snat) (version 0.2.0) group by whether destination or source NAT applies to the entry
        (true or false), so one dump counts NAT entries next to other groups.
    type: list
    elements: str
  top:
    description:
      - How many groups to return, largest first. V(0) returns every group.
    type: int
    default: 10
  limit:
    description:
      - At most this many matching entries are returned in RV(entries); RV(total_matched) counts all of them.
        V(0) returns counts and groups only. At most 10000.
    type: int
    default: 100
notes:
  - Entries are read from the network namespace the module runs in; containers and pods have their own tables.
  - Kernel-side filtering only skips work; every entry is re-checked against the whole filter.
seealso:
  - module: nodeguard.conntrack.conntrack_flush
"""

EXAMPLES = r"""
- name: Flows of one backend (the reply comes from the real backend after DNAT)
  nodeguard.conntrack.conntrack_info:
    reply_src: 10.0.1.10
    proto: tcp
    limit: 20
  register: backend_flows

- name: NAT mappings of a virtual IP
  nodeguard.conntrack.conntrack_info:
    orig_dst: 203.0.113.10
    orig_dport: 443
    status: [dnat]
  register: vip

- name: Print what the VIP was translated to
  ansible.builtin.debug:
    msg: "{{ vip.entries | map(attribute='nat.summary') | list }}"

- name: Count TCP entries by state, returning no entries
  nodeguard.conntrack.conntrack_info:
    proto: tcp
    group_by: state
    top: 0
    limit: 0
  register: by_state

- name: Top talkers among unreplied UDP flows
  nodeguard.conntrack.conntrack_info:
    proto: udp
    status: unreplied
    group_by: [orig_src]
    top: 5
    limit: 0

- name: Entries of a zone carrying a mark bit
  nodeguard.conntrack.conntrack_info:
    zone: 7
    mark: 0x100
    mark_mask: 0x100
"""

RETURN = r"""
total_matched:
  description: Number of entries that matched the filter (all of them, not only those returned).
  returned: success
  type: int
  sample: 3
scanned:
  description: Number of entries the kernel sent; less than the table size when the kernel filtered.
  returned: success
  type: int
  sample: 120
truncated:
  description: V(true) when more entries matched than O(limit) allowed to return.
  returned: success
  type: bool
  sample: false
kernel_filter:
  description: Whether filter attributes were sent to the kernel with the dump request.
  returned: success
  type: bool
  sample: true
families:
  description: Address families dumped.
  returned: success
  type: list
  elements: str
  sample: [ipv4]
filter:
  description: The normalised filter that was applied.
  returned: success
  type: dict
  sample: {"family": ["ipv4"], "proto": "tcp", "reply_src": ["10.0.1.10/32"]}
groups:
  description:
    - The largest groups of matching entries by O(group_by), largest first; empty without O(group_by).
  returned: success
  type: list
  elements: dict
  contains:
    key:
      description: The value of each O(group_by) field (addresses as text, states by name).
      type: dict
      sample: {"state": "ESTABLISHED"}
    count:
      description: Number of matching entries with this key.
      type: int
      sample: 42
groups_total:
  description: Number of distinct groups before O(top) was applied.
  returned: success
  type: int
  sample: 3
entries:
  description: The first O(limit) matching entries, in kernel dump order.
  returned: success
  type: list
  elements: dict
  contains:
    family:
      description: V(ipv4) or V(ipv6).
      type: str
    proto:
      description: Layer 4 protocol name (or number as text when unknown).
      type: str
    proto_num:
      description: Layer 4 protocol number.
      type: int
    original:
      description: Tuple of the original direction with C(src), C(dst), and C(sport)/C(dport) (or ICMP C(type), C(code), C(id)).
      type: dict
      sample: {"src": "203.0.113.5", "dst": "203.0.113.10", "sport": 41742, "dport": 443}
    reply:
      description: Tuple of the reply direction.
      type: dict
      sample: {"src": "10.0.1.10", "dst": "203.0.113.5", "sport": 8443, "dport": 41742}
    state:
      description: TCP state name, V(null) for other protocols.
      type: str
      sample: ESTABLISHED
    timeout:
      description: Seconds until the entry expires.
      type: int
      sample: 431999
    mark:
      description: Connection mark.
      type: int
    zone:
      description: Conntrack zone (0 is the default zone).
      type: int
    status:
      description: Raw status bit field.
      type: int
      sample: 430
    flags:
      description: Names of the status bits set, plus V(unreplied) when no reply was seen.
      type: list
      elements: str
      sample: [seen_reply, assured, confirmed, dnat, snat_done, dnat_done]
    id:
      description: Kernel entry id.
      type: int
    use:
      description: Reference count.
      type: int
    nat:
      description:
        - What NAT rewrote, derived from the two tuples. C(dnat) and C(snat) are V(null) when that side was
          not translated, else C(from), C(to) (address:port) and the translated C(address) and C(port).
        - C(summary) is a one-line text such as V(dst 203.0.113.10:443 -> 10.0.1.10:8443).
      type: dict
      sample:
        dnat: {"from": "203.0.113.10:443", "to": "10.0.1.10:8443", "address": "10.0.1.10", "port": 8443}
        snat: null
        summary: "dst 203.0.113.10:443 -> 10.0.1.10:8443"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import NodeguardError, fail_json
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.dump import query
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.entries import FAMILY_NAMES, validate_query
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.options import build_filter, filter_argument_spec

MAX_LIMIT = 10000


def main():
    module = AnsibleModule(
        argument_spec=filter_argument_spec(
            group_by=dict(type="list", elements="str"),
            top=dict(type="int", default=10),
            limit=dict(type="int", default=100),
        ),
        supports_check_mode=True,
    )
    try:
        entry_filter = build_filter(module.params)
        group_by, top, limit = validate_query(module.params["group_by"], module.params["top"],
                                              module.params["limit"], MAX_LIMIT)
        scan, info = query(entry_filter, group_by=group_by, limit=limit,
                           use_kernel_filter=module.params["kernel_filter"])
    except NodeguardError as exc:
        fail_json(module, exc, action="read conntrack entries")

    result = dict(
        changed=False,
        total_matched=scan.matched,
        scanned=scan.scanned,
        truncated=scan.matched > len(scan.entries),
        kernel_filter=info["kernel_filter"],
        families=[FAMILY_NAMES[family] for family in info["families"]],
        filter=entry_filter.describe(),
        groups=scan.group_list(top) if group_by else [],
        groups_total=len(scan.groups),
        entries=scan.entries,
    )
    if scan.dump_interrupted:
        module.warn("the conntrack table changed during the dump; counts may be off by the entries that changed")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
