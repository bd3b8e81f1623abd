# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
name: conntrack_sizing
short_description: Turn inventory numbers and host facts into conntrack knob values
version_added: 0.1.0
author: nodeguard.conntrack developers (@nodeguard)
description:
  - Sizes the connection tracking table from peak concurrent flows and/or the new-flow rate times the average
    flow lifetime (Little's law), with headroom, an optional per-CPU floor, a minimum, a cap and a memory budget.
  - Picks timeouts from a profile with per-timeout overrides and checks them against the idle flows the
    inventory declares.
  - Pure and deterministic; the same code serves the P(nodeguard.conntrack.conntrack_tuning#role) role.
  - See C(docs/tuning.md) for the rules and worked examples.
options:
  _input:
    description:
      - Sizing inputs.
      - Keys are V(peak_flows) (the conntrack count at peak, TIME_WAIT entries included), V(new_flows_per_second),
        V(avg_flow_lifetime) (seconds, including TIME_WAIT), V(headroom) (default V(1.5)), V(preset) (V(kube_proxy) is
        kube-proxy's max(32768 x CPUs, 131072), no cap), V(per_cpu_floor), V(min_max), V(max_cap),
        V(memory_budget_pct) (share of RAM, default V(5)), V(entry_bytes) (default V(384)),
        V(buckets_ratio) (max/buckets, default V(1), the kernel's own; a ratio whose inserts would fail at a full table
        on the target kernel is refused), V(kernel_release) (for the kernel-default floor and the hash chain limit),
        V(timeout_profile) (V(kernel_default), V(kubernetes), V(high_churn), V(udp_heavy)), V(timeouts)
        (per-timeout overrides), V(knobs) (other knobs, or a pinned max/buckets), V(longest_idle_tcp_flow),
        V(longest_idle_udp_flow) (seconds), V(memory_mb), V(cpus).
      - Numbers may be given as numeric strings (as C(-e) extra vars and some inventories give them), also the
        values of V(timeouts) and V(knobs); anything else that is not a number fails naming the field.
      - The result is never below the kernel's own default for the host's memory and kernel version unless
        V(knobs.max)/V(knobs.buckets) pin it.
    type: dict
    required: true
  memory_mb:
    description: Host memory in MB (for example C(ansible_facts.memtotal_mb)). Overrides the C(memory_mb) key of the input.
    type: int
  cpus:
    description: Host CPU count (for example C(ansible_facts.processor_vcpus)). Overrides the C(cpus) key of the input.
    type: int
"""

EXAMPLES = r"""
- name: Size from the peak and the connection rate
  ansible.builtin.set_fact:
    sizing: >-
      {{ {'peak_flows': 200000, 'new_flows_per_second': 2000, 'avg_flow_lifetime': 150,
          'timeout_profile': 'kubernetes'}
         | nodeguard.conntrack.conntrack_sizing(memory_mb=ansible_facts.memtotal_mb,
                                                cpus=ansible_facts.processor_vcpus) }}
"""

RETURN = r"""
_value:
  description: Sizing result.
  type: dict
  contains:
    settings:
      description: Short knob name to integer value, ready for P(nodeguard.conntrack.conntrack_tune#module).
      type: dict
    memory:
      description: Estimated kernel memory of a full table (C(bytes), C(pct_of_ram), C(entry_bytes), C(budget_bytes)).
      type: dict
    demand:
      description: Conntrack entries at peak before headroom.
      type: int
    kernel_default:
      description: The kernel's own C(max) and C(buckets) for this memory and kernel version (the floor).
      type: dict
      version_added: 0.2.0
    chains:
      description: Hash chains at a full table (C(nodes_per_bucket), C(limits), C(insert_failure), C(acceptable)).
      type: dict
      version_added: 0.2.0
    rationale:
      description: One line per rule that shaped the result, for an operator to read.
      type: list
      elements: str
    warnings:
      description: Findings worth acting on (budget below demand, inconsistent timeouts, ...).
      type: list
      elements: str
"""

import re

from ansible.errors import AnsibleFilterError

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import NodeguardError
from ansible_collections.nodeguard.conntrack.plugins.plugin_utils._sizing import size


# Inventory values, -e extra vars and some templates give numbers as strings ("200000"): a numeric string counts
# as the number. Anything else is passed on unchanged, so the sizing code rejects it naming the field.
_INT_FIELDS = frozenset((
    "peak_flows", "per_cpu_floor", "min_max", "max_cap", "memory_mb", "cpus", "entry_bytes", "buckets_ratio",
    "longest_idle_tcp_flow", "longest_idle_udp_flow",
))
_NUMBER_FIELDS = frozenset(("new_flows_per_second", "avg_flow_lifetime", "headroom", "memory_budget_pct"))
_KNOB_MAP_FIELDS = frozenset(("timeouts", "knobs"))
_INT_TEXT = re.compile(r"^\s*[+-]?[0-9]+\s*$")
_NUMBER_TEXT = re.compile(r"^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$")


def _from_text(field, value, integer):
    if not isinstance(value, str):
        return value
    if _INT_TEXT.match(value):
        return int(value)
    if _NUMBER_TEXT.match(value):
        number = float(value)
        if integer and not number.is_integer():
            raise AnsibleFilterError("conntrack_sizing: %s: must be an integer, got %r" % (field, value))
        return int(number) if integer else number
    raise AnsibleFilterError("conntrack_sizing: %s: must be %s, got %r"
                             % (field, "an integer" if integer else "a number", value))


def _coerce(spec):
    out = {}
    for field, value in spec.items():
        if field in _INT_FIELDS:
            value = _from_text(field, value, True)
        elif field in _NUMBER_FIELDS:
            value = _from_text(field, value, False)
        elif field in _KNOB_MAP_FIELDS and isinstance(value, dict):
            value = dict((name, _from_text("%s.%s" % (field, name), v, True)) for name, v in value.items())
        out[field] = value
    return out


def conntrack_sizing(spec, memory_mb=None, cpus=None):
    """Filter entry point: see DOCUMENTATION."""
    if not isinstance(spec, dict):
        raise AnsibleFilterError("conntrack_sizing: input must be a mapping of sizing inputs, got %s"
                                 % type(spec).__name__)
    merged = dict(spec)
    if memory_mb is not None:
        merged["memory_mb"] = memory_mb
    if cpus is not None:
        merged["cpus"] = cpus
    merged = _coerce(merged)
    try:
        return size(merged)
    except NodeguardError as exc:
        raise AnsibleFilterError("conntrack_sizing: %s" % exc)


class FilterModule(object):
    def filters(self):
        return {"conntrack_sizing": conntrack_sizing}
