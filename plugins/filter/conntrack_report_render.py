# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
name: conntrack_report_render
short_description: Render the conntrack fleet report as JSON, Markdown or a self-contained HTML page
version_added: 0.1.0
author: nodeguard.conntrack developers
description:
  - Renders the report built by P(nodeguard.conntrack.conntrack_audit_fleet#filter).
  - V(html) is one page with no external asset (inline CSS, an inline SVG bar per host of usage against the
    thresholds, counters, findings and their fixes) that opens from a file or a CI artifact.
  - V(text) is a fixed-width summary table for a terminal or a CI log.
  - Every value from hosts and the inventory is escaped for the output format.
options:
  _input:
    description: The fleet report.
    type: dict
    required: true
  format:
    description: Output format.
    type: str
    choices: [json, markdown, html, text]
    default: json
"""

EXAMPLES = r"""
- name: Write the HTML report
  ansible.builtin.copy:
    content: "{{ fleet_report | nodeguard.conntrack.conntrack_report_render(format='html') }}"
    dest: /srv/reports/conntrack.html
    mode: "0644"
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
_value:
  description: The rendered report.
  type: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import NodeguardError
from ansible_collections.nodeguard.conntrack.plugins.plugin_utils._report_render import RENDERERS


def conntrack_report_render(report, format="json"):  # pylint: disable=redefined-builtin
    """Filter entry point: see DOCUMENTATION."""
    if format not in RENDERERS:
        raise AnsibleFilterError("conntrack_report_render: format must be one of %s, got %r"
                                 % (", ".join(sorted(RENDERERS)), format))
    try:
        return RENDERERS[format](report)
    except NodeguardError as exc:
        raise AnsibleFilterError("conntrack_report_render: %s" % exc)


class FilterModule(object):
    def filters(self):
        return {"conntrack_report_render": conntrack_report_render}
