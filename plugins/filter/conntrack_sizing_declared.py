# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
name: conntrack_sizing_declared
short_description: Whether sizing inputs declare enough to size conntrack from
version_added: 0.2.0
author: nodeguard.conntrack developers (@nodeguard)
description:
  - Returns V(true) when the sizing inputs give P(nodeguard.conntrack.conntrack_sizing#filter) something to size
    C(max) from, namely a demand (V(peak_flows) or V(new_flows_per_second)), a V(preset), V(per_cpu_floor),
    V(min_max) or a pinned V(knobs.max); missing values, V(null), empty strings and the preset name V(none) count
    as not given.
  - The one rule the collection uses for "this host declares sizing", in the C(nodeguard.conntrack.harden)
    playbook (tune only such hosts) and the P(nodeguard.conntrack.conntrack_audit#role) role (check the live
    max against the declared sizing only for such hosts). The sizing filter refuses exactly the inputs for which
    this returns V(false).
  - Never fails; input that is not a mapping is not a declaration.
options:
  _input:
    description: Sizing inputs, the same keys as P(nodeguard.conntrack.conntrack_sizing#filter) takes.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Tune only hosts whose inventory declares sizing
  ansible.builtin.include_role:
    name: nodeguard.conntrack.conntrack_tuning
  when: >-
    {{ {'peak_flows': conntrack_tuning_peak_flows | default(none),
        'preset': conntrack_tuning_preset | default(none)} | nodeguard.conntrack.conntrack_sizing_declared }}
"""

RETURN = r"""
_value:
  description: V(true) when the inputs declare sizing.
  type: bool
"""

from ansible_collections.nodeguard.conntrack.plugins.plugin_utils._sizing import sizing_declared


def conntrack_sizing_declared(spec):
    """Filter entry point: see DOCUMENTATION."""
    return sizing_declared(spec)


class FilterModule(object):
    def filters(self):
        return {"conntrack_sizing_declared": conntrack_sizing_declared}
