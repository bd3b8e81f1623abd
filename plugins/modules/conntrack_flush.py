#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: conntrack_flush
short_description: Delete conntrack entries that match a filter, such as stale NAT mappings after endpoint churn
version_added: 0.1.0
description:
  - Deletes the connection tracking entries of the network namespace the module runs in that match the same
    filters as M(nodeguard.conntrack.conntrack_info), over ctnetlink with the Python standard library only.
  - The typical job is the stale-mapping problem. After a backend is replaced (DNAT rule changed), UDP flows keep
    their old mapping as long as packets keep arriving. Deleting the entries whose O(reply_src) is the retired
    backend makes the next packet go through NAT again.
  - Refuses to run without any filter unless O(all=true).
  - Each entry is deleted by its original tuple, zone and kernel id, so an entry that is re-created with the
    same tuple in the meantime is not removed. An entry that expired before its turn is counted in
    RV(vanished), not as an error.
  - Needs CAP_NET_ADMIN in the network namespace (root); fails with a clear message otherwise.
author:
  - nodeguard.conntrack contributors (@nodeguard)
extends_documentation_fragment:
  - nodeguard.conntrack.attributes
  - nodeguard.conntrack.entry_filters
attributes:
  check_mode:
    support: full
    details: Counts the matching entries and returns a sample of them; deletes nothing.
  diff_mode:
    support: partial
    details: Returns the number of matching entries before and after as a short text, not the entries themselves.
  platform:
    platforms: posix
    details: Linux with conntrack (nf_conntrack and nf_conntrack_netlink, built in or loadable).
options:
  all:
    description:
      - Allow deleting every entry of the selected O(family) when no other filter is given.
      - Without it, a run with no filter fails before anything is read or deleted.
    type: bool
    default: false
  sample:
    description:
      - How many of the matching entries to return in RV(sample) (the first ones in dump order). At most 1000.
    type: int
    default: 10
notes:
  - Entries are deleted from the network namespace the module runs in.
  - A flow that is still active gets a new entry with its next packet; that is the point when a NAT target changed.
seealso:
  - module: nodeguard.conntrack.conntrack_info
"""

EXAMPLES = r"""
- name: Drop the stale UDP mappings to a retired backend after the DNAT rule moved
  nodeguard.conntrack.conntrack_flush:
    proto: udp
    reply_src: 10.0.1.10
  register: flushed

- name: Preview what would go (deletes nothing)
  nodeguard.conntrack.conntrack_flush:
    reply_src: 10.0.1.0/24
    reply_sport: 8443
  check_mode: true
  register: preview

- name: Flush the entries of one conntrack zone
  nodeguard.conntrack.conntrack_flush:
    zone: 7

- name: Flush the whole IPv6 table (explicitly)
  nodeguard.conntrack.conntrack_flush:
    family: ipv6
    all: true
"""

RETURN = r"""
matched:
  description: Number of entries that matched the filter when the table was read.
  returned: success
  type: int
  sample: 12
deleted:
  description: Number of entries deleted; 0 in check mode.
  returned: success
  type: int
  sample: 11
vanished:
  description: Matching entries that were already gone when their delete arrived (expired or removed meanwhile).
  returned: success
  type: int
  sample: 1
filter:
  description: The normalised filter that was applied.
  returned: success
  type: dict
  sample: {"family": ["ipv4", "ipv6"], "proto": "udp", "reply_src": ["10.0.1.10/32"]}
sample:
  description:
    - The first O(sample) matching entries, in the format of RV(nodeguard.conntrack.conntrack_info#module:entries).
  returned: success
  type: list
  elements: dict
  sample:
    - family: ipv4
      proto: udp
      original: {"src": "203.0.113.5", "dst": "203.0.113.10", "sport": 40000, "dport": 53}
      reply: {"src": "10.0.1.10", "dst": "203.0.113.5", "sport": 5353, "dport": 40000}
      nat: {"summary": "dst 203.0.113.10:53 -> 10.0.1.10:5353"}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import InputError, NodeguardError, fail_json
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.dump import delete_entries, query
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.options import build_filter, filter_argument_spec

MAX_SAMPLE = 1000


def main():
    module = AnsibleModule(
        argument_spec=filter_argument_spec(
            all=dict(type="bool", default=False),
            sample=dict(type="int", default=10),
        ),
        supports_check_mode=True,
    )
    sample = module.params["sample"]
    try:
        entry_filter = build_filter(module.params)
        if not 0 <= sample <= MAX_SAMPLE:
            raise InputError("sample", "%d is outside 0-%d" % (sample, MAX_SAMPLE))
        if entry_filter.is_empty() and not module.params["all"]:
            raise InputError("all", "refusing to flush without a filter: give at least one of proto, orig_*/reply_* "
                                    "addresses or ports, state, status, mark or zone, or set all=true")
        scan, _info = query(entry_filter, limit=sample, collect_delete_keys=not module.check_mode,
                            use_kernel_filter=module.params["kernel_filter"])
        deleted = vanished = 0
        if not module.check_mode and scan.delete_keys:
            deleted, vanished = delete_entries(scan.delete_keys)
    except NodeguardError as exc:
        fail_json(module, exc, action="flush conntrack entries")

    matched = scan.matched
    result = dict(
        changed=(matched > 0) if module.check_mode else (deleted > 0),
        matched=matched,
        deleted=deleted,
        vanished=vanished,
        filter=entry_filter.describe(),
        sample=scan.entries,
    )
    if module._diff:
        # after a real run the matched entries are deleted or gone; check mode predicts the same
        result["diff"] = dict(before="%d matching conntrack entries\n" % matched,
                              after="0 matching conntrack entries\n")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
