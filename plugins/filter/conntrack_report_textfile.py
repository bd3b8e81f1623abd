# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
name: conntrack_report_textfile
short_description: Render one host's audit result for the node_exporter textfile collector
version_added: 0.1.0
author: nodeguard.conntrack developers
description:
  - The metrics node_exporter's conntrack collector does not export, in the Prometheus text format
    (C(<prefix>_stat_clash_resolve_total), C(<prefix>_stat_chaintoolong_total), C(<prefix>_entries_by_state),
    C(<prefix>_nat_entries), C(<prefix>_audit_status), C(<prefix>_audit_findings), C(<prefix>_audit_finding),
    C(<prefix>_audit_usage_threshold_ratio), C(<prefix>_audit_counter_rising)).
  - No timestamp is written, so the file only changes when a value does; node_exporter exports the file's
    modification time as C(node_textfile_mtime_seconds).
options:
  _input:
    description: A host result of P(nodeguard.conntrack.conntrack_audit_evaluate#filter).
    type: dict
    required: true
  prefix:
    description: Metric name prefix.
    type: str
    default: nodeguard_conntrack
"""

EXAMPLES = r"""
- name: Write the textfile for node_exporter (copy writes it atomically)
  ansible.builtin.copy:
    content: "{{ audit_result | nodeguard.conntrack.conntrack_report_textfile }}"
    dest: /var/lib/prometheus/node-exporter/nodeguard_conntrack.prom
    mode: "0644"
"""

RETURN = r"""
_value:
  description: The textfile content.
  type: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import NodeguardError
from ansible_collections.nodeguard.conntrack.plugins.plugin_utils._report_render import render_textfile


def conntrack_report_textfile(result, prefix="nodeguard_conntrack"):
    """Filter entry point: see DOCUMENTATION."""
    try:
        return render_textfile(result, prefix=prefix)
    except NodeguardError as exc:
        raise AnsibleFilterError("conntrack_report_textfile: %s" % exc)


class FilterModule(object):
    def filters(self):
        return {"conntrack_report_textfile": conntrack_report_textfile}
