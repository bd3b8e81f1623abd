# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: conntrack_audit_state
short_description: Read or write the fleet audit's previous counters on the controller, for every host at once
version_added: 0.2.0
description:
  - The state the C(nodeguard.conntrack.conntrack_audit) role keeps between runs, so the next audit can tell which
    counters rose. It is one JSON file per host, C(<path>/<host>.json), directory mode C(0700), files mode C(0600),
    each written atomically.
  - An action plugin that works on the controller's file system only and runs no module. One task reads the previous
    record of every host (O(read)) or writes the new record of every host (O(write)), instead of a file transfer per
    host.
  - A record that cannot be read or is not JSON is reported in RV(unreadable) with a warning, and that host audits as
    a first run.
author:
  - nodeguard.conntrack contributors (@nodeguard)
options:
  path:
    description: The state directory on the controller.
    type: path
    required: true
  read:
    description: Hosts whose previous record to read. Mutually exclusive with O(write).
    type: list
    elements: str
  write:
    description:
      - Host results of P(nodeguard.conntrack.conntrack_audit_evaluate#filter) whose counters to keep. Mutually
        exclusive with O(read).
      - Only files whose content changes are written; in check mode nothing is written and RV(written) lists what
        would be.
    type: list
    elements: raw
extends_documentation_fragment:
  - nodeguard.conntrack.attributes
attributes:
  action:
    description: Runs on the controller as an action plugin.
    support: full
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
    details: The controller.
notes:
  - Use it with C(run_once) (and C(delegate_to) V(localhost)); it never touches the managed nodes.
seealso:
  - name: The audit report and its state
    description: docs/audit-report.md in the collection.
    link: https://github.com/nodeguard/conntrack/blob/main/docs/audit-report.md
"""

EXAMPLES = r"""
- name: Read every host's previous counters
  nodeguard.conntrack.conntrack_audit_state:
    path: /var/lib/audit-state
    read: "{{ ansible_play_batch }}"
  register: previous
  run_once: true
  delegate_to: localhost

- name: Keep this run's counters of every host
  nodeguard.conntrack.conntrack_audit_state:
    path: /var/lib/audit-state
    write: "{{ ansible_play_batch | map('extract', hostvars, 'conntrack_audit_result') | list }}"
  run_once: true
  delegate_to: localhost
"""

RETURN = r"""
previous:
  description: With O(read), the previous record of each host that has a readable one.
  returned: success and O(read)
  type: dict
  sample: {"web1": {"schema_version": "1.0", "host": "web1", "epoch": 1764750000.0, "collected_at": "2025-12-03T08:20:00Z",
                    "netns_inode": 4026531840, "counters": {"drop": 0, "insert_failed": 2}}}
unreadable:
  description: With O(read), hosts whose record exists but cannot be used, with the reason.
  returned: success and O(read)
  type: dict
  sample: {}
written:
  description: With O(write), the files whose content changed (in check mode, that would change).
  returned: success and O(write)
  type: list
  elements: str
  sample: [/var/lib/audit-state/web1.json]
"""
