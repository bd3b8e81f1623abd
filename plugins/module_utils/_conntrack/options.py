# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The entry filter options shared by conntrack_info and conntrack_flush (private to the collection).

One argument spec, one validation step (``build_filter``): both modules select entries the same way.
"""

from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.entries import EntryFilter

FILTER_ARGUMENT_SPEC = dict(
    family=dict(type="str", default="both", choices=["ipv4", "ipv6", "both"]),
    proto=dict(type="str"),
    orig_src=dict(type="list", elements="str"),
    orig_dst=dict(type="list", elements="str"),
    reply_src=dict(type="list", elements="str"),
    reply_dst=dict(type="list", elements="str"),
    orig_sport=dict(type="int"),
    orig_dport=dict(type="int"),
    reply_sport=dict(type="int"),
    reply_dport=dict(type="int"),
    state=dict(type="list", elements="str"),
    status=dict(type="list", elements="str"),
    mark=dict(type="int"),
    mark_mask=dict(type="int"),
    zone=dict(type="int"),
    kernel_filter=dict(type="bool", default=True),
)


def filter_argument_spec(**extra):
    """A fresh copy of the shared filter options plus the module's own."""
    spec = dict((name, dict(option)) for name, option in FILTER_ARGUMENT_SPEC.items())
    spec.update(extra)
    return spec


def build_filter(params):
    """The EntryFilter of the module parameters; raises CtFilterError naming the option."""
    return EntryFilter.from_params(dict((name, params.get(name)) for name in EntryFilter.FILTER_OPTIONS))
