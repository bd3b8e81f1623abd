# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
name: iptables_baseline_render
short_description: Preview the iptables-restore text of a firewall baseline model
version_added: 0.1.0
author: nodeguard.conntrack developers
description:
  - Validates a baseline model (the options C(prefix), C(input), C(forward), C(notrack), C(policies) and C(families) of
    P(nodeguard.conntrack.iptables_baseline#module)) and renders the rules file the module would write for one family.
  - Pure; runs on the controller and needs no host. Bad input raises an error naming the field.
options:
  _input:
    description: The baseline model.
    type: dict
    required: true
  family:
    description: Address family to render.
    type: str
    choices: [ipv4, ipv6]
    default: ipv4
"""

EXAMPLES = r"""
- name: Show what the baseline would load
  ansible.builtin.debug:
    msg: "{{ {'input': {'services': [{'name': 'ssh', 'ports': [22]}]}} | nodeguard.conntrack.iptables_baseline_render('ipv6') }}"
"""

RETURN = r"""
_value:
  description: iptables-restore input containing only the owned chains and the jump rules into them.
  type: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import NodeguardError
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall.model import normalise_model
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall.render import desired_state, render_restore


def iptables_baseline_render(model, family="ipv4"):
    if not isinstance(model, dict):
        raise AnsibleFilterError("iptables_baseline_render: the input must be a dict (the baseline model)")
    if family not in ("ipv4", "ipv6"):
        raise AnsibleFilterError("iptables_baseline_render: family must be ipv4 or ipv6, got %r" % (family,))
    try:
        normalised = normalise_model(model)
    except NodeguardError as exc:
        raise AnsibleFilterError("iptables_baseline_render: %s" % exc)
    return render_restore(desired_state(normalised, family))


class FilterModule(object):
    """Firewall baseline filters."""

    def filters(self):
        return {"iptables_baseline_render": iptables_baseline_render}
