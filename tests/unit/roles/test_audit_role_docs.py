"""The conntrack_audit role's choices and defaults match the code (README/spec/defaults, task names:
tests/unit/test_role_interfaces.py)."""
import os

import yaml

from ansible_collections.nodeguard.conntrack.plugins.plugin_utils import _audit_eval as ev
from ansible_collections.nodeguard.conntrack.plugins.plugin_utils._report_render import RENDERERS

ROLE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "roles", "conntrack_audit")


def _load(*parts):
    with open(os.path.join(ROLE, *parts)) as handle:
        return handle.read()


def test_choices_and_defaults_match_the_code():
    spec = yaml.safe_load(_load("meta", "argument_specs.yml"))["argument_specs"]["main"]["options"]
    defaults = yaml.safe_load(_load("defaults", "main.yml"))
    assert defaults["conntrack_audit_counter_rise"] == ev.DEFAULT_COUNTER_RISE
    assert defaults["conntrack_audit_firewall_severity"] == ev.DEFAULT_FIREWALL_SEVERITY
    assert defaults["conntrack_audit_warning_pct"] == ev.DEFAULT_WARNING_PCT
    assert defaults["conntrack_audit_critical_pct"] == ev.DEFAULT_CRITICAL_PCT
    assert set(spec["conntrack_audit_report_formats"]["choices"]) == set(RENDERERS) - {"text"}
    assert spec["conntrack_audit_fail_on"]["choices"] == ["none"] + list(ev.LEVELS[1:])
