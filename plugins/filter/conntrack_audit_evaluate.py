# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
name: conntrack_audit_evaluate
short_description: Evaluate one host's conntrack data against audit thresholds
version_added: 0.1.0
author: nodeguard.conntrack developers
description:
  - Turns what the P(nodeguard.conntrack.conntrack_audit#role) role collected on one host (conntrack facts, the
    rule-set findings of M(nodeguard.conntrack.iptables_audit), entry counts by state and NAT) into a host result
    with a status (V(ok), V(warning), V(critical)) and findings with stable ids, details and fixes.
  - Checks table usage against the thresholds, counter rises since the previous audit, the live
    C(nf_conntrack_max) against the declared peak x headroom (with the same sizing rules as
    P(nodeguard.conntrack.conntrack_tuning#role)), hash chain length and kernel table-full messages.
  - Pure; see C(docs/audit-report.md) for the fields and the finding ids.
options:
  _input:
    description:
      - What was collected on the host, a dict with V(host), V(facts) (C(ansible_facts.conntrack)), V(firewall)
        (the M(nodeguard.conntrack.iptables_audit) result or V(null)), V(states) (the C(groups) of
        M(nodeguard.conntrack.conntrack_info) grouped by V(proto) and V(state), or V(null)) and V(nat)
        (V(dnat) and V(snat) entry counts, or V(null)).
    type: dict
    required: true
  previous:
    description: The state record the previous audit stored for this host (see C(docs/audit-report.md)), or V(null).
    type: dict
  warning_pct:
    description: Usage (percent of max) at which a host is at least V(warning).
    type: float
    default: 75
  critical_pct:
    description: Usage (percent of max) at which a host is V(critical).
    type: float
    default: 90
  counter_rise:
    description:
      - Highest severity of a rise since the previous audit, per counter name; V(ok) ignores it.
      - Within that cap a rise is graded on its rate per second since the previous audit (O(counter_rate)).
      - A first audit reports the watched counters' since-boot totals as information (NGCA008).
    type: dict
    default: {drop: critical, insert_failed: warning, early_drop: warning, chaintoolong: warning, invalid: warning}
  counter_rate:
    description:
      - Per counter name, C([warning, critical]) rates in events per second since the previous audit at or above
        which a rise is a warning or critical (a warning rate of 0 means any rise).
      - Defaults C(drop) and C(insert_failed) C([0, 0.01]) (one a day is a warning, one a minute critical),
        C(early_drop) C([0, 0.1]), C(chaintoolong) C([0, 0.01]), C(invalid) C([1, 100]).
    type: dict
    version_added: 0.2.0
  firewall_severity:
    description: Audit severity of a rule-set finding, per M(nodeguard.conntrack.iptables_audit) severity.
    type: dict
    default: {high: critical, medium: warning, low: warning, info: ok}
  max_chain_ratio:
    description:
      - Highest acceptable max / buckets on any kernel (CPU cost of long chains).
      - Independently of it, NGCA004 fires when the live max and buckets would make inserts fail at a full table
        on the host's kernel (every entry is in two chains; chain limit 8-31 on 5.15-6.2, 50-79 since 6.3).
    type: float
    default: 8
  sizing:
    description:
      - Declared sizing inputs (V(peak_flows), V(new_flows_per_second), V(avg_flow_lifetime), V(headroom),
        V(memory_mb), V(cpus), V(memory_budget_pct), V(entry_bytes), V(buckets_ratio), V(kernel_release)); without
        V(peak_flows) or V(new_flows_per_second) no sizing check is made.
      - The kernel release defaults to the host's (from the facts), so the recommendation is never below that
        kernel's own default.
    type: dict
  now:
    description: Seconds since the epoch to stamp the result with; the controller's clock when omitted.
    type: float
"""

EXAMPLES = r"""
- name: Evaluate this host
  ansible.builtin.set_fact:
    audit_result: >-
      {{ {'host': inventory_hostname, 'facts': ansible_facts.conntrack, 'firewall': rules, 'states': none, 'nat': none}
         | nodeguard.conntrack.conntrack_audit_evaluate(warning_pct=70, critical_pct=85) }}
"""

RETURN = r"""
_value:
  description: The host result (C(host), C(status), C(usage), C(counters), C(deltas), C(rising), C(sizing), C(states),
    C(nat), C(firewall), C(findings)); the JSON Schema in C(docs/audit-report.schema.json) describes it.
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import NodeguardError
from ansible_collections.nodeguard.conntrack.plugins.plugin_utils._audit_eval import evaluate


def conntrack_audit_evaluate(collected, previous=None, warning_pct=75, critical_pct=90, counter_rise=None,
                             firewall_severity=None, max_chain_ratio=8, sizing=None, now=None, counter_rate=None):
    """Filter entry point: see DOCUMENTATION."""
    options = {"warning_pct": warning_pct, "critical_pct": critical_pct, "counter_rise": counter_rise,
               "counter_rate": counter_rate,
               "firewall_severity": firewall_severity, "max_chain_ratio": max_chain_ratio, "sizing": sizing}
    try:
        return evaluate(collected, options, previous=previous or None, now=now)
    except NodeguardError as exc:
        raise AnsibleFilterError("conntrack_audit_evaluate: %s" % exc)


class FilterModule(object):
    def filters(self):
        return {"conntrack_audit_evaluate": conntrack_audit_evaluate}
