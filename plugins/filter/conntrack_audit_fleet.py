# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
name: conntrack_audit_fleet
short_description: Assemble host audit results into the versioned fleet report
version_added: 0.1.0
author: nodeguard.conntrack developers
description:
  - Builds the fleet report (C(schema_version) V(1.0)) from the results of
    P(nodeguard.conntrack.conntrack_audit_evaluate#filter) with the hosts sorted worst first, a summary naming the
    hosts that are close to full, dropping, carrying rule-set mistakes or sized below their declared peak, and the
    gate verdict.
  - Hosts listed in O(missing) that have no result are reported as missing and make the fleet V(critical).
  - Render it with P(nodeguard.conntrack.conntrack_report_render#filter). The JSON Schema is
    C(docs/audit-report.schema.json).
options:
  _input:
    description: The host results.
    type: list
    elements: dict
    required: true
  missing:
    description: Hosts of the play that have no result (unreachable or failed before the audit).
    type: list
    elements: str
  fail_on:
    description: Severity at which the report says the gate failed (V(none), V(warning), V(critical)).
    type: str
    default: none
  warning_pct:
    description: The warning threshold used (recorded in the report).
    type: float
    default: 75
  critical_pct:
    description: The critical threshold used (recorded in the report).
    type: float
    default: 90
  counter_rise:
    description: The counter rise severities used (recorded in the report).
    type: dict
  firewall_severity:
    description: The rule-set severity mapping used (recorded in the report).
    type: dict
  now:
    description: Seconds since the epoch for C(generated_at); the controller's clock when omitted.
    type: float
"""

EXAMPLES = r"""
- name: Build the fleet report once
  ansible.builtin.set_fact:
    fleet_report: >-
      {{ ansible_play_hosts | map('extract', hostvars, 'audit_result') | list
         | nodeguard.conntrack.conntrack_audit_fleet(fail_on='critical') }}
  run_once: true
"""

RETURN = r"""
_value:
  description: The fleet report (C(schema_version), C(generator), C(generated_at), C(thresholds), C(fail_on),
    C(gate_failed), C(summary), C(missing_hosts), C(hosts)).
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import NodeguardError
from ansible_collections.nodeguard.conntrack.plugins.plugin_utils._audit_eval import fleet


def conntrack_audit_fleet(results, missing=None, fail_on="none", warning_pct=75, critical_pct=90, counter_rise=None,
                          firewall_severity=None, now=None):
    """Filter entry point: see DOCUMENTATION."""
    options = {"warning_pct": warning_pct, "critical_pct": critical_pct, "counter_rise": counter_rise,
               "firewall_severity": firewall_severity}
    try:
        return fleet(list(results) if isinstance(results, (list, tuple)) else results, options,
                     missing=missing, now=now, fail_on=fail_on)
    except NodeguardError as exc:
        raise AnsibleFilterError("conntrack_audit_fleet: %s" % exc)


class FilterModule(object):
    def filters(self):
        return {"conntrack_audit_fleet": conntrack_audit_fleet}
